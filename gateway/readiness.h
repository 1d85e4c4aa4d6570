// GET /readyz: whether the gateway can serve every start-up model now, with each target's state.
// /healthz stays a liveness check (the process answers); readiness waits for the models.
#ifndef SWITCHYARD_GATEWAY_READINESS_H_
#define SWITCHYARD_GATEWAY_READINESS_H_

#include <string>

#include "gateway/gateway.h"

namespace switchyard::gateway {

struct Readiness {
  // Every local target loaded at start is loaded (or was, and idled out): its last load did not
  // fail. On-demand and remote targets do not hold readiness back.
  bool ready = false;
  // {"status":"ready"|"not_ready","targets":{"<name>":{"kind":..,"state":..,...}}}
  std::string json;
};

Readiness CheckReadiness(const Runtime& runtime);

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_READINESS_H_
