// The one table mapping internal status codes to HTTP statuses, OpenAI error types and gRPC
// codes. Every wire error the gateway sends goes through it.
#ifndef SWITCHYARD_GATEWAY_STATUS_MAP_H_
#define SWITCHYARD_GATEWAY_STATUS_MAP_H_

#include <string_view>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace switchyard::gateway {

struct WireError {
  int http_status;
  std::string_view openai_type;  // OpenAI error "type"
  grpc::StatusCode grpc_code;
  std::string_view outcome;  // metric label: "client_error", "denied", "upstream_error", ...
};

const WireError& MapStatus(absl::StatusCode code);

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_STATUS_MAP_H_
