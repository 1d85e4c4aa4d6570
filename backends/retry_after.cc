#include "backends/retry_after.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace switchyard::backends {
namespace {

// absl's own string_view type may differ from std's (see policies/absl_compat.h).
absl::string_view PayloadUrl() {
  return absl::string_view(kRetryAfterPayload.data(), kRetryAfterPayload.size());
}

}  // namespace

absl::Status WithRetryAfter(absl::Status status, double seconds) {
  // An upstream's Retry-After can be any number; a billion seconds keeps the cast defined.
  seconds = std::min(std::max(1.0, seconds), 1e9);
  status.SetPayload(PayloadUrl(),
                    absl::Cord(absl::StrCat(static_cast<int64_t>(std::ceil(seconds)))));
  return status;
}

std::optional<int64_t> RetryAfterSeconds(const absl::Status& status) {
  auto payload = status.GetPayload(PayloadUrl());
  int64_t seconds = 0;
  if (!payload || !absl::SimpleAtoi(std::string(*payload), &seconds)) return std::nullopt;
  return seconds;
}

}  // namespace switchyard::backends
