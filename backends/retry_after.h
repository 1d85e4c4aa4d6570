// How long a client should wait before trying again, carried on an absl::Status as a payload:
// set by the gateway's own rate and concurrency limits and by a remote backend whose upstream
// answered 429 or 503 with Retry-After; the edges send it as the HTTP Retry-After header and the
// gRPC trailing metadata `retry-after`. Here, below both, so there is one definition.
#ifndef SWITCHYARD_BACKENDS_RETRY_AFTER_H_
#define SWITCHYARD_BACKENDS_RETRY_AFTER_H_

#include <cstdint>
#include <optional>
#include <string_view>

#include "absl/status/status.h"

namespace switchyard::backends {

inline constexpr std::string_view kRetryAfterPayload = "type.switchyard.dev/retry-after";
// `status` with the wait attached, in whole seconds rounded up, from 1 to 10^9.
absl::Status WithRetryAfter(absl::Status status, double seconds);
std::optional<int64_t> RetryAfterSeconds(const absl::Status& status);

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_RETRY_AFTER_H_
