#include "gateway/status_map.h"

#include <string>

namespace switchyard::gateway {

const WireError& MapStatus(absl::StatusCode code) {
  using C = absl::StatusCode;
  using G = grpc::StatusCode;
  // Upstream failures are 502 (bad gateway) or 504 (timeout); a policy refusal is 403.
  static const WireError kOk{200, "", G::OK, "ok"};
  static const WireError kInvalid{400, "invalid_request_error", G::INVALID_ARGUMENT,
                                  "invalid_request"};
  static const WireError kOutOfRange{400, "invalid_request_error", G::OUT_OF_RANGE,
                                     "invalid_request"};
  static const WireError kPrecondition{400, "invalid_request_error", G::FAILED_PRECONDITION,
                                       "invalid_request"};
  static const WireError kUnauthenticated{401, "authentication_error", G::UNAUTHENTICATED,
                                          "unauthenticated"};
  static const WireError kDenied{403, "permission_error", G::PERMISSION_DENIED, "denied"};
  static const WireError kNotFound{404, "not_found_error", G::NOT_FOUND, "not_found"};
  static const WireError kExhausted{429, "rate_limit_error", G::RESOURCE_EXHAUSTED,
                                    "rate_limited"};
  static const WireError kCancelled{499, "cancelled", G::CANCELLED, "cancelled"};
  static const WireError kUnimplemented{501, "not_implemented", G::UNIMPLEMENTED,
                                        "unimplemented"};
  static const WireError kUnavailable{502, "upstream_error", G::UNAVAILABLE, "upstream_error"};
  static const WireError kDeadline{504, "timeout_error", G::DEADLINE_EXCEEDED, "timeout"};
  // A local model that is not loaded and cannot be now (memory budget, broken file): retry later.
  static const WireError kModelUnavailable{503, "service_unavailable", G::UNAVAILABLE,
                                           "model_unavailable"};
  static const WireError kInternal{500, "server_error", G::INTERNAL, "internal_error"};
  switch (code) {
    case C::kOk:
      return kOk;
    case C::kInvalidArgument:
      return kInvalid;
    case C::kOutOfRange:
      return kOutOfRange;
    case C::kFailedPrecondition:
      return kPrecondition;
    case C::kUnauthenticated:
      return kUnauthenticated;
    case C::kPermissionDenied:
      return kDenied;
    case C::kNotFound:
      return kNotFound;
    case C::kResourceExhausted:
      return kExhausted;
    case C::kCancelled:
      return kCancelled;
    case C::kUnimplemented:
      return kUnimplemented;
    case C::kUnavailable:
      return kUnavailable;
    case C::kDeadlineExceeded:
      return kDeadline;
    case C::kAborted:
      return kModelUnavailable;
    default:
      return kInternal;
  }
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(MapStatus(status.code()).grpc_code, std::string(status.message()));
}

}  // namespace switchyard::gateway
