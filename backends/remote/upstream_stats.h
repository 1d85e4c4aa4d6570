// Per-target bookkeeping of the remote transport: the retry budget that keeps retries from
// multiplying an upstream's overload, and the counters the gateway exports as metrics.
//
// Threads: every method is thread-safe and cheap; the gateway reads the counters at scrape time.
#ifndef SWITCHYARD_BACKENDS_REMOTE_UPSTREAM_STATS_H_
#define SWITCHYARD_BACKENDS_REMOTE_UPSTREAM_STATS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace switchyard::backends {

// Envoy's retry budget: at any moment at most max(min_concurrency, percent% of the target's active
// requests) of them may be retrying. Without it, a target that starts failing under load sees
// every request come back `max_attempts` times, multiplying the load that made it fail.
struct RetryBudgetOptions {
  double percent = 20;
  int min_concurrency = 3;
};

class RetryBudget {
 public:
  explicit RetryBudget(RetryBudgetOptions options = {}) : options_(options) {}

  // A client request to the target began (counted once, whatever its attempts).
  void RequestStarted() ABSL_LOCKS_EXCLUDED(mu_);
  // Whether the request may turn into a retrying one: true counts it as a retry in flight until
  // RequestEnded(true). A request asks once; its later retries are already counted.
  bool TryStartRetry() ABSL_LOCKS_EXCLUDED(mu_);
  // The request ended; `retrying` when TryStartRetry admitted it.
  void RequestEnded(bool retrying) ABSL_LOCKS_EXCLUDED(mu_);

  int64_t active() const ABSL_LOCKS_EXCLUDED(mu_);
  int64_t retries_in_flight() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const RetryBudgetOptions options_;
  mutable absl::Mutex mu_;
  int64_t active_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t retrying_ ABSL_GUARDED_BY(mu_) = 0;
};

// Why an upstream attempt failed; a small fixed set, so it can be a metric label.
enum class UpstreamErrorKind {
  kConnect,       // connection refused or reset, DNS, TLS, a stream cut off
  kTimeout,       // connect, first byte, idle or total timeout
  kRateLimited,   // HTTP 429
  kServerError,   // HTTP 5xx, or an error event inside a stream
  kClientError,   // other HTTP 4xx (the request, our key or our config is at fault)
  kBadResponse,   // not the wire format asked for: bad JSON or SSE, wrong type, too large
};
inline constexpr int kUpstreamErrorKinds = 6;
std::string_view UpstreamErrorKindName(UpstreamErrorKind kind);

// Monotonic counters of one target's upstream traffic.
class UpstreamStats {
 public:
  void AddRetry() { retries_.fetch_add(1, std::memory_order_relaxed); }
  void AddRetryBudgetExhausted() { budget_exhausted_.fetch_add(1, std::memory_order_relaxed); }
  void AddError(UpstreamErrorKind kind) {
    errors_[static_cast<int>(kind)].fetch_add(1, std::memory_order_relaxed);
  }
  // An answer carried a token count below zero or over kMaxTokenCount, which was ignored.
  void AddImplausibleUsage() { implausible_usage_.fetch_add(1, std::memory_order_relaxed); }

  uint64_t retries() const { return retries_.load(std::memory_order_relaxed); }
  uint64_t retry_budget_exhausted() const {
    return budget_exhausted_.load(std::memory_order_relaxed);
  }
  uint64_t errors(UpstreamErrorKind kind) const {
    return errors_[static_cast<int>(kind)].load(std::memory_order_relaxed);
  }
  uint64_t implausible_usage() const { return implausible_usage_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> retries_{0};
  std::atomic<uint64_t> budget_exhausted_{0};
  std::array<std::atomic<uint64_t>, kUpstreamErrorKinds> errors_{};
  std::atomic<uint64_t> implausible_usage_{0};
};

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_REMOTE_UPSTREAM_STATS_H_
