// GeminiBackend against the mock upstream speaking Gemini's generateContent wire format.
#include "backends/remote/gemini_backend.h"

#include <stdlib.h>

#include <chrono>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/backends/remote/backend_fixture.h"
#include "tests/mocks/mock_upstream.h"

namespace switchyard::backends {
namespace {

using ::switchyard::mocks::Behaviour;
using ::switchyard::mocks::MockUpstream;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr char kApiKey[] = "AIza-test-SECRET-0123456789";

class GeminiBackendTest : public RemoteBackendTest<GeminiBackend, GeminiOptions> {
 protected:
  GeminiOptions Options() const {
    return MockOptions(mock_->gemini_base_url(), "gemini-mock-flash", kApiKey);
  }
};

TEST_F(GeminiBackendTest, SendsTheExactStreamingBodyAndHeaders) {
  ChatRequest request = SimpleRequest();
  request.messages = {{"system", "Be brief."}, {"user", "Hi"},   {"user", "there"},
                      {"assistant", "Hello."}, {"tool", "42"}, {"user", "\xc3\xa9"}};
  request.max_tokens = 64;
  request.temperature = 0.7f;
  request.top_p = 0.9f;
  request.stop = {"END"};
  request.seed = 42;
  request.top_k = 5;
  request.frequency_penalty = 0.5f;
  request.presence_penalty = -0.25f;
  auto sink = Run(Options(), request);
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  ASSERT_EQ(mock_->request_count(), 1u);
  const auto recorded = mock_->requests()[0];
  EXPECT_EQ(recorded.method, "POST");
  EXPECT_EQ(recorded.target, "/v1beta/models/gemini-mock-flash:streamGenerateContent?alt=sse");
  EXPECT_EQ(recorded.Header("x-goog-api-key"), kApiKey);
  EXPECT_EQ(recorded.Header("authorization"), "");
  EXPECT_EQ(recorded.Header("content-type"), "application/json");
  EXPECT_EQ(Json::parse(recorded.body), Json::parse(R"({
    "contents": [
      {"role": "user", "parts": [{"text": "Hi"}, {"text": "there"}]},
      {"role": "model", "parts": [{"text": "Hello."}]},
      {"role": "user", "parts": [{"text": "42"}, {"text": "\u00e9"}]}],
    "systemInstruction": {"parts": [{"text": "Be brief."}]},
    "generationConfig": {"maxOutputTokens": 64, "temperature": 0.7, "topP": 0.9,
                         "stopSequences": ["END"], "seed": 42, "topK": 5,
                         "frequencyPenalty": 0.5, "presencePenalty": -0.25}
  })")) << recorded.body;
}

TEST_F(GeminiBackendTest, NonStreamingUsesGenerateContent) {
  Behaviour behaviour;
  behaviour.tokens = {"The", " answer", "."};
  behaviour.prompt_tokens = 11;
  behaviour.completion_tokens = 3;
  behaviour.finish_reason = "length";
  mock_->SetBehaviour(behaviour);
  GeminiOptions options = Options();
  options.stream = StreamUpstream::kNever;
  options.model = "models/gemini-mock-pro";
  auto sink = Run(options);
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  const auto recorded = mock_->requests().at(0);
  EXPECT_EQ(recorded.target, "/v1beta/models/gemini-mock-pro:generateContent");
  EXPECT_EQ(Json::parse(recorded.body),
            Json::parse(R"({"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]})"));
  EXPECT_THAT(sink->deltas(), ElementsAre("The answer."));
  EXPECT_EQ(sink->completion().usage.prompt_tokens, 11);
  EXPECT_EQ(sink->completion().usage.completion_tokens, 3);
  EXPECT_EQ(sink->completion().finish_reason, FinishReason::kLength);
}

TEST_F(GeminiBackendTest, StreamingForwardsEachChunkAndFinalUsage) {
  Behaviour behaviour;
  behaviour.tokens = {"Once", " upon", " a", " time", " \xf0\x9f\x90\x89"};
  behaviour.prompt_tokens = 9;
  behaviour.completion_tokens = 6;
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_THAT(sink->deltas(), ElementsAre("Once", " upon", " a", " time", " \xf0\x9f\x90\x89"));
  EXPECT_EQ(sink->completion().usage.prompt_tokens, 9);
  EXPECT_EQ(sink->completion().usage.completion_tokens, 6);
  EXPECT_EQ(sink->completion().finish_reason, FinishReason::kStop);
}

// A count below zero or past 10^9 is not believed (priced, a negative one would hand a tenant's
// budget back) and is counted, streamed or not.
TEST_F(GeminiBackendTest, ImplausibleTokenCountsAreIgnoredAndCounted) {
  Behaviour behaviour;
  behaviour.prompt_tokens = -1'000'000'000;
  behaviour.completion_tokens = 5'000'000'000;
  mock_->SetBehaviour(behaviour);
  for (StreamUpstream mode : {StreamUpstream::kAlways, StreamUpstream::kNever}) {
    GeminiOptions options = Options();
    options.stream = mode;
    std::unique_ptr<GeminiBackend> backend = MakeBackend(options);
    auto sink = Run(*backend);
    ASSERT_TRUE(sink->status().ok()) << sink->status();
    EXPECT_EQ(sink->text(), "Hello, world!");
    EXPECT_EQ(sink->completion().usage.prompt_tokens, 0);
    EXPECT_FALSE(sink->completion().usage.prompt_reported);
    EXPECT_EQ(sink->completion().usage.completion_tokens, 0);
    EXPECT_FALSE(sink->completion().usage.completion_reported);
    EXPECT_EQ(backend->stats().implausible_usage(), 1u);
  }
}

// An upstream that sends no usage is told apart from one that reports zero, so the gateway can
// meter its own estimate.
TEST_F(GeminiBackendTest, UsageNotSentIsNotReported) {
  for (bool sent : {false, true}) {
    Behaviour behaviour;
    behaviour.send_usage = sent;
    behaviour.prompt_tokens = 0;
    behaviour.completion_tokens = 0;
    mock_->SetBehaviour(behaviour);
    for (StreamUpstream mode : {StreamUpstream::kAlways, StreamUpstream::kNever}) {
      GeminiOptions options = Options();
      options.stream = mode;
      auto sink = Run(options);
      ASSERT_TRUE(sink->status().ok()) << sink->status();
      EXPECT_EQ(sink->text(), "Hello, world!");
      EXPECT_EQ(sink->completion().usage.prompt_tokens, 0);
      EXPECT_EQ(sink->completion().usage.completion_tokens, 0);
      EXPECT_EQ(sink->completion().usage.prompt_reported, sent);
      EXPECT_EQ(sink->completion().usage.completion_reported, sent);
    }
  }
}

// An answer cut by a safety or recitation filter is told apart from a complete one.
TEST_F(GeminiBackendTest, SafetyAndRecitationAreContentFilterFinishes) {
  for (const char* reason : {"SAFETY", "RECITATION", "PROHIBITED_CONTENT"}) {
    Behaviour behaviour;
    behaviour.finish_reason = reason;
    mock_->SetBehaviour(behaviour);
    for (StreamUpstream mode : {StreamUpstream::kAlways, StreamUpstream::kNever}) {
      GeminiOptions options = Options();
      options.stream = mode;
      auto sink = Run(options);
      ASSERT_TRUE(sink->status().ok()) << sink->status();
      EXPECT_EQ(sink->completion().finish_reason, FinishReason::kContentFilter) << reason;
    }
  }
}

TEST_F(GeminiBackendTest, ChunksWithoutTextAreSkipped) {
  Behaviour behaviour;
  behaviour.unknown_event = true;
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_THAT(sink->deltas(), ElementsAre("Hello", ",", " world", "!"));
}

TEST_F(GeminiBackendTest, ErrorJsonBecomesAPreciseError) {
  Behaviour behaviour;
  behaviour.kind = Behaviour::Kind::kHttpError;
  behaviour.http_status = 400;
  behaviour.error_message = "API key not valid. Please pass a valid API key.";
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(sink->status().message(),
              HasSubstr("upstream returned HTTP 400: API key not valid. Please pass a valid"));
}

TEST_F(GeminiBackendTest, ErrorChunkMidStreamIsAnError) {
  Behaviour behaviour;
  behaviour.kind = Behaviour::Kind::kStreamError;
  behaviour.reset_after_tokens = 1;
  behaviour.error_message = "The model is overloaded.";
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(sink->status().message(), HasSubstr("upstream stream error: The model is overloaded."));
  EXPECT_EQ(sink->text(), "Hello");
  // The counts of the chunk before the error come with the failure, for the gateway to charge.
  EXPECT_EQ(sink->completion().usage.prompt_tokens, 7);
  EXPECT_EQ(sink->completion().usage.completion_tokens, 1);
  EXPECT_TRUE(sink->completion().usage.completion_reported);
}

TEST_F(GeminiBackendTest, ResetMidStreamIsAnErrorNotANormalEnd) {
  Behaviour behaviour;
  behaviour.kind = Behaviour::Kind::kResetMidStream;
  behaviour.reset_after_tokens = 2;
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kUnavailable) << sink->status();
  EXPECT_EQ(sink->text(), "Hello,");
}

// Cut off mid-string (the mock's default), and valid syntax with a number past double's range.
TEST_F(GeminiBackendTest, MalformedChunkIsAnError) {
  for (const std::string data :
       {"", R"({"candidates":[],"usageMetadata":{"promptTokenCount":1e400}})"}) {
    SCOPED_TRACE(data);
    auto sink = RunMalformed(Options(), data);
    EXPECT_EQ(sink->status().code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(sink->status().message(), HasSubstr("malformed upstream stream"));
  }
}

TEST_F(GeminiBackendTest, HonoursRetryAfterOn429) {
  Behaviour limited;
  limited.kind = Behaviour::Kind::kHttpError;
  limited.http_status = 429;
  limited.retry_after_seconds = 1;
  mock_->EnqueueBehaviour(limited);
  GeminiOptions options = Options();
  options.retry.max_attempts = 2;
  options.retry.initial_backoff = absl::Milliseconds(20);
  options.retry.budget = absl::Seconds(5);
  const Clock::time_point start = Clock::now();
  auto sink = Run(options);
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_GE(Clock::now() - start, milliseconds(1000));
  EXPECT_EQ(mock_->request_count(), 2u);
}

TEST_F(GeminiBackendTest, Http429WithoutRetriesIsResourceExhausted) {
  Behaviour behaviour;
  behaviour.kind = Behaviour::Kind::kHttpError;
  behaviour.http_status = 429;
  behaviour.error_message = "Resource has been exhausted (e.g. check quota).";
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(sink->status().message(), HasSubstr("Resource has been exhausted"));
}

TEST(GeminiBackendCreateTest, RejectsAModelThatWouldChangeTheUrl) {
  auto loop = CurlLoop::Create();
  ASSERT_TRUE(loop.ok());
  GeminiOptions options;
  options.base_url = "https://generativelanguage.googleapis.com/v1beta";
  for (const char* model : {"", "a/b", "x?y", "m:generateContent", "models/"}) {
    options.model = model;
    EXPECT_EQ(GeminiBackend::Create(options, *loop).status().code(),
              absl::StatusCode::kInvalidArgument)
        << model;
  }
  options.model = "gemini-2.0-flash";
  EXPECT_TRUE(GeminiBackend::Create(options, *loop).ok());
}

}  // namespace
}  // namespace switchyard::backends
