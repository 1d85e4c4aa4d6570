#include "backends/remote/circuit_breaker.h"

#include <algorithm>
#include <utility>

namespace switchyard::backends {

std::string_view BreakerStateName(BreakerState state) {
  switch (state) {
    case BreakerState::kClosed:
      return "closed";
    case BreakerState::kOpen:
      return "open";
    case BreakerState::kHalfOpen:
      return "half_open";
  }
  return "closed";
}

CircuitBreaker::CircuitBreaker(CircuitBreakerOptions options, std::function<absl::Time()> now)
    : options_(options), now_(std::move(now)) {}

BreakerState CircuitBreaker::StateLocked(absl::Time now) const {
  if (!open_) return BreakerState::kClosed;
  return now < open_until_ ? BreakerState::kOpen : BreakerState::kHalfOpen;
}

BreakerState CircuitBreaker::state() const {
  absl::MutexLock lock(&mu_);
  return StateLocked(now_());
}

int64_t CircuitBreaker::ejections() const {
  absl::MutexLock lock(&mu_);
  return ejections_;
}

bool CircuitBreaker::Allow() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = now_();
  switch (StateLocked(now)) {
    case BreakerState::kClosed:
      return true;
    case BreakerState::kOpen:
      return false;
    case BreakerState::kHalfOpen:
      // One probe at a time; a probe that never reported (cancelled) is replaced after a while.
      if (probe_in_flight_ && now - probe_started_ < options_.base_ejection) return false;
      probe_in_flight_ = true;
      probe_started_ = now;
      return true;
  }
  return true;
}

void CircuitBreaker::RecordSuccess() {
  absl::MutexLock lock(&mu_);
  if (open_) {
    // Only a probe can succeed while open (requests admitted before the ejection may also land
    // here; either way the upstream answered).
    open_ = false;
    probe_in_flight_ = false;
    consecutive_ejections_ = 0;
    recent_.clear();
    recent_failures_ = 0;
  }
  consecutive_failures_ = 0;
  recent_.push_back(false);
  if (static_cast<int>(recent_.size()) > options_.window) {
    if (recent_.front()) --recent_failures_;
    recent_.pop_front();
  }
}

void CircuitBreaker::RecordFailure() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = now_();
  if (open_) {
    // A failed probe (or a straggler): eject again, longer, unless already ejected.
    if (StateLocked(now) == BreakerState::kHalfOpen) OpenLocked(now);
    return;
  }
  ++consecutive_failures_;
  recent_.push_back(true);
  ++recent_failures_;
  if (static_cast<int>(recent_.size()) > options_.window) {
    if (recent_.front()) --recent_failures_;
    recent_.pop_front();
  }
  const bool too_many_in_a_row =
      options_.consecutive_failures > 0 && consecutive_failures_ >= options_.consecutive_failures;
  const bool rate_too_high =
      options_.failure_rate > 0 && static_cast<int>(recent_.size()) >= options_.min_requests &&
      recent_failures_ >= options_.failure_rate * static_cast<double>(recent_.size());
  if (too_many_in_a_row || rate_too_high) OpenLocked(now);
}

void CircuitBreaker::OpenLocked(absl::Time now) {
  absl::Duration ejection = options_.base_ejection;
  for (int i = 0; i < consecutive_ejections_ && ejection < options_.max_ejection; ++i) {
    ejection *= 2;
  }
  ejection = std::min(ejection, options_.max_ejection);
  open_ = true;
  open_until_ = now + ejection;
  probe_in_flight_ = false;
  ++consecutive_ejections_;
  ++ejections_;
  consecutive_failures_ = 0;
  recent_.clear();
  recent_failures_ = 0;
}

}  // namespace switchyard::backends
