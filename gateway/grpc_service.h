// The gRPC API (proto/switchyard/v1/switchyard.proto) on the callback API: one reactor per call
// holds all its state; every call finishes exactly once, also when the client cancels, and a
// cancelled call cancels its backend work at once.
#ifndef SWITCHYARD_GATEWAY_GRPC_SERVICE_H_
#define SWITCHYARD_GATEWAY_GRPC_SERVICE_H_

#include "absl/status/statusor.h"
#include "gateway/gateway.h"
#include "switchyard/v1/switchyard.grpc.pb.h"

namespace switchyard::gateway {

// Converts and validates a proto request. InvalidArgument names the offending field.
absl::StatusOr<InboundRequest> FromProto(const v1::ChatRequest& request);

class GrpcService final : public v1::Switchyard::CallbackService {
 public:
  explicit GrpcService(Gateway& gateway) : gateway_(gateway) {}

  grpc::ServerUnaryReactor* Chat(grpc::CallbackServerContext* context,
                                 const v1::ChatRequest* request,
                                 v1::ChatResponse* response) override;
  grpc::ServerWriteReactor<v1::ChatChunk>* StreamChat(grpc::CallbackServerContext* context,
                                                      const v1::ChatRequest* request) override;
  grpc::ServerUnaryReactor* Explain(grpc::CallbackServerContext* context,
                                    const v1::ChatRequest* request,
                                    v1::ExplainResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;

 private:
  Gateway& gateway_;
};

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_GRPC_SERVICE_H_
