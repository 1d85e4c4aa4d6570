#include "gateway/decision_json.h"

#include <set>

#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace switchyard::gateway {

std::string DecisionJson(const Routed& routed) {
  const policies::Decision& decision = routed.decision;
  nlohmann::ordered_json findings = nlohmann::ordered_json::array();
  for (const policies::Finding& finding : decision.findings) {
    findings.push_back({{"type", finding.type},
                        {"message", finding.message},
                        {"start", finding.start},
                        {"end", finding.end},
                        {"confidence", finding.confidence}});
  }
  nlohmann::ordered_json out = {
      {"target", decision.target},
      {"rule", decision.rule},
      {"locality", decision.denied ? "" : std::string(routed.locality())},
      {"denied", decision.denied},
      {"reason", decision.reason},
      {"policy_version", decision.policy_version},
      {"sensitivity", {{"level", decision.level}, {"findings", std::move(findings)}}},
  };
  nlohmann::ordered_json contributions = nlohmann::ordered_json::object();
  for (const policies::DifficultyContribution& c : decision.difficulty.contributions) {
    contributions[std::string(c.feature)] = c.contribution;
  }
  out["difficulty"] = {{"score", decision.difficulty.score},
                       {"tier", policies::TierName(decision.difficulty.tier)},
                       {"features", std::move(contributions)}};
  nlohmann::ordered_json targets = nlohmann::ordered_json::array();
  for (const policies::TargetCost& cost : decision.cost.targets) {
    targets.push_back({{"target", cost.target}, {"estimated_usd", cost.estimated_usd}});
  }
  out["cost"] = {{"estimated_usd", decision.cost.estimated_usd},
                 {"prompt_tokens", decision.cost.prompt_tokens},
                 {"prompt_tokens_exact", decision.cost.prompt_tokens_exact},
                 {"completion_tokens", decision.cost.completion_tokens},
                 {"targets", std::move(targets)}};
  return out.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string FindingTypes(const policies::Decision& decision) {
  std::set<std::string> types;
  for (const policies::Finding& finding : decision.findings) types.insert(finding.type);
  return absl::StrJoin(types, ",");
}

}  // namespace switchyard::gateway
