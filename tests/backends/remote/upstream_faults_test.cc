// Every fault the mock upstream can script, against every provider adapter, streamed and not:
// the caller always gets a complete answer or a precise upstream error, in bounded time, and the
// failure is counted under the right kind.
#include <stdlib.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "backends/remote/anthropic_backend.h"
#include "backends/remote/gemini_backend.h"
#include "backends/remote/openai_backend.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/backends/remote/backend_fixture.h"
#include "tests/mocks/mock_upstream.h"

namespace switchyard::backends {
namespace {

using ::switchyard::mocks::Behaviour;
using ::switchyard::mocks::Dialect;
using ::testing::HasSubstr;
using Kind = Behaviour::Kind;
using std::chrono::milliseconds;

// What a fault must end in. `code` OK means the complete answer "Hello, world!".
struct Expected {
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string message;  // a substring of the error
  UpstreamErrorKind kind = UpstreamErrorKind::kConnect;
};

struct Fault {
  std::string name;
  std::function<void(Behaviour&, RemoteOptions&)> setup;
  // Given (dialect, stream).
  std::function<Expected(Dialect, bool)> expected;
};

Expected Ok() { return {}; }
Expected Error(absl::StatusCode code, std::string message, UpstreamErrorKind kind) {
  return {code, std::move(message), kind};
}

std::vector<Fault> Faults() {
  using C = absl::StatusCode;
  using K = UpstreamErrorKind;
  auto http_error = [](int status) {
    return [status](Behaviour& b, RemoteOptions&) {
      b.kind = Kind::kHttpError;
      b.http_status = status;
      b.error_message = "scripted failure";
    };
  };
  return {
      {"Ok", [](Behaviour&, RemoteOptions&) {}, [](Dialect, bool) { return Ok(); }},
      {"ServerError", http_error(500),
       [](Dialect, bool) {
         return Error(C::kUnavailable, "upstream returned HTTP 500", K::kServerError);
       }},
      {"RateLimited", http_error(429),
       [](Dialect, bool) {
         return Error(C::kResourceExhausted, "upstream returned HTTP 429", K::kRateLimited);
       }},
      {"Unauthorized", http_error(401),
       [](Dialect, bool) {
         return Error(C::kUnavailable, "refused the gateway's credentials for this target",
                      K::kClientError);
       }},
      {"Forbidden", http_error(403),
       [](Dialect, bool) {
         return Error(C::kUnavailable, "refused the gateway's credentials for this target",
                      K::kClientError);
       }},
      {"ModelNotFound", http_error(404),
       [](Dialect, bool) {
         return Error(C::kUnavailable, "does not know this target's model or path",
                      K::kClientError);
       }},
      {"BadRequest", http_error(400),
       [](Dialect, bool) {
         return Error(C::kInvalidArgument, "upstream returned HTTP 400", K::kClientError);
       }},
      {"ResetMidStream",
       [](Behaviour& b, RemoteOptions&) { b.kind = Kind::kResetMidStream; },
       [](Dialect, bool stream) {
         return stream ? Error(C::kUnavailable, "upstream request failed", K::kConnect) : Ok();
       }},
      {"MalformedSse", [](Behaviour& b, RemoteOptions&) { b.kind = Kind::kMalformedSse; },
       [](Dialect, bool stream) {
         return stream ? Error(C::kUnavailable, "malformed upstream stream", K::kBadResponse)
                       : Ok();
       }},
      {"StreamError",
       [](Behaviour& b, RemoteOptions&) {
         b.kind = Kind::kStreamError;
         b.error_message = "overloaded right now";
       },
       [](Dialect, bool stream) {
         return stream ? Error(C::kUnavailable, "upstream stream error:", K::kServerError) : Ok();
       }},
      // A stream must start within first_byte; a body, whose first byte comes with the whole
      // answer, has only the total timeout.
      {"NeverAnswers",
       [](Behaviour& b, RemoteOptions& o) {
         b.kind = Kind::kNeverAnswer;
         o.timeouts.first_byte = absl::Milliseconds(300);
         o.timeouts.total = absl::Milliseconds(600);
       },
       [](Dialect, bool stream) {
         return stream ? Error(C::kDeadlineExceeded, "upstream sent no response within 300ms",
                               K::kTimeout)
                       : Error(C::kDeadlineExceeded,
                               "upstream timed out: no complete response within 600ms",
                               K::kTimeout);
       }},
      {"SlowDripBeyondIdleTimeout",
       [](Behaviour& b, RemoteOptions& o) {
         b.drip_interval = milliseconds(400);
         o.timeouts.idle = absl::Milliseconds(150);
       },
       [](Dialect, bool) {
         return Error(C::kDeadlineExceeded, "upstream stalled: no data for 150ms", K::kTimeout);
       }},
      {"SlowDripWithinIdleTimeout",
       [](Behaviour& b, RemoteOptions& o) {
         b.drip_interval = milliseconds(20);
         b.drip_bytes = 256;
         o.timeouts.idle = absl::Milliseconds(1000);
       },
       [](Dialect, bool) { return Ok(); }},
      {"OversizedBody",
       [](Behaviour& b, RemoteOptions& o) {
         b.kind = Kind::kOversizedBody;
         b.oversized_bytes = 64 << 10;
         o.max_body_bytes = 16 << 10;
       },
       [](Dialect, bool) {
         return Error(C::kUnavailable, "upstream response body exceeds the limit of 16384 bytes",
                      K::kBadResponse);
       }},
      {"WrongContentType", [](Behaviour& b, RemoteOptions&) { b.kind = Kind::kWrongContentType; },
       [](Dialect, bool stream) {
         return Error(C::kUnavailable,
                      absl::StrCat("upstream answered HTTP 200 with Content-Type 'text/html; "
                                   "charset=utf-8', expected application/json",
                                   stream ? " or text/event-stream" : ""),
                      K::kBadResponse);
       }},
      {"IgnoresStream", [](Behaviour& b, RemoteOptions&) { b.ignore_stream = true; },
       [](Dialect, bool) { return Ok(); }},
      {"UnknownEvent", [](Behaviour& b, RemoteOptions&) { b.unknown_event = true; },
       [](Dialect dialect, bool stream) {
         // Anthropic's stream is a closed set of events; a Gemini part of another kind is valid.
         return stream && dialect == Dialect::kAnthropic
                    ? Error(C::kUnavailable, "unknown Anthropic event type 'future_event'",
                            K::kBadResponse)
                    : Ok();
       }},
  };
}

struct Case {
  Dialect dialect;
  bool stream;
};

class UpstreamFaultsTest : public MockUpstreamTest, public ::testing::WithParamInterface<Case> {
 protected:
  std::shared_ptr<RemoteBackend> Backend(const RemoteOptions& base) {
    auto created = Create(base);
    if (created.ok()) return std::move(*created);
    ADD_FAILURE() << created.status();
    return nullptr;
  }

  // The adapter of this case's dialect (each converts to the common base on return).
  absl::StatusOr<std::shared_ptr<RemoteBackend>> Create(const RemoteOptions& base) {
    switch (GetParam().dialect) {
      case Dialect::kOpenAi:
        return OpenAiBackend::Create(base, loop_);
      case Dialect::kAnthropic: {
        AnthropicOptions options;
        static_cast<RemoteOptions&>(options) = base;
        return AnthropicBackend::Create(options, loop_);
      }
      case Dialect::kGemini: {
        RemoteOptions options = base;
        options.base_url = mock_->gemini_base_url();
        return GeminiBackend::Create(options, loop_);
      }
    }
    return absl::InternalError("unknown dialect");
  }

  RemoteOptions Options() const {
    RemoteOptions options;
    options.name = "remote";
    options.base_url = mock_->base_url();
    options.model = "mock-model";
    options.api_key = "sk-faults";
    options.stream = GetParam().stream ? StreamUpstream::kAlways : StreamUpstream::kNever;
    options.timeouts.connect = absl::Seconds(2);
    options.timeouts.first_byte = absl::Seconds(5);
    options.timeouts.idle = absl::Seconds(5);
    options.timeouts.total = absl::Seconds(10);
    options.retry.max_attempts = 1;
    return options;
  }
};

TEST_P(UpstreamFaultsTest, EveryFaultEndsInAnAnswerOrAPreciseError) {
  for (const Fault& fault : Faults()) {
    SCOPED_TRACE(fault.name);
    Behaviour behaviour;
    RemoteOptions options = Options();
    fault.setup(behaviour, options);
    mock_->SetBehaviour(behaviour);
    std::shared_ptr<RemoteBackend> backend = Backend(options);
    ASSERT_NE(backend, nullptr);
    auto sink = std::make_shared<RecordingSink>();
    ChatRequest request;
    request.messages = {{"user", "Say hello"}};
    std::unique_ptr<Call> call = backend->Start(request, sink);
    // Generous for a loaded machine; every fault here ends within about a second.
    ASSERT_TRUE(sink->WaitDone(milliseconds(15000))) << "hung";
    EXPECT_EQ(sink->contract_violations(), 0);
    const Expected expected = fault.expected(GetParam().dialect, GetParam().stream);
    EXPECT_EQ(sink->status().code(), expected.code) << sink->status();
    uint64_t errors = 0;
    for (int k = 0; k < kUpstreamErrorKinds; ++k) {
      errors += backend->stats().errors(static_cast<UpstreamErrorKind>(k));
    }
    if (expected.code == absl::StatusCode::kOk) {
      EXPECT_EQ(sink->text(), "Hello, world!");
      EXPECT_EQ(errors, 0u);
    } else {
      EXPECT_THAT(sink->status().message(), HasSubstr(expected.message));
      EXPECT_THAT(sink->status().message(), HasSubstr("target 'remote': "));
      EXPECT_EQ(backend->stats().errors(expected.kind), 1u)
          << "counted as " << UpstreamErrorKindName(expected.kind) << "?";
      EXPECT_EQ(errors, 1u);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllDialects, UpstreamFaultsTest,
    ::testing::Values(Case{Dialect::kOpenAi, true}, Case{Dialect::kOpenAi, false},
                      Case{Dialect::kAnthropic, true}, Case{Dialect::kAnthropic, false},
                      Case{Dialect::kGemini, true}, Case{Dialect::kGemini, false}),
    [](const ::testing::TestParamInfo<Case>& info) {
      const char* dialect = info.param.dialect == Dialect::kOpenAi      ? "OpenAi"
                            : info.param.dialect == Dialect::kAnthropic ? "Anthropic"
                                                                        : "Gemini";
      return absl::StrCat(dialect, info.param.stream ? "Streamed" : "Whole");
    });

}  // namespace
}  // namespace switchyard::backends
