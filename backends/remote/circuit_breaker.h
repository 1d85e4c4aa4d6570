// A circuit breaker for one remote target: after too many failures it ejects the target for a
// while, so requests fail fast (or a dispatcher falls back) instead of waiting on a sick upstream.
//
// Closed: requests flow; the breaker opens after `consecutive_failures` failures in a row, or
// when at least `min_requests` of the last `window` outcomes are known and `failure_rate` of them
// failed. Open: Allow() says no until the ejection ends; ejections grow (base, 2x, 4x, ... capped
// at max_ejection) while probes keep failing. Half-open: one probe request is let through (another
// only if the first reports nothing within base_ejection, e.g. it was cancelled); its success
// closes the breaker and resets the ejection length, its failure opens it again, longer.
//
// Only upstream health counts: the transport reports kUnavailable and kDeadlineExceeded as
// failures; client errors and cancellations are no outcome. Thread-safe.
#ifndef SWITCHYARD_BACKENDS_REMOTE_CIRCUIT_BREAKER_H_
#define SWITCHYARD_BACKENDS_REMOTE_CIRCUIT_BREAKER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace switchyard::backends {

struct CircuitBreakerOptions {
  // 0 disables the consecutive-failure trigger.
  int consecutive_failures = 5;
  // 0 disables the rate trigger.
  double failure_rate = 0.5;
  int window = 20;
  int min_requests = 10;
  absl::Duration base_ejection = absl::Seconds(5);
  absl::Duration max_ejection = absl::Seconds(300);
};

enum class BreakerState { kClosed, kOpen, kHalfOpen };

std::string_view BreakerStateName(BreakerState state);

class CircuitBreaker {
 public:
  explicit CircuitBreaker(CircuitBreakerOptions options,
                          std::function<absl::Time()> now = [] { return absl::Now(); });

  // Whether a request may go upstream now. In half-open state a true answer makes the caller the
  // probe, which must report its outcome.
  bool Allow();
  void RecordSuccess();
  void RecordFailure();

  // The state as of now (an open breaker whose ejection ended reads as half-open).
  BreakerState state() const;
  // How many times the breaker opened; for metrics and tests.
  int64_t ejections() const;

 private:
  BreakerState StateLocked(absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OpenLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const CircuitBreakerOptions options_;
  const std::function<absl::Time()> now_;
  mutable absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time open_until_ ABSL_GUARDED_BY(mu_);
  // Ejections in a row without a successful probe; sets the next ejection's length.
  int consecutive_ejections_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t ejections_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time probe_started_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool probe_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  int consecutive_failures_ ABSL_GUARDED_BY(mu_) = 0;
  // Recent outcomes, true = failure; at most options_.window.
  std::deque<bool> recent_ ABSL_GUARDED_BY(mu_);
  int recent_failures_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_REMOTE_CIRCUIT_BREAKER_H_
