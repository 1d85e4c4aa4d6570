#include "gateway/decision_json.h"

#include <set>

#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace switchyard::gateway {
namespace {

std::string Locality(const Routed& routed) {
  return routed.decision.denied ? "" : std::string(routed.locality());
}

}  // namespace

std::string DecisionJson(const Routed& routed) {
  const policies::Decision& decision = routed.decision;
  nlohmann::ordered_json findings = nlohmann::ordered_json::array();
  for (const policies::Finding& finding : decision.findings) {
    findings.push_back({{"type", finding.type},
                        {"message", finding.message},
                        {"start", finding.start},
                        {"end", finding.end},
                        {"confidence", finding.confidence},
                        {"redacted", finding.redacted}});
  }
  nlohmann::ordered_json out = {
      {"target", decision.target},
      {"targets", decision.targets},
      {"rule", decision.rule},
      {"locality", Locality(routed)},
      {"denied", decision.denied},
      {"reason", decision.reason},
      {"policy_version", decision.policy_version},
      {"redact", decision.redact},
      {"sensitivity",
       {{"level", decision.level},
        {"redacted_level", decision.redacted_level},
        {"findings", std::move(findings)}}},
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
    targets.push_back({{"target", cost.target},
                       {"estimated_usd", cost.estimated_usd},
                       {"prompt_tokens", cost.prompt_tokens},
                       {"prompt_tokens_exact", cost.prompt_tokens_exact},
                       {"completion_tokens", cost.completion_tokens}});
  }
  out["cost"] = {{"estimated_usd", decision.cost.estimated_usd},
                 {"prompt_tokens", decision.cost.prompt_tokens},
                 {"prompt_tokens_exact", decision.cost.prompt_tokens_exact},
                 {"completion_tokens", decision.cost.completion_tokens},
                 {"targets", std::move(targets)}};
  nlohmann::ordered_json rejected = nlohmann::ordered_json::array();
  for (const policies::Rejection& rejection : decision.rejected) {
    rejected.push_back({{"target", rejection.target}, {"reason", rejection.reason}});
  }
  out["rejected"] = std::move(rejected);
  return out.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

void DecisionToProto(const Routed& routed, v1::Decision& out) {
  const policies::Decision& decision = routed.decision;
  out.set_target(decision.target);
  out.set_rule(decision.rule);
  out.set_locality(Locality(routed));
  out.set_denied(decision.denied);
  out.set_reason(decision.reason);
  out.set_policy_version(decision.policy_version);
  out.set_level(decision.level);
  out.set_redact(decision.redact);
  out.set_redacted_level(decision.redacted_level);
  for (const policies::Finding& finding : decision.findings) {
    v1::Finding* f = out.add_findings();
    f->set_type(finding.type);
    f->set_message(static_cast<uint32_t>(finding.message));
    f->set_start(finding.start);
    f->set_end(finding.end);
    f->set_confidence(finding.confidence);
    f->set_redacted(finding.redacted);
  }
  for (const std::string& target : decision.targets) out.add_targets(target);
  v1::CostEstimate* cost = out.mutable_cost();
  cost->set_estimated_usd(decision.cost.estimated_usd);
  cost->set_prompt_tokens(decision.cost.prompt_tokens);
  cost->set_prompt_tokens_exact(decision.cost.prompt_tokens_exact);
  cost->set_completion_tokens(decision.cost.completion_tokens);
  for (const policies::TargetCost& target : decision.cost.targets) {
    v1::TargetCost* t = cost->add_targets();
    t->set_target(target.target);
    t->set_estimated_usd(target.estimated_usd);
    t->set_prompt_tokens(target.prompt_tokens);
    t->set_prompt_tokens_exact(target.prompt_tokens_exact);
    t->set_completion_tokens(target.completion_tokens);
  }
  for (const policies::Rejection& rejection : decision.rejected) {
    v1::Rejection* r = out.add_rejected();
    r->set_target(rejection.target);
    r->set_reason(rejection.reason);
  }
  v1::Difficulty* difficulty = out.mutable_difficulty();
  difficulty->set_score(decision.difficulty.score);
  difficulty->set_tier(std::string(policies::TierName(decision.difficulty.tier)));
  for (const policies::DifficultyContribution& c : decision.difficulty.contributions) {
    v1::DifficultyFeature* feature = difficulty->add_features();
    feature->set_feature(std::string(c.feature));
    feature->set_contribution(c.contribution);
  }
}

std::string FindingTypes(const policies::Decision& decision) {
  std::set<std::string> types;
  for (const policies::Finding& finding : decision.findings) types.insert(finding.type);
  return absl::StrJoin(types, ",");
}

}  // namespace switchyard::gateway
