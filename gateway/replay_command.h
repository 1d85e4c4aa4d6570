// `switchyard replay`: re-decides the requests of a decision log under a candidate config, without
// sending anything, and reports how routing, sensitivity outcomes and estimated spend would change.
#ifndef SWITCHYARD_GATEWAY_REPLAY_COMMAND_H_
#define SWITCHYARD_GATEWAY_REPLAY_COMMAND_H_

#include <ostream>
#include <string>

#include "gateway/config.h"

namespace switchyard::gateway {

struct ReplayOptions {
  std::string log_path;
  bool json = false;
  int examples = 10;  // changed decisions to list
};

// Records that carry their messages (`decision_log.include_prompts`) are classified in full;
// the others from their recorded features (finding types, estimated tokens, difficulty, requested
// model, metadata), and the report names the rules that could not be re-evaluated. Records of
// requests refused before the policy ran (invalid body, ...) are counted, not re-decided.
// Returns 0, or 2 when the log cannot be read.
int RunReplay(const Config& candidate, const ReplayOptions& options, std::ostream& out,
              std::ostream& err);

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_REPLAY_COMMAND_H_
