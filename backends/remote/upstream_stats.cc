#include "backends/remote/upstream_stats.h"

#include <algorithm>
#include <cmath>

namespace switchyard::backends {

void RetryBudget::RequestStarted() {
  absl::MutexLock lock(&mu_);
  ++active_;
}

bool RetryBudget::TryStartRetry() {
  absl::MutexLock lock(&mu_);
  const auto share = static_cast<int64_t>(
      std::floor(static_cast<double>(active_) * options_.percent / 100.0));
  const int64_t limit = std::max<int64_t>(options_.min_concurrency, share);
  if (retrying_ + 1 > limit) return false;
  ++retrying_;
  return true;
}

void RetryBudget::RequestEnded(bool retrying) {
  absl::MutexLock lock(&mu_);
  --active_;
  if (retrying) --retrying_;
}

int64_t RetryBudget::active() const {
  absl::MutexLock lock(&mu_);
  return active_;
}

int64_t RetryBudget::retries_in_flight() const {
  absl::MutexLock lock(&mu_);
  return retrying_;
}

std::string_view UpstreamErrorKindName(UpstreamErrorKind kind) {
  switch (kind) {
    case UpstreamErrorKind::kConnect:
      return "connect";
    case UpstreamErrorKind::kTimeout:
      return "timeout";
    case UpstreamErrorKind::kRateLimited:
      return "rate_limited";
    case UpstreamErrorKind::kServerError:
      return "server_error";
    case UpstreamErrorKind::kClientError:
      return "client_error";
    case UpstreamErrorKind::kBadResponse:
      return "bad_response";
  }
  return "server_error";
}

}  // namespace switchyard::backends
