// The routing decision on the wire, one shape for every place that explains a decision:
// JSON for POST /v1/route/explain and `switchyard classify`, protobuf for gRPC (Chat, StreamChat
// and Explain). Both carry the same facts: target and fallbacks, rule, reason, level (before and
// after redaction), findings (type and span, never values), the estimated cost on every target,
// difficulty, and why every other target was rejected.
#ifndef SWITCHYARD_GATEWAY_DECISION_JSON_H_
#define SWITCHYARD_GATEWAY_DECISION_JSON_H_

#include <string>

#include "gateway/gateway.h"
#include "switchyard/v1/switchyard.pb.h"

namespace switchyard::gateway {

// {"target","targets":[...],"rule","locality","denied","reason","policy_version","redact",
//  "sensitivity":{"level","redacted_level",
//                 "findings":[{"type","message","start","end","confidence","redacted"}]},
//  "difficulty":{"score","tier","features":{...}},
//  "cost":{"estimated_usd","prompt_tokens","prompt_tokens_exact","completion_tokens",
//          "targets":[{"target","estimated_usd","prompt_tokens","prompt_tokens_exact",
//                      "completion_tokens"}]},
//  "rejected":[{"target","reason"}]}
std::string DecisionJson(const Routed& routed);

// The same facts as DecisionJson, as the gRPC Decision message.
void DecisionToProto(const Routed& routed, v1::Decision& out);

// Comma-separated distinct finding types, for the x-switchyard-findings header.
std::string FindingTypes(const policies::Decision& decision);

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_DECISION_JSON_H_
