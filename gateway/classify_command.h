// `switchyard classify`: decides recorded or hand-written requests offline. Reads JSON Lines
// ({"messages":[...]} or {"text":"..."}, optional "model" and "metadata") and writes one decision
// per line in DecisionJson's shape. Nothing is sent anywhere and no model is loaded.
#ifndef SWITCHYARD_GATEWAY_CLASSIFY_COMMAND_H_
#define SWITCHYARD_GATEWAY_CLASSIFY_COMMAND_H_

#include <iosfwd>

#include "gateway/config.h"

namespace switchyard::gateway {

// Returns the exit code: 0 when every line was decided, 1 when some line was invalid (that line
// gets {"line": N, "error": "..."} on `out` and the rest are still decided).
int RunClassify(const Config& config, std::istream& in, std::ostream& out);

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_CLASSIFY_COMMAND_H_
