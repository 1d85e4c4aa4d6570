// What the gateway knows about one request once it has ended: the input to metrics, budgets and
// the decision log. Never holds credentials; holds prompt text only when the decision log is
// configured to record it (`decision_log.include_prompts`).
#ifndef SWITCHYARD_GATEWAY_REQUEST_RECORD_H_
#define SWITCHYARD_GATEWAY_REQUEST_RECORD_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
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
  std::string edge;  // how it arrived: "openai", "anthropic" or "grpc"
  // Refused before dispatch (bad input, unknown model, denied, unauthenticated, over budget):
  // metered as a rejection, not as a served request.
  bool rejected = false;

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

  // The request's inputs to the policy that are not prompt text, so a decision can be re-made
  // later (`switchyard replay`).
  std::string requested_model;
  std::map<std::string, std::string> metadata;
  std::optional<int32_t> max_tokens;
  int64_t estimated_prompt_tokens = 0;
  double estimated_usd = 0;  // the decision's estimate on its chosen target
  double difficulty_score = 0;
  std::string difficulty_tier;
  // The messages, only when the decision log records prompts; else empty.
  std::vector<backends::Message> messages;
  // Time spent in the gateway outside the backend: from the edge having the whole request to the
  // backend's start (auth, parsing, classification, budgets), plus the edge's encoding of each
  // streamed delta.
  double gateway_overhead_seconds = 0;
};

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_REQUEST_RECORD_H_
