#include "policies/policy_set.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "policies/absl_compat.h"
#include "policies/yaml_util.h"
#include "re2/re2.h"

// Local early-return helpers; the gateway's macros live above us in the dependency graph.
#define POLICY_RETURN_IF_ERROR(expr)         \
  do {                                       \
    ::absl::Status policy_status_ = (expr);  \
    if (!policy_status_.ok()) return policy_status_; \
  } while (0)

namespace switchyard::policies {
namespace internal {

struct Rule {
  std::string name;
  std::string description;
  std::vector<std::string> models;
  // All keywords of the rule as one alternation, so a rule costs one scan per message.
  std::unique_ptr<RE2> keywords;
  std::vector<std::unique_ptr<RE2>> patterns;
  bool deny = false;
  std::string deny_message;
  TargetInfo target;

  bool has_content() const { return keywords != nullptr || !patterns.empty(); }
};

}  // namespace internal

namespace {

using internal::Rule;

bool IsWordByte(char c) { return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// Returns the RE2 source for one keyword: literal words joined by any whitespace, anchored at
// word boundaries only where the keyword itself begins or ends with a word character (so "c++"
// still matches before a space).
std::string KeywordRegex(std::string_view keyword) {
  std::vector<absl::string_view> words =
      absl::StrSplit(Sv(keyword), absl::ByAnyChar(" \t\r\n\f\v"), absl::SkipEmpty());
  std::string out;
  if (IsWordByte(keyword.front())) out += "\\b";
  for (size_t i = 0; i < words.size(); ++i) {
    if (i > 0) out += "\\s+";
    out += RE2::QuoteMeta(StdSv(words[i]));
  }
  if (IsWordByte(keyword.back())) out += "\\b";
  return out;
}

const TargetInfo* FindTarget(const std::vector<TargetInfo>& targets, std::string_view name) {
  for (const TargetInfo& target : targets) {
    if (target.name == name) return &target;
  }
  return nullptr;
}

absl::StatusOr<TargetInfo> ResolveTarget(const YamlReader& yaml, const YAML::Node& node,
                                         std::string_view what,
                                         const std::vector<TargetInfo>& targets) {
  if (!node.IsScalar()) return yaml.Error(node, absl::StrCat(Sv(what), " must be a target name"));
  if (const TargetInfo* target = FindTarget(targets, node.Scalar())) return *target;
  std::vector<std::string> names;
  for (const TargetInfo& target : targets) names.push_back(target.name);
  return yaml.Error(node, absl::StrCat(Sv(what), " names unknown target '", node.Scalar(),
                                       "' (targets: ", absl::StrJoin(names, ", "), ")"));
}

// Reads a list of non-empty strings, keeping each item's node for precise errors.
absl::StatusOr<std::vector<std::pair<std::string, YAML::Node>>> NonEmptyStrings(
    const YamlReader& yaml, const YAML::Node& map, std::string_view key, bool scalar_ok) {
  std::vector<std::pair<std::string, YAML::Node>> out;
  const YAML::Node node = map[std::string(key)];
  if (!node) return out;
  if (scalar_ok && node.IsScalar()) {
    out.emplace_back(node.Scalar(), node);
  } else if (node.IsSequence()) {
    for (const auto& item : node) {
      if (!item.IsScalar()) {
        return yaml.Error(item, absl::StrCat("every item of '", Sv(key), "' must be a string"));
      }
      out.emplace_back(item.Scalar(), item);
    }
  } else {
    return yaml.Error(node, absl::StrCat("'", Sv(key), "' must be a list of strings"));
  }
  if (out.empty()) return yaml.Error(node, absl::StrCat("'", Sv(key), "' must not be empty"));
  for (const auto& [value, item] : out) {
    if (absl::StripAsciiWhitespace(value).empty()) {
      return yaml.Error(item, absl::StrCat("an item of '", Sv(key), "' is empty"));
    }
  }
  return out;
}

absl::Status ParseWhen(const YamlReader& yaml, const YAML::Node& when, Rule& rule) {
  POLICY_RETURN_IF_ERROR(yaml.ExpectMap(when, absl::StrCat("the 'when' of rule '", rule.name, "'"),
                                        {"keywords", "patterns", "model"}));

  auto keywords = NonEmptyStrings(yaml, when, "keywords", /*scalar_ok=*/false);
  if (!keywords.ok()) return keywords.status();
  if (!keywords->empty()) {
    std::vector<std::string> alternatives;
    for (const auto& [keyword, node] : *keywords) {
      alternatives.push_back(KeywordRegex(StdSv(absl::StripAsciiWhitespace(keyword))));
    }
    RE2::Options options;
    options.set_case_sensitive(false);
    options.set_log_errors(false);
    // Large dictionaries exceed RE2's default program budget.
    options.set_max_mem(int64_t{256} << 20);
    rule.keywords = std::make_unique<RE2>(absl::StrJoin(alternatives, "|"), options);
    if (!rule.keywords->ok()) {
      return yaml.Error(when["keywords"], absl::StrCat("cannot compile the keywords of rule '",
                                                       rule.name, "': ", rule.keywords->error()));
    }
  }

  auto patterns = NonEmptyStrings(yaml, when, "patterns", /*scalar_ok=*/false);
  if (!patterns.ok()) return patterns.status();
  for (const auto& [pattern, node] : *patterns) {
    RE2::Options options;
    options.set_log_errors(false);
    auto re = std::make_unique<RE2>(pattern, options);
    if (!re->ok()) {
      return yaml.Error(node, absl::StrCat("invalid regex '", pattern, "': ", re->error()));
    }
    rule.patterns.push_back(std::move(re));
  }

  auto models = NonEmptyStrings(yaml, when, "model", /*scalar_ok=*/true);
  if (!models.ok()) return models.status();
  for (auto& [model, node] : *models) rule.models.push_back(std::move(model));
  return absl::OkStatus();
}

absl::StatusOr<Rule> ParseRule(const YamlReader& yaml, const YAML::Node& node,
                               const std::vector<TargetInfo>& targets) {
  POLICY_RETURN_IF_ERROR(
      yaml.ExpectMap(node, "a rule", {"name", "description", "when", "route", "deny"}));
  Rule rule;
  auto name = yaml.String(node, "name", /*required=*/true);
  if (!name.ok()) return name.status();
  rule.name = **name;
  if (rule.name.empty()) return yaml.Error(node["name"], "a rule name must not be empty");
  if (rule.name == "default" || rule.name == "requested") {
    return yaml.Error(node["name"],
                      absl::StrCat("'", rule.name, "' is reserved and cannot name a rule"));
  }
  auto description = yaml.String(node, "description");
  if (!description.ok()) return description.status();
  rule.description = description->value_or("");

  if (const YAML::Node when = node["when"]) {
    POLICY_RETURN_IF_ERROR(ParseWhen(yaml, when, rule));
  }

  const YAML::Node route = node["route"];
  const YAML::Node deny = node["deny"];
  if (route && deny) {
    return yaml.Error(deny, absl::StrCat("rule '", rule.name,
                                         "' has both 'route' and 'deny'; give exactly one"));
  }
  if (!route && !deny) {
    return yaml.Error(node, absl::StrCat("rule '", rule.name,
                                         "' needs an action: 'route' or 'deny'"));
  }
  if (route) {
    auto target = ResolveTarget(yaml, route, absl::StrCat("rule '", rule.name, "'"), targets);
    if (!target.ok()) return target.status();
    rule.target = *std::move(target);
  } else {
    auto message = yaml.String(node, "deny");
    if (!message.ok()) return message.status();
    rule.deny = true;
    rule.deny_message = **message;
    if (rule.deny_message.empty()) {
      return yaml.Error(deny, "a deny message must not be empty: the client reads it");
    }
  }
  return rule;
}

bool ContentMatches(const Rule& rule, const RequestFeatures& request) {
  for (std::string_view text : request.texts) {
    if (rule.keywords != nullptr && RE2::PartialMatch(text, *rule.keywords)) return true;
    for (const auto& pattern : rule.patterns) {
      if (RE2::PartialMatch(text, *pattern)) return true;
    }
  }
  return false;
}

bool Matches(const Rule& rule, const RequestFeatures& request) {
  if (!rule.models.empty() &&
      std::find(rule.models.begin(), rule.models.end(), request.requested_model) ==
          rule.models.end()) {
    return false;
  }
  return !rule.has_content() || ContentMatches(rule, request);
}

}  // namespace

PolicySet::PolicySet() = default;
PolicySet::~PolicySet() = default;

absl::StatusOr<std::shared_ptr<const PolicySet>> PolicySet::FromYaml(
    const YAML::Node& node, std::string_view file, const std::vector<TargetInfo>& targets,
    std::string_view version) {
  YamlReader yaml{std::string(file)};
  POLICY_RETURN_IF_ERROR(yaml.ExpectMap(node, "policy", {"default", "rules"}));
  std::shared_ptr<PolicySet> set(new PolicySet());
  set->version_ = std::string(version);
  set->targets_ = targets;

  const YAML::Node default_node = node["default"];
  if (!default_node) return yaml.Error(node, "missing required key 'default' in policy");
  auto default_target = ResolveTarget(yaml, default_node, "'default'", targets);
  if (!default_target.ok()) return default_target.status();
  set->default_target_ = *std::move(default_target);

  if (const YAML::Node rules = node["rules"]) {
    if (!rules.IsSequence()) return yaml.Error(rules, "'rules' must be a list of rules");
    absl::flat_hash_set<std::string> names;
    for (const auto& item : rules) {
      auto rule = ParseRule(yaml, item, targets);
      if (!rule.ok()) return rule.status();
      if (!names.insert(rule->name).second) {
        return yaml.Error(item["name"], absl::StrCat("duplicate rule name '", rule->name, "'"));
      }
      set->rules_.push_back(*std::move(rule));
    }
  }
  return set;
}

Decision PolicySet::Classify(const RequestFeatures& request) const {
  Decision decision;
  decision.policy_version = version_;
  const TargetInfo* pinned = request.requested_model == "auto"
                                 ? nullptr
                                 : FindTarget(targets_, request.requested_model);
  for (const Rule& rule : rules_) {
    // A pinned request only yields to rules about its content or about the model it named.
    if (pinned != nullptr && !rule.has_content() && rule.models.empty()) continue;
    if (!Matches(rule, request)) continue;
    decision.rule = rule.name;
    if (rule.deny) {
      decision.denied = true;
      decision.reason = rule.deny_message;
    } else {
      decision.target = rule.target.name;
      decision.locality = rule.target.locality;
      decision.reason = rule.description;
    }
    return decision;
  }
  const TargetInfo& target = pinned != nullptr ? *pinned : default_target_;
  decision.rule = pinned != nullptr ? "requested" : "default";
  decision.target = target.name;
  decision.locality = target.locality;
  return decision;
}

}  // namespace switchyard::policies
