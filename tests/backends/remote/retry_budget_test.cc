// The retry budget: on its own, and against a mock upstream that fails many concurrent requests
// at once, counted request by request at the mock.
#include <stdlib.h>

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "backends/remote/openai_backend.h"
#include "backends/remote/upstream_stats.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/backends/remote/backend_fixture.h"
#include "tests/mocks/mock_upstream.h"

namespace switchyard::backends {
namespace {

using ::switchyard::mocks::Behaviour;
using ::testing::HasSubstr;
using std::chrono::milliseconds;

TEST(RetryBudgetTest, AdmitsTheLargerOfTheMinimumAndThePercentOfActiveRequests) {
  struct Row {
    int active;
    int admitted;
  };
  // max(3, floor(20% of active)).
  for (const Row& row : {Row{1, 3}, Row{10, 3}, Row{19, 3}, Row{20, 4}, Row{30, 6}, Row{100, 20}}) {
    RetryBudget budget;
    for (int i = 0; i < row.active; ++i) budget.RequestStarted();
    int admitted = 0;
    while (admitted < row.active && budget.TryStartRetry()) ++admitted;
    EXPECT_EQ(admitted, std::min(row.admitted, row.active)) << row.active << " active";
    EXPECT_EQ(budget.retries_in_flight(), admitted);
  }
}

TEST(RetryBudgetTest, ARetryThatEndsFreesItsPlace) {
  RetryBudget budget(RetryBudgetOptions{.percent = 50, .min_concurrency = 1});
  budget.RequestStarted();
  budget.RequestStarted();
  ASSERT_TRUE(budget.TryStartRetry());
  EXPECT_FALSE(budget.TryStartRetry());
  budget.RequestEnded(/*retrying=*/true);
  EXPECT_EQ(budget.active(), 1);
  EXPECT_EQ(budget.retries_in_flight(), 0);
  EXPECT_TRUE(budget.TryStartRetry());
}

using RetryBudgetUpstreamTest = MockUpstreamTest;

TEST_F(RetryBudgetUpstreamTest, ManyConcurrentFailuresRetryOnlyWithinTheBudget) {
  constexpr int kRequests = 30;
  // 20% of 30 active requests.
  constexpr int kRetries = 6;
  // Every first attempt fails with 503, but only once all of them are in flight; any later
  // request (a retry) hangs, so retries in flight never drop while the budget is being decided.
  Behaviour failing;
  failing.kind = Behaviour::Kind::kHttpError;
  failing.http_status = 503;
  failing.error_message = "overloaded";
  failing.hold_until_requests = kRequests;
  for (int i = 0; i < kRequests; ++i) mock_->EnqueueBehaviour(failing);
  Behaviour hanging;
  hanging.kind = Behaviour::Kind::kNeverAnswer;
  mock_->SetBehaviour(hanging);

  OpenAiOptions options;
  options.name = "busy";
  options.base_url = mock_->base_url();
  options.model = "m";
  options.stream = StreamUpstream::kNever;
  options.timeouts.first_byte = absl::Seconds(60);
  options.retry.max_attempts = 3;
  options.retry.initial_backoff = absl::Milliseconds(1);
  options.retry.max_backoff = absl::Milliseconds(2);
  auto backend = OpenAiBackend::Create(options, loop_);
  ASSERT_TRUE(backend.ok()) << backend.status();

  std::vector<std::shared_ptr<RecordingSink>> sinks;
  std::vector<std::unique_ptr<Call>> calls;
  ChatRequest request;
  request.messages = {{"user", "hi"}};
  for (int i = 0; i < kRequests; ++i) {
    sinks.push_back(std::make_shared<RecordingSink>());
    calls.push_back((*backend)->Start(request, sinks.back()));
  }

  auto finished = [&] {
    int done = 0;
    for (const auto& sink : sinks) done += sink->done() ? 1 : 0;
    return done;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (finished() < kRequests - kRetries && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  ASSERT_TRUE(mock_->WaitForRequests(kRequests + kRetries, milliseconds(10000)));
  // Nothing more happens: the retrying requests hang at the mock and the rest gave up.
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(finished(), kRequests - kRetries);
  EXPECT_EQ(mock_->request_count(), static_cast<size_t>(kRequests + kRetries));
  // The refused ones end with the upstream's own error, so a fallback can take over.
  for (const auto& sink : sinks) {
    if (!sink->done()) continue;
    EXPECT_EQ(sink->status().code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(sink->status().message(),
                HasSubstr("target 'busy': upstream returned HTTP 503: overloaded"));
    EXPECT_EQ(sink->completion().retries, 0);
  }
  EXPECT_EQ((*backend)->stats().retries(), static_cast<uint64_t>(kRetries));
  EXPECT_EQ((*backend)->stats().retry_budget_exhausted(),
            static_cast<uint64_t>(kRequests - kRetries));
  EXPECT_EQ((*backend)->stats().errors(UpstreamErrorKind::kServerError),
            static_cast<uint64_t>(kRequests));
  EXPECT_EQ((*backend)->retry_budget().active(), kRetries);
  EXPECT_EQ((*backend)->retry_budget().retries_in_flight(), kRetries);

  for (auto& call : calls) call->Cancel();
  EXPECT_EQ((*backend)->retry_budget().active(), 0);
  EXPECT_EQ((*backend)->retry_budget().retries_in_flight(), 0);
}

}  // namespace
}  // namespace switchyard::backends
