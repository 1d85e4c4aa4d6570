// The routing decision as JSON, one shape for every place that explains a decision:
// POST /v1/route/explain and `switchyard classify`. Findings carry types and spans, never the
// sensitive values.
#ifndef SWITCHYARD_GATEWAY_DECISION_JSON_H_
#define SWITCHYARD_GATEWAY_DECISION_JSON_H_

#include <string>

#include "gateway/gateway.h"

namespace switchyard::gateway {

// {"target","rule","locality","denied","reason","policy_version",
//  "sensitivity":{"level","findings":[{"type","message","start","end","confidence"}]}}
std::string DecisionJson(const Routed& routed);

// Comma-separated distinct finding types, for the x-switchyard-findings header.
std::string FindingTypes(const policies::Decision& decision);

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_DECISION_JSON_H_
