// AnthropicBackend against the mock upstream speaking the Anthropic Messages wire format.
#include "backends/remote/anthropic_backend.h"

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

constexpr char kApiKey[] = "sk-ant-test-SECRET-0123456789";

class AnthropicBackendTest : public RemoteBackendTest<AnthropicBackend, AnthropicOptions> {
 protected:
  AnthropicOptions Options() const {
    return MockOptions(mock_->base_url(), "claude-mock-1", kApiKey);
  }
};

TEST_F(AnthropicBackendTest, SendsTheExactMessagesBodyAndHeaders) {
  ChatRequest request = SimpleRequest();
  request.messages = {{"system", "Be brief."},   {"user", "Hi"},       {"user", "there"},
                      {"assistant", "Hello."},   {"developer", "No."}, {"tool", "42"},
                      {"user", "\xc3\xa9"}};
  request.max_tokens = 64;
  request.temperature = 0.7f;
  request.top_p = 0.9f;
  request.stop = {"END"};
  request.seed = 42;
  request.user = "user-1";
  request.top_k = 5;
  request.frequency_penalty = 0.5f;  // not an Anthropic field: left out
  auto sink = Run(Options(), request);
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  ASSERT_EQ(mock_->request_count(), 1u);
  const auto recorded = mock_->requests()[0];
  EXPECT_EQ(recorded.method, "POST");
  EXPECT_EQ(recorded.target, "/v1/messages");
  EXPECT_EQ(recorded.Header("x-api-key"), kApiKey);
  EXPECT_EQ(recorded.Header("anthropic-version"), "2023-06-01");
  EXPECT_EQ(recorded.Header("authorization"), "");
  EXPECT_EQ(recorded.Header("content-type"), "application/json");
  EXPECT_EQ(recorded.Header("accept"), "text/event-stream");
  EXPECT_EQ(Json::parse(recorded.body), Json::parse(R"({
    "model": "claude-mock-1",
    "max_tokens": 64,
    "system": "Be brief.\n\nNo.",
    "messages": [
      {"role": "user", "content": [{"type": "text", "text": "Hi"},
                                   {"type": "text", "text": "there"}]},
      {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
      {"role": "user", "content": [{"type": "text", "text": "42"},
                                   {"type": "text", "text": "\u00e9"}]}],
    "temperature": 0.7,
    "top_p": 0.9,
    "top_k": 5,
    "stop_sequences": ["END"],
    "metadata": {"user_id": "user-1"},
    "stream": true
  })")) << recorded.body;
}

TEST_F(AnthropicBackendTest, FillsInTheRequiredMaxTokens) {
  AnthropicOptions options = Options();
  options.default_max_tokens = 333;
  options.stream = StreamUpstream::kNever;
  options.api_key.clear();
  auto sink = Run(options);
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  const auto recorded = mock_->requests().at(0);
  EXPECT_EQ(Json::parse(recorded.body), Json::parse(R"({
    "model": "claude-mock-1", "max_tokens": 333,
    "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}],
    "stream": false})"));
  EXPECT_EQ(recorded.Header("x-api-key"), "");
  EXPECT_EQ(recorded.Header("accept"), "application/json");
}

TEST_F(AnthropicBackendTest, NonStreamingGivesTextUsageAndStopReason) {
  Behaviour behaviour;
  behaviour.tokens = {"The", " answer", "."};
  behaviour.prompt_tokens = 11;
  behaviour.completion_tokens = 3;
  behaviour.finish_reason = "length";
  mock_->SetBehaviour(behaviour);
  AnthropicOptions options = Options();
  options.stream = StreamUpstream::kNever;
  auto sink = Run(options);
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_THAT(sink->deltas(), ElementsAre("The answer."));
  EXPECT_EQ(sink->completion().usage.prompt_tokens, 11);
  EXPECT_EQ(sink->completion().usage.completion_tokens, 3);
  EXPECT_EQ(sink->completion().finish_reason, FinishReason::kLength);
}

TEST_F(AnthropicBackendTest, StreamingForwardsEachDeltaAndUsageFromBothEvents) {
  Behaviour behaviour;
  behaviour.tokens = {"Once", " upon", " a", " time", " \xf0\x9f\x90\x89"};
  behaviour.prompt_tokens = 9;
  behaviour.completion_tokens = 6;
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_THAT(sink->deltas(), ElementsAre("Once", " upon", " a", " time", " \xf0\x9f\x90\x89"));
  // input_tokens from message_start, output_tokens from message_delta (not message_start's 1).
  EXPECT_EQ(sink->completion().usage.prompt_tokens, 9);
  EXPECT_EQ(sink->completion().usage.completion_tokens, 6);
  EXPECT_EQ(sink->completion().finish_reason, FinishReason::kStop);
}

// A count below zero or past 10^9 is not believed (priced, a negative one would hand a tenant's
// budget back) and is counted, streamed or not.
TEST_F(AnthropicBackendTest, ImplausibleTokenCountsAreIgnoredAndCounted) {
  Behaviour behaviour;
  behaviour.prompt_tokens = -1'000'000'000;
  behaviour.completion_tokens = 5'000'000'000;
  mock_->SetBehaviour(behaviour);
  for (StreamUpstream mode : {StreamUpstream::kAlways, StreamUpstream::kNever}) {
    AnthropicOptions options = Options();
    options.stream = mode;
    std::unique_ptr<AnthropicBackend> backend = MakeBackend(options);
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
TEST_F(AnthropicBackendTest, UsageNotSentIsNotReported) {
  for (bool sent : {false, true}) {
    Behaviour behaviour;
    behaviour.send_usage = sent;
    behaviour.prompt_tokens = 0;
    behaviour.completion_tokens = 0;
    mock_->SetBehaviour(behaviour);
    for (StreamUpstream mode : {StreamUpstream::kAlways, StreamUpstream::kNever}) {
      AnthropicOptions options = Options();
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

// A refusal (the model declined for safety reasons) is told apart from a complete answer.
TEST_F(AnthropicBackendTest, RefusalIsAContentFilterFinish) {
  Behaviour behaviour;
  behaviour.finish_reason = "refusal";
  mock_->SetBehaviour(behaviour);
  for (StreamUpstream mode : {StreamUpstream::kAlways, StreamUpstream::kNever}) {
    AnthropicOptions options = Options();
    options.stream = mode;
    auto sink = Run(options);
    ASSERT_TRUE(sink->status().ok()) << sink->status();
    EXPECT_EQ(sink->completion().finish_reason, FinishReason::kContentFilter);
  }
}

TEST_F(AnthropicBackendTest, StreamingMaxTokensIsLength) {
  Behaviour behaviour;
  behaviour.finish_reason = "length";
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_EQ(sink->completion().finish_reason, FinishReason::kLength);
}

TEST_F(AnthropicBackendTest, UnknownEventTypeIsAPreciseUpstreamError) {
  Behaviour behaviour;
  behaviour.unknown_event = true;
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(sink->status().message(),
              HasSubstr("malformed upstream stream: unknown Anthropic event type 'future_event'"));
  // The token before it reached the client; nothing after it.
  EXPECT_EQ(sink->text(), "Hello");
}

TEST_F(AnthropicBackendTest, ErrorJsonBecomesAPreciseError) {
  Behaviour behaviour;
  behaviour.kind = Behaviour::Kind::kHttpError;
  behaviour.http_status = 401;
  behaviour.error_message = "invalid x-api-key " + std::string(kApiKey);
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(sink->status().message(),
              HasSubstr("upstream returned HTTP 401: authentication_error: invalid x-api-key"));
  EXPECT_THAT(sink->status().message(), ::testing::Not(HasSubstr(kApiKey)));
}

TEST_F(AnthropicBackendTest, ErrorEventMidStreamIsAnError) {
  Behaviour behaviour;
  behaviour.kind = Behaviour::Kind::kStreamError;
  behaviour.reset_after_tokens = 2;
  behaviour.error_message = "Overloaded";
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(sink->status().message(),
              HasSubstr("upstream stream error: overloaded_error: Overloaded"));
  EXPECT_EQ(sink->text(), "Hello,");
  // What message_start counted comes with the failure, for the gateway to charge.
  EXPECT_EQ(sink->completion().usage.prompt_tokens, 7);
  EXPECT_TRUE(sink->completion().usage.prompt_reported);
  EXPECT_FALSE(sink->completion().usage.completion_reported);
}

TEST_F(AnthropicBackendTest, ResetMidStreamIsAnErrorNotANormalEnd) {
  Behaviour behaviour;
  behaviour.kind = Behaviour::Kind::kResetMidStream;
  behaviour.reset_after_tokens = 2;
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kUnavailable) << sink->status();
  EXPECT_EQ(sink->text(), "Hello,");
}

// Cut off mid-string (the mock's default), and valid syntax with a number past double's range.
TEST_F(AnthropicBackendTest, MalformedEventIsAnError) {
  for (const std::string data : {"", R"({"type":"content_block_delta","index":1e400})"}) {
    SCOPED_TRACE(data);
    auto sink = RunMalformed(Options(), data);
    EXPECT_EQ(sink->status().code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(sink->status().message(), HasSubstr("malformed upstream stream"));
  }
}

TEST_F(AnthropicBackendTest, Retries429AfterRetryAfterAnd529) {
  Behaviour limited;
  limited.kind = Behaviour::Kind::kHttpError;
  limited.http_status = 429;
  limited.retry_after_seconds = 1;
  mock_->EnqueueBehaviour(limited);
  Behaviour overloaded = limited;
  overloaded.http_status = 529;
  overloaded.retry_after_seconds.reset();
  mock_->EnqueueBehaviour(overloaded);
  AnthropicOptions options = Options();
  options.retry.max_attempts = 3;
  options.retry.initial_backoff = absl::Milliseconds(20);
  options.retry.budget = absl::Seconds(5);
  const Clock::time_point start = Clock::now();
  auto sink = Run(options);
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_GE(Clock::now() - start, milliseconds(1000));
  EXPECT_EQ(mock_->request_count(), 3u);
  EXPECT_EQ(sink->text(), "Hello, world!");
}

TEST_F(AnthropicBackendTest, Http429WithoutRetriesIsResourceExhausted) {
  Behaviour behaviour;
  behaviour.kind = Behaviour::Kind::kHttpError;
  behaviour.http_status = 429;
  behaviour.error_message = "Number of request tokens has exceeded your rate limit";
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(sink->status().message(), HasSubstr("rate_limit_error: Number of request tokens"));
}

TEST(AnthropicBackendCreateTest, RejectsBadOptions) {
  auto loop = CurlLoop::Create();
  ASSERT_TRUE(loop.ok());
  AnthropicOptions options;
  options.base_url = "ftp://x";
  options.model = "m";
  EXPECT_EQ(AnthropicBackend::Create(options, *loop).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.base_url = "https://api.anthropic.com/v1";
  options.default_max_tokens = 0;
  EXPECT_EQ(AnthropicBackend::Create(options, *loop).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace switchyard::backends
