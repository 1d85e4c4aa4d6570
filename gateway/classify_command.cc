#include "gateway/classify_command.h"

#include <istream>
#include <ostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gateway/decision_json.h"
#include "gateway/openai_codec.h"
#include "nlohmann/json.hpp"
#include "policies/absl_compat.h"

namespace switchyard::gateway {
namespace {

// {"text": "..."} is shorthand for one user message.
absl::StatusOr<InboundRequest> ParseLine(const std::string& line) {
  nlohmann::json parsed = nlohmann::json::parse(line, nullptr, false);
  if (!parsed.is_discarded() && parsed.is_object() && parsed.contains("text") &&
      !parsed.contains("messages")) {
    if (!parsed["text"].is_string()) return absl::InvalidArgumentError("'text' must be a string");
    parsed["messages"] = nlohmann::json::array(
        {{{"role", "user"}, {"content", parsed["text"].get<std::string>()}}});
    parsed.erase("text");
    return ChatCompletionFromJson(parsed);
  }
  return ParseChatCompletionRequest(line);
}

}  // namespace

int RunClassify(const Config& config, std::istream& in, std::ostream& out) {
  int exit_code = 0;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    absl::StatusOr<InboundRequest> request = ParseLine(line);
    if (!request.ok()) {
      exit_code = 1;
      out << nlohmann::json{{"line", number},
                            {"error", std::string(policies::StdSv(request.status().message()))}}
                 .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
          << "\n";
      continue;
    }
    Routed routed;
    routed.decision = config.policy->Classify(FeaturesOf(*request));
    if (!routed.decision.denied) {
      const TargetConfig* target = config.FindTarget(routed.decision.target);
      routed.decision.locality = target != nullptr && target->kind != TargetKind::kLocal
                                     ? policies::Locality::kRemote
                                     : policies::Locality::kLocal;
    }
    out << DecisionJson(routed) << "\n";
  }
  out.flush();
  return exit_code;
}

}  // namespace switchyard::gateway
