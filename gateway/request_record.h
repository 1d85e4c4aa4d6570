// What the gateway knows about one request once it has ended: the input to metrics, budgets and
// the decision log. Never holds prompt text or credentials.
#ifndef SWITCHYARD_GATEWAY_REQUEST_RECORD_H_
#define SWITCHYARD_GATEWAY_REQUEST_RECORD_H_

#include <chrono>
#include <string>
#include <vector>

#include "backends/backend.h"

namespace switchyard::gateway {

struct RequestRecord {
  std::chrono::system_clock::time_point time;  // when the request was admitted
  std::string request_id;
  std::string tenant;    // "" when the request carried no authenticated tenant
  std::string key_name;  // the API key's configured name, never the key itself
  bool stream = false;

  // The decision ("" rule when the request was refused before classification).
  std::string policy_version;
  std::string rule;
  std::string level;
  std::vector<std::string> finding_types;
  std::string target;    // the decision's first choice
  std::string locality;  // "local" or "remote"; "" when nothing was sent
  bool denied = false;

  std::string served_by;  // the target that produced the answer (a fallback may differ from `target`)
  backends::Usage usage;
  double cost_usd = 0;     // actual: usage priced at the serving target's prices
  double savings_usd = 0;  // the same usage on the reference frontier target, minus cost_usd
  std::string outcome;  // "ok", "cancelled", or the status table's outcome
  double duration_seconds = 0;
  double ttft_seconds = -1;  // first delta after admission; -1 when none was sent
};

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_REQUEST_RECORD_H_
