#include "gateway/replay_command.h"

#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "gateway/decision_log.h"
#include "gateway/gateway.h"
#include "nlohmann/json.hpp"

namespace switchyard::gateway {
namespace {

using Json = nlohmann::ordered_json;

// Where a request goes: locality ("denied" when nowhere) and target.
using Destination = std::pair<std::string, std::string>;

struct Outcome {
  std::string rule;
  Destination destination;
  std::string level;
  double estimated_usd = 0;
};

struct Change {
  std::string request_id;
  Outcome before;
  Outcome after;
};

struct BeforeAfter {
  int64_t before = 0;
  int64_t after = 0;
};

std::string Describe(const Outcome& outcome) {
  return absl::StrCat(outcome.rule.empty() ? "-" : outcome.rule, "/",
                      outcome.destination.first == "denied" ? "denied"
                                                            : outcome.destination.second);
}

std::optional<policies::DifficultyTier> TierOf(std::string_view name) {
  for (policies::DifficultyTier tier :
       {policies::DifficultyTier::kEasy, policies::DifficultyTier::kMedium,
        policies::DifficultyTier::kHard}) {
    if (policies::TierName(tier) == name) return tier;
  }
  return std::nullopt;
}

// The candidate's decision for a recorded request.
Outcome Redecide(const Config& candidate, const RequestRecord& record) {
  Outcome outcome;
  if (record.requested_model != "auto" && candidate.FindTarget(record.requested_model) == nullptr) {
    outcome.destination = {"denied", ""};
    outcome.level = record.level;
    return outcome;  // unknown model: refused before the policy, as the gateway would
  }
  InboundRequest request;
  request.requested_model = record.requested_model;
  request.metadata = record.metadata;
  request.chat.messages = record.messages;
  request.chat.max_tokens = record.max_tokens;
  policies::RequestFeatures features = FeaturesOf(request);
  std::vector<policies::Finding> findings;
  if (record.messages.empty()) {
    for (const std::string& type : record.finding_types) findings.push_back({type, 0, 0, 0, 1.0});
    features.recorded_findings = &findings;
    features.prompt_tokens = record.estimated_prompt_tokens;
    if (std::optional<policies::DifficultyTier> tier = TierOf(record.difficulty_tier)) {
      features.recorded_difficulty = policies::DifficultyScore{record.difficulty_score, *tier, {}};
    }
  }
  const policies::Decision decision = candidate.policy->Classify(features);
  outcome.rule = decision.rule;
  outcome.level = decision.level;
  outcome.estimated_usd = decision.cost.estimated_usd;
  if (decision.denied) {
    outcome.destination = {"denied", ""};
  } else {
    const TargetConfig* target = candidate.FindTarget(decision.target);
    outcome.destination = {target != nullptr && target->kind != TargetKind::kLocal ? "remote"
                                                                                  : "local",
                           decision.target};
  }
  return outcome;
}

Outcome Recorded(const RequestRecord& record) {
  Outcome outcome;
  outcome.rule = record.rule;
  outcome.level = record.level;
  outcome.estimated_usd = record.estimated_usd;
  outcome.destination = record.denied || record.locality.empty()
                            ? Destination{"denied", ""}
                            : Destination{record.locality, record.target};
  return outcome;
}

}  // namespace

int RunReplay(const Config& candidate, const ReplayOptions& options, std::ostream& out,
              std::ostream& err) {
  absl::StatusOr<std::vector<std::string>> read = ReadDecisionLogLines(options.log_path);
  if (!read.ok()) {
    err << "switchyard: " << read.status().message() << "\n";
    return 2;
  }
  const std::vector<std::string> lines = *std::move(read);
  if (std::optional<ChainBreak> broken = VerifyDecisionLogChain(lines)) {
    err << "switchyard: warning: " << options.log_path << ": chain broken at line " << broken->line
        << " (" << broken->reason << "); replaying the lines as they are\n";
  }

  std::map<Destination, BeforeAfter> routes;
  std::map<std::pair<std::string, std::string>, BeforeAfter> sensitivity;  // level, locality
  std::vector<Change> changes;
  int64_t changed = 0;
  int64_t full = 0;
  int64_t from_features = 0;
  int64_t skipped = 0;
  int64_t unreadable = 0;
  double spend_before = 0;
  double spend_after = 0;
  double cost_recorded = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    absl::StatusOr<RequestRecord> record = ParseDecisionLogLine(lines[i]);
    if (!record.ok()) {
      ++unreadable;
      err << "switchyard: " << options.log_path << ":" << i + 1 << ": skipped: "
          << record.status().message() << "\n";
      continue;
    }
    // Refused before the policy ran (invalid body, unauthenticated, over budget): there is
    // nothing to re-decide. An unknown model is re-decided (the candidate may have it).
    if (record->requested_model.empty() ||
        (record->rule.empty() && record->outcome != "not_found")) {
      ++skipped;
      continue;
    }
    (record->messages.empty() ? from_features : full) += 1;
    const Outcome before = Recorded(*record);
    const Outcome after = Redecide(candidate, *record);
    routes[before.destination].before += 1;
    routes[after.destination].after += 1;
    sensitivity[{before.level, before.destination.first}].before += 1;
    sensitivity[{after.level, after.destination.first}].after += 1;
    spend_before += before.estimated_usd;
    spend_after += after.estimated_usd;
    cost_recorded += record->cost_usd;
    if (before.rule != after.rule || before.destination != after.destination) {
      ++changed;
      if (static_cast<int>(changes.size()) < options.examples) {
        changes.push_back({record->request_id, before, after});
      }
    }
  }
  const std::vector<std::string> text_rules =
      from_features > 0 ? candidate.policy->TextRules() : std::vector<std::string>{};

  if (options.json) {
    Json route_rows = Json::array();
    for (const auto& [destination, counts] : routes) {
      route_rows.push_back({{"locality", destination.first},
                            {"target", destination.second},
                            {"before", counts.before},
                            {"after", counts.after}});
    }
    Json level_rows = Json::array();
    for (const auto& [key, counts] : sensitivity) {
      level_rows.push_back({{"level", key.first},
                            {"locality", key.second},
                            {"before", counts.before},
                            {"after", counts.after}});
    }
    Json examples = Json::array();
    for (const Change& change : changes) {
      examples.push_back({{"request_id", change.request_id},
                          {"before", {{"rule", change.before.rule},
                                      {"target", change.before.destination.second},
                                      {"locality", change.before.destination.first}}},
                          {"after", {{"rule", change.after.rule},
                                     {"target", change.after.destination.second},
                                     {"locality", change.after.destination.first}}}});
    }
    Json report = {
        {"log", options.log_path},
        {"candidate", candidate.file},
        {"policy_version", candidate.version},
        {"records", {{"total", lines.size()},
                     {"redecided", full + from_features},
                     {"with_prompts", full},
                     {"from_recorded_features", from_features},
                     {"skipped", skipped},
                     {"unreadable", unreadable}}},
        {"routes", std::move(route_rows)},
        {"sensitivity", std::move(level_rows)},
        {"estimated_usd", {{"before", spend_before}, {"after", spend_after}}},
        {"recorded_cost_usd", cost_recorded},
        {"changed", changed},
        {"examples", std::move(examples)},
        {"not_reevaluated_rules", text_rules},
    };
    out << report.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
    out.flush();
    return 0;
  }

  out << "replay of " << options.log_path << " under " << candidate.file << " (policy "
      << candidate.version << ")\n";
  out << "records: " << lines.size() << "; re-decided " << full + from_features << " ("
      << full << " with prompts, " << from_features << " from recorded features); skipped "
      << skipped << " refused before the policy";
  if (unreadable > 0) out << "; " << unreadable << " unreadable";
  out << "\n";
  out << "route split (locality, target: before -> after):\n";
  for (const auto& [destination, counts] : routes) {
    out << absl::StrFormat("  %-7s %-20s %6d -> %d\n", destination.first,
                           destination.second.empty() ? "-" : destination.second, counts.before,
                           counts.after);
  }
  out << "sensitivity (level, locality: before -> after):\n";
  for (const auto& [key, counts] : sensitivity) {
    out << absl::StrFormat("  %-14s %-7s %6d -> %d\n", key.first.empty() ? "-" : key.first,
                           key.second, counts.before, counts.after);
  }
  out << absl::StrFormat("estimated spend: %.6f -> %.6f USD (recorded actual cost %.6f USD)\n",
                         spend_before, spend_after, cost_recorded);
  out << "changed decisions: " << changed << " of " << full + from_features << "\n";
  for (const Change& change : changes) {
    out << "  " << change.request_id << ": " << Describe(change.before) << " -> "
        << Describe(change.after) << "\n";
  }
  if (from_features > 0) {
    out << "not re-evaluated: " << from_features
        << " records have no prompt text (decision_log.include_prompts: false), so ";
    if (text_rules.empty()) {
      out << "no rule needed it";
    } else {
      out << "keyword/pattern tests of rule" << (text_rules.size() > 1 ? "s " : " ")
          << absl::StrJoin(text_rules, ", ") << " could not match";
    }
    out << "; their findings are the recorded ones (a detector the recorded policy did not run "
           "finds nothing)\n";
  }
  out.flush();
  return 0;
}

}  // namespace switchyard::gateway
