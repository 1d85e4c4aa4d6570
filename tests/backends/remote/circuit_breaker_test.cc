// CircuitBreaker transitions on a fake clock, and the breaker in front of a real remote backend.
#include "backends/remote/circuit_breaker.h"

#include <stdlib.h>

#include <memory>

#include "backends/remote/openai_backend.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/backends/remote/recording_sink.h"
#include "tests/mocks/mock_upstream.h"

namespace switchyard::backends {
namespace {

using ::switchyard::mocks::Behaviour;
using ::switchyard::mocks::MockUpstream;
using ::testing::HasSubstr;

class FakeClock {
 public:
  absl::Time now() const { return now_; }
  void Advance(absl::Duration d) { now_ += d; }

 private:
  absl::Time now_ = absl::FromUnixSeconds(1000000);
};

CircuitBreakerOptions Options() {
  CircuitBreakerOptions options;
  options.consecutive_failures = 3;
  options.failure_rate = 0.5;
  options.window = 10;
  options.min_requests = 6;
  options.base_ejection = absl::Seconds(10);
  options.max_ejection = absl::Seconds(35);
  return options;
}

TEST(CircuitBreakerTest, OpensAfterConsecutiveFailuresAndFailsFast) {
  FakeClock clock;
  CircuitBreaker breaker(Options(), [&] { return clock.now(); });
  EXPECT_EQ(breaker.state(), BreakerState::kClosed);
  breaker.RecordFailure();
  breaker.RecordFailure();
  breaker.RecordSuccess();  // resets the run
  breaker.RecordFailure();
  breaker.RecordFailure();
  EXPECT_TRUE(breaker.Allow());
  breaker.RecordFailure();
  EXPECT_EQ(breaker.state(), BreakerState::kOpen);
  EXPECT_EQ(breaker.ejections(), 1);
  EXPECT_FALSE(breaker.Allow());
  clock.Advance(absl::Seconds(9));
  EXPECT_FALSE(breaker.Allow());
}

TEST(CircuitBreakerTest, OpensOnTheFailureRate) {
  FakeClock clock;
  CircuitBreaker breaker(Options(), [&] { return clock.now(); });
  // Alternating: never 3 in a row; the 6th outcome (min_requests) makes half of them failures.
  for (int i = 0; i < 5; ++i) {
    (i % 2 == 1 ? breaker.RecordFailure() : breaker.RecordSuccess());
    EXPECT_EQ(breaker.state(), BreakerState::kClosed) << i;
  }
  breaker.RecordFailure();
  EXPECT_EQ(breaker.state(), BreakerState::kOpen);
}

TEST(CircuitBreakerTest, HalfOpenLetsOneProbeThroughAndItsSuccessCloses) {
  FakeClock clock;
  CircuitBreaker breaker(Options(), [&] { return clock.now(); });
  for (int i = 0; i < 3; ++i) breaker.RecordFailure();
  clock.Advance(absl::Seconds(10));
  EXPECT_EQ(breaker.state(), BreakerState::kHalfOpen);
  EXPECT_TRUE(breaker.Allow());
  EXPECT_FALSE(breaker.Allow()) << "only one probe at a time";
  breaker.RecordSuccess();
  EXPECT_EQ(breaker.state(), BreakerState::kClosed);
  EXPECT_TRUE(breaker.Allow());
  EXPECT_TRUE(breaker.Allow());
}

TEST(CircuitBreakerTest, FailedProbesEjectForLongerUpToTheCap) {
  FakeClock clock;
  CircuitBreaker breaker(Options(), [&] { return clock.now(); });
  for (int i = 0; i < 3; ++i) breaker.RecordFailure();
  // Ejections: 10 s, then 20 s, then 35 s (40 capped), then 35 s.
  for (absl::Duration ejection : {absl::Seconds(10), absl::Seconds(20), absl::Seconds(35),
                                  absl::Seconds(35)}) {
    clock.Advance(ejection - absl::Seconds(1));
    EXPECT_EQ(breaker.state(), BreakerState::kOpen) << ejection;
    clock.Advance(absl::Seconds(1));
    ASSERT_TRUE(breaker.Allow()) << ejection;
    breaker.RecordFailure();
  }
  EXPECT_EQ(breaker.ejections(), 5);
  // A successful probe resets the ejection length.
  clock.Advance(absl::Seconds(35));
  ASSERT_TRUE(breaker.Allow());
  breaker.RecordSuccess();
  for (int i = 0; i < 3; ++i) breaker.RecordFailure();
  clock.Advance(absl::Seconds(10));
  EXPECT_EQ(breaker.state(), BreakerState::kHalfOpen);
}

TEST(CircuitBreakerTest, AProbeThatNeverReportsIsReplaced) {
  FakeClock clock;
  CircuitBreaker breaker(Options(), [&] { return clock.now(); });
  for (int i = 0; i < 3; ++i) breaker.RecordFailure();
  clock.Advance(absl::Seconds(10));
  EXPECT_TRUE(breaker.Allow());
  clock.Advance(absl::Seconds(9));
  EXPECT_FALSE(breaker.Allow());
  clock.Advance(absl::Seconds(1));
  EXPECT_TRUE(breaker.Allow());
}

TEST(CircuitBreakerBackendTest, EjectedTargetFailsFastWithoutCallingTheUpstream) {
  setenv("NO_PROXY", "127.0.0.1,localhost", 1);
  setenv("no_proxy", "127.0.0.1,localhost", 1);
  auto mock = MockUpstream::Start();
  ASSERT_TRUE(mock.ok()) << mock.status();
  auto loop = CurlLoop::Create();
  ASSERT_TRUE(loop.ok()) << loop.status();
  OpenAiOptions options;
  options.base_url = (*mock)->base_url();
  options.model = "m";
  options.retry.max_attempts = 1;
  options.breaker.consecutive_failures = 2;
  options.breaker.base_ejection = absl::Seconds(60);
  auto backend = OpenAiBackend::Create(options, *loop);
  ASSERT_TRUE(backend.ok()) << backend.status();
  Behaviour failing;
  failing.kind = Behaviour::Kind::kHttpError;
  failing.http_status = 503;
  (*mock)->SetBehaviour(failing);
  auto run = [&] {
    auto sink = std::make_shared<RecordingSink>();
    ChatRequest request;
    request.messages = {{"user", "hi"}};
    std::unique_ptr<Call> call = (*backend)->Start(request, sink);
    EXPECT_TRUE(sink->WaitDone());
    return sink->status();
  };
  // Client errors are no outcome for the breaker.
  Behaviour bad_request = failing;
  bad_request.http_status = 400;
  (*mock)->EnqueueBehaviour(bad_request);
  (*mock)->EnqueueBehaviour(bad_request);
  EXPECT_EQ(run().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(run().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*backend)->Available());
  EXPECT_EQ(run().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE((*backend)->Available());
  EXPECT_EQ(run().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE((*backend)->Available());
  EXPECT_EQ((*backend)->breaker().state(), BreakerState::kOpen);
  const absl::Status ejected = run();
  EXPECT_EQ(ejected.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(ejected.message(), HasSubstr("circuit breaker"));
  EXPECT_EQ((*mock)->request_count(), 4u);
}

}  // namespace
}  // namespace switchyard::backends
