// OpenAiBackend against the in-process mock upstream: what goes on the wire, what comes back,
// and every fault the mock can script.
#include "backends/remote/openai_backend.h"

#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "backends/retry_after.h"
#include "boost/asio/executor_work_guard.hpp"
#include "boost/asio/io_context.hpp"
#include "boost/asio/post.hpp"
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
using ::testing::Not;
using ::testing::Pair;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr char kApiKey[] = "sk-test-SECRET-0123456789abcdef";

class OpenAiBackendTest : public RemoteBackendTest<OpenAiBackend, OpenAiOptions> {
 protected:
  OpenAiOptions Options() const {
    return MockOptions(mock_->base_url(), "upstream-model-x", kApiKey);
  }
  std::unique_ptr<OpenAiBackend> Backend(const OpenAiOptions& options) {
    return MakeBackend(options);
  }
};

// The body is written directly on the hot path; the DOM is the reference, byte for byte, over
// random requests: every optional field on or off, text with quotes, escapes, control bytes,
// multi-byte UTF-8 and (falling back to the DOM's replacement) invalid UTF-8.
TEST_F(OpenAiBackendTest, DirectBodyIsTheDomsBodyByteForByte) {
  std::mt19937 rng(20261204);
  const std::vector<std::string> pieces = {
      "hello", " ", "\"", "\\", "\n", "\t", "\r", "\b", "\f", std::string("\x01", 1),
      std::string("\0", 1), "\x1f", "/", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
      "\xed\x9f\xbf", "\x7f", "{}[]:,", "0.5"};
  const std::vector<std::string> invalid = {"\xc3", "\xff", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                                            "\xe2\x82", "\xc0\xaf"};
  const std::vector<float> floats = {0.0f, 0.7f, 1.0f, 0.1f, 1e-5f, -0.25f, 2.0f, 0.95f, 1.5f,
                                     -2.0f, 3.3333333f};
  auto text = [&](bool allow_invalid) {
    std::string out;
    const int n = static_cast<int>(rng() % 6);
    for (int i = 0; i < n; ++i) {
      if (allow_invalid && rng() % 40 == 0) {
        out += invalid[rng() % invalid.size()];
      } else {
        out += pieces[rng() % pieces.size()];
      }
    }
    return out;
  };
  auto maybe = [&] { return rng() % 2 == 0; };
  for (bool stream : {true, false}) {
    OpenAiOptions options = Options();
    options.stream = stream ? StreamUpstream::kAlways : StreamUpstream::kNever;
    options.model = stream ? "gpt-\"quoted\"" : "m\xc3\xa9";
    std::unique_ptr<OpenAiBackend> backend = Backend(options);
    ASSERT_NE(backend, nullptr);
    int fell_back = 0;
    for (int round = 0; round < 5000; ++round) {
      const bool allow_invalid = round % 4 == 0;
      ChatRequest request;
      const int messages = 1 + static_cast<int>(rng() % 4);
      for (int i = 0; i < messages; ++i) {
        request.messages.push_back({maybe() ? "user" : text(allow_invalid), text(allow_invalid)});
      }
      if (maybe()) request.max_tokens = static_cast<int32_t>(rng() % 100000);
      if (maybe()) request.temperature = floats[rng() % floats.size()];
      if (maybe()) request.top_p = floats[rng() % floats.size()];
      if (maybe()) {
        for (int i = 0, n = 1 + static_cast<int>(rng() % 3); i < n; ++i) {
          request.stop.push_back(text(allow_invalid));
        }
      }
      if (maybe()) request.seed = (static_cast<uint64_t>(rng()) << 32) | rng();
      if (maybe()) request.frequency_penalty = floats[rng() % floats.size()];
      if (maybe()) request.presence_penalty = floats[rng() % floats.size()];
      if (maybe()) request.user = text(allow_invalid);
      const std::string direct = backend->BuildRequestBody(request);
      ASSERT_EQ(direct, backend->DomRequestBody(request)) << "round " << round;
      if (direct.find("\xef\xbf\xbd") != std::string::npos) ++fell_back;
    }
    // Both paths were taken.
    EXPECT_GT(fell_back, 10);
  }
}

TEST_F(OpenAiBackendTest, SendsTheExactOpenAiBodyAndHeaders) {
  ChatRequest request = SimpleRequest();
  request.messages = {{"system", "Be brief."}, {"user", "Hi \"there\" \xc3\xa9"}};
  request.max_tokens = 64;
  request.temperature = 0.7f;
  request.top_p = 0.9f;
  request.stop = {"\n\n", "END"};
  request.seed = 42;
  request.user = "user-1";
  request.frequency_penalty = 0.5f;
  request.presence_penalty = -0.25f;
  request.top_k = 5;  // not an OpenAI field: left out
  auto sink = Run(Options(), request);
  ASSERT_TRUE(sink->status().ok()) << sink->status();

  ASSERT_EQ(mock_->request_count(), 1u);
  const auto recorded = mock_->requests()[0];
  EXPECT_EQ(recorded.method, "POST");
  EXPECT_EQ(recorded.target, "/v1/chat/completions");
  EXPECT_EQ(recorded.Header("authorization"), std::string("Bearer ") + kApiKey);
  EXPECT_EQ(recorded.Header("content-type"), "application/json");
  EXPECT_EQ(recorded.Header("accept"), "text/event-stream");
  EXPECT_EQ(recorded.Header("expect"), "");
  const Json expected = Json::parse(R"({
    "model": "upstream-model-x",
    "messages": [{"role": "system", "content": "Be brief."},
                 {"role": "user", "content": "Hi \"there\" \u00e9"}],
    "max_tokens": 64,
    "temperature": 0.7,
    "top_p": 0.9,
    "stop": ["\n\n", "END"],
    "seed": 42,
    "frequency_penalty": 0.5,
    "presence_penalty": -0.25,
    "user": "user-1",
    "stream": true,
    "stream_options": {"include_usage": true}
  })");
  EXPECT_EQ(Json::parse(recorded.body), expected) << recorded.body;
  // Floats go out in their shortest form, not widened to double.
  EXPECT_THAT(recorded.body, HasSubstr("\"temperature\":0.7,"));
}

TEST_F(OpenAiBackendTest, LeavesUnsetOptionalFieldsOut) {
  OpenAiOptions options = Options();
  options.stream = StreamUpstream::kNever;
  options.api_key.clear();
  auto sink = Run(options);
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  const auto recorded = mock_->requests().at(0);
  EXPECT_EQ(Json::parse(recorded.body), Json::parse(R"({
    "model": "upstream-model-x",
    "messages": [{"role": "user", "content": "Say hello"}],
    "stream": false
  })"));
  EXPECT_EQ(recorded.Header("authorization"), "");
  EXPECT_EQ(recorded.Header("accept"), "application/json");
}

TEST_F(OpenAiBackendTest, NonStreamingGivesOneDeltaAndUsage) {
  Behaviour behaviour;
  behaviour.tokens = {"The", " answer", "."};
  behaviour.prompt_tokens = 11;
  behaviour.completion_tokens = 3;
  behaviour.finish_reason = "length";
  mock_->SetBehaviour(behaviour);
  OpenAiOptions options = Options();
  options.stream = StreamUpstream::kNever;
  auto sink = Run(options);
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_THAT(sink->deltas(), ElementsAre("The answer."));
  EXPECT_EQ(sink->completion().usage.prompt_tokens, 11);
  EXPECT_EQ(sink->completion().usage.completion_tokens, 3);
  EXPECT_EQ(sink->completion().finish_reason, FinishReason::kLength);
}

// A count below zero or past 10^9 is not believed (priced, a negative one would hand a tenant's
// budget back) and is counted, streamed or not, read by the scanner or by the DOM.
TEST_F(OpenAiBackendTest, ImplausibleTokenCountsAreIgnoredAndCounted) {
  Behaviour behaviour;
  behaviour.prompt_tokens = -1'000'000'000;
  behaviour.completion_tokens = 5'000'000'000;
  mock_->SetBehaviour(behaviour);
  for (StreamUpstream mode : {StreamUpstream::kAlways, StreamUpstream::kNever}) {
    OpenAiOptions options = Options();
    options.stream = mode;
    std::unique_ptr<OpenAiBackend> backend = Backend(options);
    auto sink = Run(*backend);
    ASSERT_TRUE(sink->status().ok()) << sink->status();
    EXPECT_EQ(sink->text(), "Hello, world!");
    EXPECT_EQ(sink->completion().usage.prompt_tokens, 0);
    EXPECT_FALSE(sink->completion().usage.prompt_reported);
    EXPECT_EQ(sink->completion().usage.completion_tokens, 0);
    EXPECT_FALSE(sink->completion().usage.completion_reported);
    EXPECT_EQ(backend->stats().implausible_usage(), 1u);
  }
  // 2^63 takes the DOM's path (past the scanner's 18 digits) as an unsigned integer.
  behaviour.kind = Behaviour::Kind::kMalformedSse;
  behaviour.malformed_data = R"({"choices": [{"index": 0, "message": {"role": "assistant",
      "content": "Hi"}, "finish_reason": "stop"}],
      "usage": {"prompt_tokens": 9223372036854775808, "completion_tokens": 3}})";
  mock_->SetBehaviour(behaviour);
  OpenAiOptions options = Options();
  options.stream = StreamUpstream::kNever;
  std::unique_ptr<OpenAiBackend> backend = Backend(options);
  auto sink = Run(*backend);
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_FALSE(sink->completion().usage.prompt_reported);
  EXPECT_EQ(sink->completion().usage.completion_tokens, 3);
  EXPECT_TRUE(sink->completion().usage.completion_reported);
  EXPECT_EQ(backend->stats().implausible_usage(), 1u);
}

// A server that sends no usage (one that ignores stream_options.include_usage) is told apart from
// one that reports zero, so the gateway can meter its own estimate.
TEST_F(OpenAiBackendTest, UsageNotSentIsNotReported) {
  for (bool sent : {false, true}) {
    Behaviour behaviour;
    behaviour.send_usage = sent;
    behaviour.prompt_tokens = 0;
    behaviour.completion_tokens = 0;
    mock_->SetBehaviour(behaviour);
    for (StreamUpstream mode : {StreamUpstream::kAlways, StreamUpstream::kNever}) {
      OpenAiOptions options = Options();
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

// The provider's content filter ending the answer is told apart from a complete answer.
TEST_F(OpenAiBackendTest, ContentFilterIsItsOwnFinishReason) {
  Behaviour behaviour;
  behaviour.finish_reason = "content_filter";
  mock_->SetBehaviour(behaviour);
  for (StreamUpstream mode : {StreamUpstream::kAlways, StreamUpstream::kNever}) {
    OpenAiOptions options = Options();
    options.stream = mode;
    auto sink = Run(options);
    ASSERT_TRUE(sink->status().ok()) << sink->status();
    EXPECT_EQ(sink->completion().finish_reason, FinishReason::kContentFilter);
  }
}

TEST_F(OpenAiBackendTest, StreamingForwardsEachTokenAndFinalUsage) {
  Behaviour behaviour;
  behaviour.tokens = {"Once", " upon", " a", " time", " \xf0\x9f\x90\x89"};
  behaviour.prompt_tokens = 9;
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_THAT(sink->deltas(), ElementsAre("Once", " upon", " a", " time", " \xf0\x9f\x90\x89"));
  EXPECT_EQ(sink->completion().usage.prompt_tokens, 9);
  EXPECT_EQ(sink->completion().usage.completion_tokens, 5);
  EXPECT_EQ(sink->completion().finish_reason, FinishReason::kStop);
}

// Tokens that arrive in one network read reach the sink as one burst, each still its own delta.
TEST_F(OpenAiBackendTest, TokensOfOneReadAreOneBurst) {
  Behaviour behaviour;
  behaviour.tokens = {"a", "b", "c", "d"};
  behaviour.one_write = true;
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_THAT(sink->deltas(), ElementsAre("a", "b", "c", "d"));
  EXPECT_THAT(sink->bursts(), ElementsAre(Pair(0u, 4u)));
  EXPECT_EQ(sink->contract_violations(), 0);
}

// Tokens paced apart arrive in separate reads: a burst each.
TEST_F(OpenAiBackendTest, PacedTokensAreABurstEach) {
  Behaviour behaviour;
  behaviour.tokens = {"a", "b", "c"};
  behaviour.token_delay = milliseconds(20);
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_THAT(sink->deltas(), ElementsAre("a", "b", "c"));
  EXPECT_THAT(sink->bursts(), ElementsAre(Pair(0u, 1u), Pair(1u, 2u), Pair(2u, 3u)));
}

TEST_F(OpenAiBackendTest, StreamingRequestAnsweredWithPlainJsonStillWorks) {
  Behaviour behaviour;
  behaviour.ignore_stream = true;
  behaviour.prompt_tokens = 3;
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_THAT(sink->deltas(), ElementsAre("Hello, world!"));
  EXPECT_EQ(sink->completion().usage.prompt_tokens, 3);
}

TEST_F(OpenAiBackendTest, StreamingDeltasArriveBeforeTheStreamEnds) {
  Behaviour behaviour;
  behaviour.tokens = {"a", "b", "c", "d"};
  behaviour.token_delay = milliseconds(100);
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  // Three more tokens follow the first at 100 ms each; buffering would make the gap ~0.
  EXPECT_GE(sink->done_at() - sink->first_delta_at(), milliseconds(200));
}

TEST_F(OpenAiBackendTest, Http500IsUnavailableWithTheUpstreamMessage) {
  Behaviour behaviour;
  behaviour.kind = Behaviour::Kind::kHttpError;
  behaviour.http_status = 500;
  behaviour.error_message = "The server had an error while processing your request.";
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(sink->status().message(), HasSubstr("HTTP 500"));
  EXPECT_THAT(sink->status().message(), HasSubstr("The server had an error"));
  EXPECT_THAT(sink->deltas(), ::testing::IsEmpty());
}

TEST_F(OpenAiBackendTest, Http429IsResourceExhausted) {
  Behaviour behaviour;
  behaviour.kind = Behaviour::Kind::kHttpError;
  behaviour.http_status = 429;
  behaviour.error_message = "Rate limit reached for requests";
  behaviour.retry_after_seconds = 3;
  mock_->SetBehaviour(behaviour);
  for (bool stream : {true, false}) {
    OpenAiOptions options = Options();
    options.stream = stream ? StreamUpstream::kAlways : StreamUpstream::kNever;
    options.name = "gpt";  // the prefix rewrites the message, which keeps the hint
    auto sink = Run(options);
    EXPECT_EQ(sink->status().code(), absl::StatusCode::kResourceExhausted) << sink->status();
    EXPECT_THAT(sink->status().message(), HasSubstr("Rate limit reached"));
    // The upstream's wait goes on to the client.
    EXPECT_EQ(RetryAfterSeconds(sink->status()), 3);
  }
  // A 503 passes its hint on too; a 500 does not (Retry-After means nothing there).
  behaviour.http_status = 503;
  mock_->SetBehaviour(behaviour);
  EXPECT_EQ(RetryAfterSeconds(Run(Options())->status()), 3);
  behaviour.http_status = 500;
  mock_->SetBehaviour(behaviour);
  EXPECT_EQ(RetryAfterSeconds(Run(Options())->status()), std::nullopt);
}

TEST_F(OpenAiBackendTest, RequestErrorsAreInvalidArgumentCredentialErrorsUnavailable) {
  Behaviour behaviour;
  behaviour.kind = Behaviour::Kind::kHttpError;
  behaviour.http_status = 400;
  behaviour.error_message = "max_tokens is too large";
  mock_->EnqueueBehaviour(behaviour);
  behaviour.http_status = 401;
  behaviour.error_message = "Invalid API key";
  mock_->EnqueueBehaviour(behaviour);
  auto bad_request = Run(Options());
  EXPECT_EQ(bad_request->status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_request->status().message(), HasSubstr("max_tokens is too large"));
  // Our key, not the client's request, is at fault: a bad gateway, naming the target.
  OpenAiOptions named = Options();
  named.name = "frontier";
  auto unauthorized = Run(named);
  EXPECT_EQ(unauthorized->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(unauthorized->status().message(),
              HasSubstr("target 'frontier': upstream returned HTTP 401: Invalid API key (the "
                        "upstream refused the gateway's credentials for this target"));
  for (int status : {403, 404}) {
    behaviour.http_status = status;
    behaviour.error_message = "The model `upstream-model-x` does not exist";
    mock_->SetBehaviour(behaviour);
    auto sink = Run(named);
    EXPECT_EQ(sink->status().code(), absl::StatusCode::kUnavailable) << status;
    EXPECT_THAT(sink->status().message(),
                HasSubstr(absl::StrCat("target 'frontier': upstream returned HTTP ", status,
                                       ": The model `upstream-model-x` does not exist (")));
  }
  // Not retried: another attempt would be refused the same way.
  named.retry.max_attempts = 3;
  named.retry.initial_backoff = absl::Milliseconds(1);
  const size_t before = mock_->request_count();
  EXPECT_EQ(Run(named)->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(mock_->request_count(), before + 1);
}

TEST_F(OpenAiBackendTest, ApiKeyNeverAppearsInErrors) {
  // OpenAI echoes the key it received in its 401 message; so do some proxies.
  Behaviour behaviour;
  behaviour.kind = Behaviour::Kind::kHttpError;
  behaviour.http_status = 401;
  behaviour.error_message = std::string("Incorrect API key provided: ") + kApiKey + ".";
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  ASSERT_FALSE(sink->status().ok());
  EXPECT_THAT(sink->status().message(), Not(HasSubstr(kApiKey)));
  EXPECT_THAT(sink->status().message(), HasSubstr("Incorrect API key provided: [redacted]"));
  // The same inside a stream.
  behaviour.kind = Behaviour::Kind::kResetMidStream;
  mock_->SetBehaviour(behaviour);
  auto reset = Run(Options());
  ASSERT_FALSE(reset->status().ok());
  EXPECT_THAT(reset->status().message(), Not(HasSubstr(kApiKey)));
}

TEST_F(OpenAiBackendTest, ResetMidStreamIsAnErrorNotANormalEnd) {
  Behaviour behaviour;
  behaviour.kind = Behaviour::Kind::kResetMidStream;
  behaviour.tokens = {"one", " two", " three", " four"};
  behaviour.reset_after_tokens = 2;
  mock_->SetBehaviour(behaviour);
  auto sink = Run(Options());
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kUnavailable) << sink->status();
  EXPECT_THAT(sink->deltas(), ElementsAre("one", " two"));
}

// Valid syntax, but a number past double's range: refused as malformed, like broken JSON. The
// long integer makes the chunk scanner decline, so the text reaches the DOM parser.
constexpr char kNumberPastDoubleRange[] =
    R"({"choices":[{"index":0,"delta":{"content":"x"}}],"n":1234567890123456789012,"c":1e400})";

// Cut off mid-string (the mock's default), and kNumberPastDoubleRange.
TEST_F(OpenAiBackendTest, MalformedSseIsAnError) {
  for (const std::string data : {"", kNumberPastDoubleRange}) {
    SCOPED_TRACE(data);
    auto sink = RunMalformed(Options(), data);
    EXPECT_EQ(sink->status().code(), absl::StatusCode::kUnavailable) << sink->status();
    EXPECT_THAT(sink->status().message(), HasSubstr("malformed"));
    EXPECT_THAT(sink->deltas(), ElementsAre("Hello"));
  }
}

TEST_F(OpenAiBackendTest, NonStreamedBodyWithANumberPastDoubleRangeIsInvalid) {
  OpenAiOptions options = Options();
  options.stream = StreamUpstream::kNever;
  auto unary = RunMalformed(options, kNumberPastDoubleRange);
  EXPECT_EQ(unary->status().code(), absl::StatusCode::kUnavailable) << unary->status();
  EXPECT_THAT(unary->status().message(), HasSubstr("invalid completion JSON"));
}

TEST_F(OpenAiBackendTest, SilentUpstreamHitsTheFirstByteTimeout) {
  Behaviour behaviour;
  behaviour.kind = Behaviour::Kind::kNeverAnswer;
  mock_->SetBehaviour(behaviour);
  OpenAiOptions options = Options();
  options.timeouts.first_byte = absl::Milliseconds(300);
  const Clock::time_point start = Clock::now();
  auto sink = Run(options);
  const auto elapsed = Clock::now() - start;
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kDeadlineExceeded) << sink->status();
  EXPECT_GE(elapsed, milliseconds(290));
  EXPECT_LT(elapsed, milliseconds(1500));
  // The abandoned transfer is closed, so the mock's waiting handler sees the client go.
  EXPECT_TRUE(mock_->WaitForAbortedResponses(1, milliseconds(3000)));
}

TEST_F(OpenAiBackendTest, NonStreamingHitsTheTotalTimeout) {
  Behaviour behaviour;
  behaviour.delay = milliseconds(5000);
  mock_->SetBehaviour(behaviour);
  OpenAiOptions options = Options();
  options.stream = StreamUpstream::kNever;
  options.timeouts.total = absl::Milliseconds(300);
  const Clock::time_point start = Clock::now();
  auto sink = Run(options);
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kDeadlineExceeded) << sink->status();
  EXPECT_LT(Clock::now() - start, milliseconds(1500));
}

TEST_F(OpenAiBackendTest, StalledStreamHitsTheIdleTimeout) {
  Behaviour behaviour;
  behaviour.tokens = {"fast", " slow"};
  behaviour.token_delay = milliseconds(1500);
  mock_->SetBehaviour(behaviour);
  OpenAiOptions options = Options();
  options.timeouts.idle = absl::Milliseconds(300);
  // The delay before the first token counts too: the status line has already arrived.
  const Clock::time_point start = Clock::now();
  auto sink = Run(options);
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kDeadlineExceeded) << sink->status();
  EXPECT_THAT(sink->status().message(), HasSubstr("stalled"));
  EXPECT_LT(Clock::now() - start, milliseconds(1200));
}

TEST_F(OpenAiBackendTest, BodyOverTheCapIsAnError) {
  Behaviour behaviour;
  behaviour.tokens = {std::string(4000, 'x'), std::string(4000, 'y')};
  mock_->SetBehaviour(behaviour);
  for (bool stream : {true, false}) {
    OpenAiOptions options = Options();
    options.stream = stream ? StreamUpstream::kAlways : StreamUpstream::kNever;
    options.max_body_bytes = 2048;
    auto sink = Run(options);
    EXPECT_EQ(sink->status().code(), absl::StatusCode::kUnavailable) << sink->status();
    EXPECT_THAT(sink->status().message(), HasSubstr("exceeds the limit of 2048 bytes"));
    EXPECT_THAT(sink->deltas(), ::testing::IsEmpty());
  }
}

TEST_F(OpenAiBackendTest, ConnectFailureIsUnavailable) {
  uint16_t dead_port;
  {
    auto other = MockUpstream::Start();
    ASSERT_TRUE(other.ok());
    dead_port = (*other)->port();
  }
  OpenAiOptions options = Options();
  options.base_url = "http://127.0.0.1:" + std::to_string(dead_port) + "/v1";
  auto sink = Run(options);
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kUnavailable) << sink->status();
  EXPECT_THAT(sink->status().message(), Not(HasSubstr(kApiKey)));
}

TEST_F(OpenAiBackendTest, CancelMidStreamAbortsTheTransfer) {
  Behaviour behaviour;
  behaviour.tokens.assign(100, "tok ");
  behaviour.token_delay = milliseconds(20);
  mock_->SetBehaviour(behaviour);
  auto backend = Backend(Options());
  auto sink = std::make_shared<RecordingSink>();
  std::unique_ptr<Call> call = backend->Start(SimpleRequest(), sink);
  ASSERT_TRUE(sink->WaitDeltas(2));
  call->Cancel();
  const int calls_at_cancel = sink->calls();
  EXPECT_TRUE(mock_->WaitForAbortedResponses(1, milliseconds(3000)));
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(sink->calls(), calls_at_cancel);
  EXPECT_FALSE(sink->done());
  EXPECT_LT(sink->deltas().size(), 50u);
  EXPECT_EQ(loop_->active_transfers(), 0u);
  call->Cancel();  // idempotent
}

TEST_F(OpenAiBackendTest, CancelFromInsideTheSink) {
  Behaviour behaviour;
  behaviour.tokens.assign(100, "tok ");
  behaviour.token_delay = milliseconds(10);
  mock_->SetBehaviour(behaviour);
  auto backend = Backend(Options());
  auto sink = std::make_shared<RecordingSink>();
  std::unique_ptr<Call> call;
  std::mutex call_mu;
  std::atomic<bool> cancelled{false};
  sink->set_on_delta([&] {
    std::lock_guard<std::mutex> lock(call_mu);
    if (call != nullptr && !cancelled.exchange(true)) call->Cancel();
  });
  {
    std::lock_guard<std::mutex> lock(call_mu);
    call = backend->Start(SimpleRequest(), sink);
  }
  EXPECT_TRUE(mock_->WaitForAbortedResponses(1, milliseconds(3000)));
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_TRUE(cancelled.load());
  EXPECT_EQ(sink->deltas().size(), 1u);
  EXPECT_FALSE(sink->done());
}

TEST_F(OpenAiBackendTest, SequentialRequestsReuseOneConnection) {
  auto backend = Backend(Options());
  for (int i = 0; i < 5; ++i) {
    auto sink = std::make_shared<RecordingSink>();
    auto call = backend->Start(SimpleRequest(), sink);
    ASSERT_TRUE(sink->WaitDone());
    ASSERT_TRUE(sink->status().ok()) << sink->status();
    // OnDone comes with the terminal event; the transfer then drains the rest of the response
    // and hands the connection back to the pool. Sequential means after that.
    for (int wait = 0; wait < 200 && loop_->active_transfers() > 0; ++wait) {
      std::this_thread::sleep_for(milliseconds(10));
    }
    ASSERT_EQ(loop_->active_transfers(), 0u);
  }
  EXPECT_EQ(mock_->request_count(), 5u);
  EXPECT_EQ(mock_->connections_accepted(), 1u);
}

TEST_F(OpenAiBackendTest, ManyConcurrentRequestsAllComplete) {
  Behaviour behaviour;
  behaviour.tokens = {"a", "b", "c", "d", "e"};
  behaviour.token_delay = milliseconds(20);
  mock_->SetBehaviour(behaviour);
  auto backend = Backend(Options());
  constexpr int kRequests = 64;
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  std::vector<std::unique_ptr<Call>> calls;
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < kRequests; ++i) {
    sinks.push_back(std::make_shared<RecordingSink>());
    calls.push_back(backend->Start(SimpleRequest(), sinks.back()));
  }
  for (auto& sink : sinks) {
    ASSERT_TRUE(sink->WaitDone());
    EXPECT_TRUE(sink->status().ok()) << sink->status();
    EXPECT_EQ(sink->text(), "abcde");
    EXPECT_EQ(sink->contract_violations(), 0);
  }
  // Run concurrently, each takes ~100 ms; in series they would take over 6 s.
  EXPECT_LT(Clock::now() - start, milliseconds(3000));
  EXPECT_EQ(mock_->request_count(), static_cast<size_t>(kRequests));
}

Behaviour HttpError(int status, std::optional<int> retry_after_seconds = std::nullopt) {
  Behaviour behaviour;
  behaviour.kind = Behaviour::Kind::kHttpError;
  behaviour.http_status = status;
  behaviour.error_message = "failure " + std::to_string(status);
  behaviour.retry_after_seconds = retry_after_seconds;
  return behaviour;
}

OpenAiOptions WithRetries(OpenAiOptions options) {
  options.retry.max_attempts = 3;
  options.retry.initial_backoff = absl::Milliseconds(50);
  options.retry.max_backoff = absl::Milliseconds(200);
  options.retry.budget = absl::Seconds(5);
  return options;
}

TEST_F(OpenAiBackendTest, RetriesA503ThenSucceeds) {
  mock_->EnqueueBehaviour(HttpError(503));
  mock_->EnqueueBehaviour(HttpError(502));
  auto sink = Run(WithRetries(Options()));
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_EQ(sink->text(), "Hello, world!");
  EXPECT_EQ(mock_->request_count(), 3u);
  // Every attempt sends the same request.
  const auto requests = mock_->requests();
  EXPECT_EQ(requests[0].body, requests[2].body);
}

// Notes the threads the backend calls it on.
class ThreadNotingSink : public RecordingSink {
 public:
  void OnDelta(std::string_view text) override {
    Note();
    RecordingSink::OnDelta(text);
  }
  void OnDone(const absl::Status& status, const Completion& completion) override {
    Note();
    RecordingSink::OnDone(status, completion);
  }
  std::vector<std::thread::id> threads() {
    std::lock_guard<std::mutex> lock(mu_);
    return threads_;
  }

 private:
  void Note() {
    std::lock_guard<std::mutex> lock(mu_);
    if (threads_.empty() || threads_.back() != std::this_thread::get_id()) {
      threads_.push_back(std::this_thread::get_id());
    }
  }
  std::mutex mu_;
  std::vector<std::thread::id> threads_;
};

// A call made on a thread with a bound loop (an HTTP server thread) runs there, retries
// included, and not on the backend's own loop.
TEST_F(OpenAiBackendTest, ACallStaysOnTheLoopBoundToItsThread) {
  mock_->EnqueueBehaviour(HttpError(503));
  boost::asio::io_context io;
  auto bound = CurlLoop::Create(io.get_executor());
  ASSERT_TRUE(bound.ok()) << bound.status();
  std::unique_ptr<OpenAiBackend> backend = Backend(WithRetries(Options()));
  ASSERT_NE(backend, nullptr);
  auto sink = std::make_shared<ThreadNotingSink>();
  std::unique_ptr<Call> call;
  std::thread::id server_thread;
  boost::asio::post(io, [&] {
    CurlLoop::BindToThisThread(bound->get());
    call = backend->Start(SimpleRequest(), sink);
    CurlLoop::BindToThisThread(nullptr);
  });
  std::thread runner([&] {
    server_thread = std::this_thread::get_id();
    auto work = boost::asio::make_work_guard(io);
    const Clock::time_point deadline = Clock::now() + std::chrono::seconds(10);
    while (!sink->WaitDone(milliseconds(1)) && Clock::now() < deadline) {
      io.run_for(milliseconds(10));
    }
  });
  runner.join();
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_EQ(sink->text(), "Hello, world!");
  EXPECT_EQ(mock_->request_count(), 2u);
  EXPECT_THAT(sink->threads(), ElementsAre(server_thread));
  EXPECT_EQ(loop_->active_transfers(), 0u);
  // Unbound again: the next call goes to the backend's own loop.
  EXPECT_EQ(CurlLoop::ForThisThread(loop_), loop_);
  auto own = Run(Options());
  EXPECT_TRUE(own->status().ok()) << own->status();
}

TEST_F(OpenAiBackendTest, GivesUpAfterMaxAttempts) {
  mock_->SetBehaviour(HttpError(500));
  auto sink = Run(WithRetries(Options()));
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(sink->status().message(), HasSubstr("failure 500"));
  EXPECT_EQ(mock_->request_count(), 3u);
}

TEST_F(OpenAiBackendTest, HonoursRetryAfter) {
  mock_->EnqueueBehaviour(HttpError(429, /*retry_after_seconds=*/1));
  const Clock::time_point start = Clock::now();
  auto sink = Run(WithRetries(Options()));
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_GE(Clock::now() - start, milliseconds(1000));
  EXPECT_EQ(mock_->request_count(), 2u);
}

TEST_F(OpenAiBackendTest, RetryAfterBeyondTheBudgetFailsAtOnce) {
  mock_->EnqueueBehaviour(HttpError(429, /*retry_after_seconds=*/30));
  const Clock::time_point start = Clock::now();
  auto sink = Run(WithRetries(Options()));
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_LT(Clock::now() - start, milliseconds(1000));
  EXPECT_EQ(mock_->request_count(), 1u);
}

TEST_F(OpenAiBackendTest, DoesNotRetryClientErrors) {
  mock_->SetBehaviour(HttpError(400));
  auto sink = Run(WithRetries(Options()));
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(mock_->request_count(), 1u);
}

TEST_F(OpenAiBackendTest, DoesNotRetryOnceADeltaWasDelivered) {
  Behaviour behaviour;
  behaviour.kind = Behaviour::Kind::kResetMidStream;
  behaviour.reset_after_tokens = 1;
  mock_->SetBehaviour(behaviour);
  auto sink = Run(WithRetries(Options()));
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(sink->deltas(), ElementsAre("Hello"));
  EXPECT_EQ(mock_->request_count(), 1u);
}

TEST_F(OpenAiBackendTest, CancelDuringBackoffStopsRetrying) {
  mock_->SetBehaviour(HttpError(503, /*retry_after_seconds=*/1));
  auto backend = Backend(WithRetries(Options()));
  auto sink = std::make_shared<RecordingSink>();
  std::unique_ptr<Call> call = backend->Start(SimpleRequest(), sink);
  ASSERT_TRUE(mock_->WaitForRequests(1, milliseconds(3000)));
  std::this_thread::sleep_for(milliseconds(200));  // now inside the one-second wait
  call->Cancel();
  // Cancel is asynchronous on the loop side; the pending retry must go long before it is due.
  const Clock::time_point deadline = Clock::now() + milliseconds(500);
  while (loop_->active_transfers() != 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_EQ(loop_->active_transfers(), 0u) << "the pending retry was not dropped";
  std::this_thread::sleep_for(milliseconds(1300));
  EXPECT_EQ(mock_->request_count(), 1u);
  EXPECT_EQ(sink->calls(), 0);
}

TEST_F(OpenAiBackendTest, RequestOutlivesEveryOtherReferenceToItsLoop) {
  Behaviour behaviour;
  behaviour.token_delay = milliseconds(30);
  mock_->SetBehaviour(behaviour);
  auto loop = CurlLoop::Create();
  ASSERT_TRUE(loop.ok());
  auto backend = OpenAiBackend::Create(Options(), *loop);
  ASSERT_TRUE(backend.ok());
  auto sink = std::make_shared<RecordingSink>();
  (*backend)->Start(SimpleRequest(), sink).reset();
  // The request alone keeps the loop alive; its last reference then goes on the loop thread.
  backend->reset();
  loop->reset();
  ASSERT_TRUE(sink->WaitDone());
  EXPECT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_EQ(sink->text(), "Hello, world!");
}

TEST(OpenAiBackendCreateTest, RejectsBadOptions) {
  auto loop = CurlLoop::Create();
  ASSERT_TRUE(loop.ok());
  OpenAiOptions options;
  options.model = "m";
  options.base_url = "ftp://example.com/v1";
  EXPECT_EQ(OpenAiBackend::Create(options, *loop).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.base_url = "https://example.com/v1";
  options.model.clear();
  EXPECT_EQ(OpenAiBackend::Create(options, *loop).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.model = "m";
  EXPECT_EQ(OpenAiBackend::Create(options, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(OpenAiBackend::Create(options, *loop).ok());
}

}  // namespace
}  // namespace switchyard::backends
