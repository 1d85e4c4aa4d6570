#include "policies/policy_set.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "policies/absl_compat.h"
#include "policies/detectors.h"
#include "policies/scanner.h"
#include "policies/yaml_util.h"
#include "re2/re2.h"

// Local early-return helpers; the gateway's macros live above us in the dependency graph.
#define POLICY_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::absl::Status policy_status_ = (expr);          \
    if (!policy_status_.ok()) return policy_status_; \
  } while (0)

#define POLICY_ASSIGN_OR_RETURN(lhs, expr) \
  auto lhs##_or = (expr);                  \
  if (!lhs##_or.ok()) return lhs##_or.status(); \
  auto lhs = *std::move(lhs##_or)

namespace switchyard::policies {
namespace internal {

// A scanner group: a named dictionary or pattern (its hits are findings of that type), or the
// keywords or patterns of one rule (anonymous: they only decide that rule).
struct Group {
  std::string type;
};

struct Rule {
  std::string name;
  std::string description;
  std::vector<std::string> models;
  int keyword_group = -1;
  int pattern_group = -1;
  std::vector<std::string> findings;  // finding types or prefixes
  std::optional<int> min_level;
  std::optional<int> max_level;
  std::vector<std::pair<std::string, std::vector<std::string>>> metadata;
  std::vector<DifficultyTier> difficulty_tiers;
  std::optional<double> min_difficulty;
  std::optional<double> max_difficulty;
  std::optional<double> min_estimated_usd;
  std::optional<double> max_estimated_usd;
  bool deny = false;
  std::string deny_message;
  // `redact`: remote sends carry placeholders for findings of `redact_types` (every finding when
  // empty).
  bool redact = false;
  std::vector<std::string> redact_types;
  TargetInfo target;  // the first of `route`
  // `route: x` or `route: [x, y]`: the ordered fallback list; `route: cheapest`: the candidates
  // (every target when `candidates` is absent), in configuration order.
  std::vector<TargetInfo> route;
  std::vector<YAML::Mark> route_marks;  // where each was named, for load-time errors
  bool cheapest = false;
  bool implicit_candidates = false;  // `route: cheapest` without `candidates`
  const YAML::Node* node = nullptr;

  bool Redacts(std::string_view type) const {
    if (!redact) return false;
    if (redact_types.empty()) return true;
    for (const std::string& wanted : redact_types) {
      if (type == wanted || (type.size() > wanted.size() && type.starts_with(wanted) &&
                             type[wanted.size()] == '.')) {
        return true;
      }
    }
    return false;
  }

  bool has_content_test() const {
    return keyword_group >= 0 || pattern_group >= 0 || !findings.empty();
  }
  // The rules a pinned request still yields to: about its content, or a floor on its
  // sensitivity or price (a budget cap applies whichever model the caller named).
  bool is_content_rule() const {
    return has_content_test() || min_level.has_value() || min_estimated_usd.has_value();
  }
};

}  // namespace internal

namespace {

using internal::Group;
using internal::CostModel;
using internal::Rule;

constexpr std::string_view kDefaultLevels[] = {"public", "internal", "confidential", "restricted"};

// Default level of each built-in type (or prefix) as a rank on the default four-level scale.
constexpr std::pair<std::string_view, int> kDefaultDetectorRanks[] = {
    {"email", 1},       {"phone", 1},  {"ip_address", 1}, {"iban", 2},
    {"credit_card", 3}, {"us_ssn", 3}, {"secret", 3},
};

bool TypeMatches(std::string_view type, std::string_view wanted) {
  return type == wanted ||
         (type.size() > wanted.size() && type.starts_with(wanted) && type[wanted.size()] == '.');
}

std::string Quoted(const std::vector<std::string>& names) { return absl::StrJoin(names, ", "); }

// Whether `re` can match the empty string anywhere. Such a regex matches in almost any message
// (`x*` everywhere, `\b` at every word, `(?m)^` at every line), and each zero-length match was
// a finding that raised the request's level. A zero-width match depends only on the assertions
// that hold where it is: start or end of text, start or end of line, and whether the
// characters on each side are word characters; these sixteen places cover every combination.
bool MatchesEmpty(const RE2& re) {
  static constexpr std::string_view kSides[] = {"", "\n", "a", " "};
  for (std::string_view before : kSides) {
    for (std::string_view after : kSides) {
      const std::string text = std::string(before).append(after);
      if (re.Match(text, before.size(), before.size(), RE2::ANCHOR_BOTH, nullptr, 0)) {
        return true;
      }
    }
  }
  return false;
}

// The state FromYaml threads through the helpers below.
struct Loader {
  YamlReader yaml;
  const std::vector<TargetInfo>& targets;
  std::vector<std::string> levels;
  std::vector<std::string_view> enabled_builtins;
  std::vector<std::string> known_types;  // what `findings:` may name
  std::vector<Group> groups;
  std::vector<Scanner::TermSpec> terms;
  std::vector<Scanner::RegexSpec> regexes;
  int default_level = 0;
  double min_confidence = 0;
  std::map<std::string, int, std::less<>> type_levels;
  std::string metadata_key = "sensitivity";
  std::map<std::string, int, std::less<>> tenant_levels;

  absl::StatusOr<int> Level(const YAML::Node& node, std::string_view what) const {
    if (!node.IsScalar()) return yaml.Error(node, absl::StrCat(Sv(what), " must be a level name"));
    for (size_t i = 0; i < levels.size(); ++i) {
      if (levels[i] == node.Scalar()) return static_cast<int>(i);
    }
    return yaml.Error(node, absl::StrCat(Sv(what), " names unknown level '", node.Scalar(),
                                         "' (levels: ", Quoted(levels), ")"));
  }

  absl::StatusOr<TargetInfo> Target(const YAML::Node& node, std::string_view what) const {
    if (!node.IsScalar()) return yaml.Error(node, absl::StrCat(Sv(what), " must be a target name"));
    std::vector<std::string> names;
    for (const TargetInfo& target : targets) {
      if (target.name == node.Scalar()) return target;
      names.push_back(target.name);
    }
    return yaml.Error(node, absl::StrCat(Sv(what), " names unknown target '", node.Scalar(),
                                         "' (targets: ", Quoted(names), ")"));
  }

  // Reads a list of non-empty strings, keeping each item's node for precise errors.
  absl::StatusOr<std::vector<std::pair<std::string, YAML::Node>>> Strings(
      const YAML::Node& map, std::string_view key, bool scalar_ok) const {
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

  absl::StatusOr<int> AddRegexes(const std::vector<std::pair<std::string, YAML::Node>>& items,
                                 std::string type) {
    const int group = static_cast<int>(groups.size());
    groups.push_back({std::move(type)});
    for (const auto& [pattern, node] : items) {
      RE2::Options options;
      options.set_log_errors(false);
      RE2 re(pattern, options);
      if (!re.ok()) {
        return yaml.Error(node, absl::StrCat("invalid regex '", pattern, "': ", re.error()));
      }
      if (MatchesEmpty(re)) {
        return yaml.Error(node, absl::StrCat("regex '", pattern,
                                             "' can match the empty string, and so almost any "
                                             "message; it must match at least one character"));
      }
      regexes.push_back({pattern, group});
    }
    return group;
  }

  int AddTerms(const std::vector<std::pair<std::string, YAML::Node>>& items, std::string type) {
    const int group = static_cast<int>(groups.size());
    groups.push_back({std::move(type)});
    for (const auto& [term, node] : items) terms.push_back({term, group});
    return group;
  }

  absl::Status CheckName(const YAML::Node& node, const std::string& name) const {
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) {
          return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
        })) {
      return yaml.Error(node, absl::StrCat("name '", name,
                                           "' must be letters, digits, '_' or '-' only"));
    }
    if (std::find(known_types.begin(), known_types.end(), name) != known_types.end() ||
        name == "secret") {
      return yaml.Error(node, absl::StrCat("finding type '", name, "' is already defined"));
    }
    return absl::OkStatus();
  }
};


absl::Status ParseLevels(Loader& loader, const YAML::Node& sensitivity) {
  if (!sensitivity || !sensitivity["levels"]) {
    loader.levels.assign(std::begin(kDefaultLevels), std::end(kDefaultLevels));
    return absl::OkStatus();
  }
  POLICY_ASSIGN_OR_RETURN(items, loader.Strings(sensitivity, "levels", /*scalar_ok=*/false));
  for (const auto& [name, item] : items) {
    if (std::find(loader.levels.begin(), loader.levels.end(), name) != loader.levels.end()) {
      return loader.yaml.Error(item, absl::StrCat("duplicate level '", name, "'"));
    }
    loader.levels.push_back(name);
  }
  return absl::OkStatus();
}

// Built-in detector levels: defaults, overridden by the most specific `detectors` entry.
absl::Status ParseDetectors(Loader& loader, const YAML::Node& sensitivity) {
  const int top = static_cast<int>(loader.levels.size()) - 1;
  std::map<std::string, std::optional<int>, std::less<>> entries;  // nullopt: off
  for (const auto& [prefix, rank] : kDefaultDetectorRanks) {
    entries[std::string(prefix)] = std::min(rank, top);
  }
  if (sensitivity && sensitivity["detectors"]) {
    const YAML::Node node = sensitivity["detectors"];
    if (!node.IsMap()) return loader.yaml.Error(node, "'detectors' must be a map of type: level");
    std::vector<std::string> allowed;
    for (std::string_view type : BuiltinTypes()) allowed.emplace_back(type);
    allowed.emplace_back("secret");
    for (const auto& entry : node) {
      const std::string key = entry.first.Scalar();
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        return loader.yaml.Error(entry.first,
                                 absl::StrCat("unknown detector '", key, "' (detectors: ",
                                              Quoted(allowed), ")"));
      }
      if (entry.second.IsScalar() && entry.second.Scalar() == "off") {
        entries[key] = std::nullopt;
        continue;
      }
      POLICY_ASSIGN_OR_RETURN(level,
                              loader.Level(entry.second, absl::StrCat("detector '", key, "'")));
      entries[key] = level;
    }
  }
  for (std::string_view type : BuiltinTypes()) {
    const std::string_view prefix = type.substr(0, type.find('.'));
    auto it = entries.find(type);
    if (it == entries.end()) it = entries.find(prefix);
    if (it == entries.end() || !it->second.has_value()) continue;
    loader.enabled_builtins.push_back(type);
    loader.type_levels[std::string(type)] = *it->second;
    loader.known_types.emplace_back(type);
    if (prefix != type &&
        std::find(loader.known_types.begin(), loader.known_types.end(), prefix) ==
            loader.known_types.end()) {
      loader.known_types.emplace_back(prefix);
    }
  }
  return absl::OkStatus();
}

// `dictionaries` and `patterns`: named detectors defined by the policy.
absl::Status ParseCustomDetectors(Loader& loader, const YAML::Node& sensitivity, bool patterns) {
  const char* key = patterns ? "patterns" : "dictionaries";
  const YAML::Node list = sensitivity[key];
  if (!list) return absl::OkStatus();
  if (!list.IsSequence()) {
    return loader.yaml.Error(list, absl::StrCat("'", key, "' must be a list"));
  }
  for (const auto& item : list) {
    const char* what = patterns ? "a pattern" : "a dictionary";
    if (patterns) {
      POLICY_RETURN_IF_ERROR(loader.yaml.ExpectMap(item, what, {"name", "level", "regex"}));
    } else {
      POLICY_RETURN_IF_ERROR(loader.yaml.ExpectMap(item, what, {"name", "level", "terms"}));
    }
    POLICY_ASSIGN_OR_RETURN(name, loader.yaml.String(item, "name", /*required=*/true));
    POLICY_RETURN_IF_ERROR(loader.CheckName(item["name"], *name));
    if (!item["level"]) return loader.yaml.Error(item, "missing required key 'level'");
    POLICY_ASSIGN_OR_RETURN(level, loader.Level(item["level"], absl::StrCat("'", *name, "'")));
    if (patterns) {
      if (!item["regex"] || !item["regex"].IsScalar()) {
        return loader.yaml.Error(item, "a pattern needs a 'regex' string");
      }
      POLICY_RETURN_IF_ERROR(
          loader.AddRegexes({{item["regex"].Scalar(), item["regex"]}}, *name).status());
    } else {
      if (!item["terms"]) return loader.yaml.Error(item, "missing required key 'terms'");
      POLICY_ASSIGN_OR_RETURN(terms, loader.Strings(item, "terms", /*scalar_ok=*/false));
      loader.AddTerms(terms, *name);
    }
    loader.type_levels[*name] = level;
    loader.known_types.push_back(*name);
  }
  return absl::OkStatus();
}

absl::Status ParseSensitivity(Loader& loader, const YAML::Node& sensitivity) {
  if (sensitivity) {
    POLICY_RETURN_IF_ERROR(loader.yaml.ExpectMap(
        sensitivity, "sensitivity",
        {"levels", "default_level", "min_confidence", "detectors", "dictionaries", "patterns",
         "metadata_key", "tenants"}));
  }
  POLICY_RETURN_IF_ERROR(ParseLevels(loader, sensitivity));
  POLICY_RETURN_IF_ERROR(ParseDetectors(loader, sensitivity));
  if (!sensitivity) return absl::OkStatus();
  if (const YAML::Node node = sensitivity["default_level"]) {
    POLICY_ASSIGN_OR_RETURN(level, loader.Level(node, "'default_level'"));
    loader.default_level = level;
  }
  POLICY_ASSIGN_OR_RETURN(min_confidence, loader.yaml.Double(sensitivity, "min_confidence", 0, 1));
  loader.min_confidence = min_confidence.value_or(0);
  POLICY_RETURN_IF_ERROR(ParseCustomDetectors(loader, sensitivity, /*patterns=*/false));
  POLICY_RETURN_IF_ERROR(ParseCustomDetectors(loader, sensitivity, /*patterns=*/true));
  POLICY_ASSIGN_OR_RETURN(metadata_key, loader.yaml.String(sensitivity, "metadata_key"));
  if (metadata_key) loader.metadata_key = *metadata_key;
  if (const YAML::Node tenants = sensitivity["tenants"]) {
    if (!tenants.IsMap()) return loader.yaml.Error(tenants, "'tenants' must be a map of tenant: level");
    for (const auto& entry : tenants) {
      POLICY_ASSIGN_OR_RETURN(
          level, loader.Level(entry.second, absl::StrCat("tenant '", entry.first.Scalar(), "'")));
      loader.tenant_levels[entry.first.Scalar()] = level;
    }
  }
  return absl::OkStatus();
}

// `when.min_<name>` and `when.max_<name>`, each from 0 to `limit`; a rule whose minimum is
// above its maximum could never match, and is an error at the maximum.
absl::Status ParseBounds(const YamlReader& yaml, const YAML::Node& when,
                         const std::string& rule_name, const char* name, double limit,
                         std::optional<double>& min, std::optional<double>& max) {
  const std::string min_key = absl::StrCat("min_", name);
  const std::string max_key = absl::StrCat("max_", name);
  POLICY_ASSIGN_OR_RETURN(low, yaml.Double(when, min_key, 0, limit));
  POLICY_ASSIGN_OR_RETURN(high, yaml.Double(when, max_key, 0, limit));
  if (low && high && *low > *high) {
    return yaml.Error(when[max_key], absl::StrCat("rule '", rule_name, "' can never match: ",
                                                  min_key, " is above ", max_key));
  }
  min = low;
  max = high;
  return absl::OkStatus();
}

absl::Status ParseWhen(Loader& loader, const YAML::Node& when, Rule& rule) {
  const YamlReader& yaml = loader.yaml;
  POLICY_RETURN_IF_ERROR(yaml.ExpectMap(
      when, absl::StrCat("the 'when' of rule '", rule.name, "'"),
      {"keywords", "patterns", "findings", "min_level", "max_level", "model", "tenant",
       "metadata", "min_estimated_usd", "max_estimated_usd", "difficulty", "min_difficulty",
       "max_difficulty"}));

  POLICY_ASSIGN_OR_RETURN(keywords, loader.Strings(when, "keywords", /*scalar_ok=*/false));
  if (!keywords.empty()) rule.keyword_group = loader.AddTerms(keywords, "");
  POLICY_ASSIGN_OR_RETURN(patterns, loader.Strings(when, "patterns", /*scalar_ok=*/false));
  if (!patterns.empty()) {
    POLICY_ASSIGN_OR_RETURN(group, loader.AddRegexes(patterns, ""));
    rule.pattern_group = group;
  }

  POLICY_ASSIGN_OR_RETURN(findings, loader.Strings(when, "findings", /*scalar_ok=*/true));
  for (auto& [type, node] : findings) {
    if (std::find(loader.known_types.begin(), loader.known_types.end(), type) ==
        loader.known_types.end()) {
      const bool builtin =
          type == "secret" || std::find(BuiltinTypes().begin(), BuiltinTypes().end(), type) !=
                                  BuiltinTypes().end();
      return yaml.Error(node, builtin ? absl::StrCat("rule '", rule.name, "' tests finding '",
                                                     type, "' but that detector is off")
                                      : absl::StrCat("unknown finding type '", type,
                                                     "' (types: ", Quoted(loader.known_types),
                                                     ")"));
    }
    rule.findings.push_back(std::move(type));
  }

  if (const YAML::Node node = when["min_level"]) {
    POLICY_ASSIGN_OR_RETURN(level, loader.Level(node, "'min_level'"));
    rule.min_level = level;
  }
  if (const YAML::Node node = when["max_level"]) {
    POLICY_ASSIGN_OR_RETURN(level, loader.Level(node, "'max_level'"));
    rule.max_level = level;
  }
  if (rule.min_level && rule.max_level && *rule.min_level > *rule.max_level) {
    return yaml.Error(when["max_level"], absl::StrCat("rule '", rule.name,
                                                      "' can never match: min_level is above "
                                                      "max_level"));
  }

  POLICY_ASSIGN_OR_RETURN(tiers, loader.Strings(when, "difficulty", /*scalar_ok=*/true));
  for (const auto& [tier, node] : tiers) {
    bool known = false;
    for (DifficultyTier candidate :
         {DifficultyTier::kEasy, DifficultyTier::kMedium, DifficultyTier::kHard}) {
      if (TierName(candidate) == tier) {
        rule.difficulty_tiers.push_back(candidate);
        known = true;
      }
    }
    if (!known) {
      return yaml.Error(node, absl::StrCat("unknown difficulty tier '", tier,
                                           "' (tiers: easy, medium, hard)"));
    }
  }
  POLICY_RETURN_IF_ERROR(ParseBounds(yaml, when, rule.name, "difficulty", 1, rule.min_difficulty,
                                     rule.max_difficulty));
  POLICY_RETURN_IF_ERROR(ParseBounds(yaml, when, rule.name, "estimated_usd", 1e9,
                                     rule.min_estimated_usd, rule.max_estimated_usd));

  POLICY_ASSIGN_OR_RETURN(models, loader.Strings(when, "model", /*scalar_ok=*/true));
  for (auto& [model, node] : models) rule.models.push_back(std::move(model));

  POLICY_ASSIGN_OR_RETURN(tenants, loader.Strings(when, "tenant", /*scalar_ok=*/true));
  if (!tenants.empty()) {
    std::vector<std::string> values;
    for (auto& [tenant, node] : tenants) values.push_back(std::move(tenant));
    rule.metadata.emplace_back("tenant", std::move(values));
  }
  if (const YAML::Node metadata = when["metadata"]) {
    if (!metadata.IsMap()) {
      return yaml.Error(metadata, "'metadata' must be a map of key: value or key: [values]");
    }
    for (const auto& entry : metadata) {
      const std::string key = entry.first.Scalar();
      YAML::Node wrapper;
      wrapper[key] = entry.second;
      POLICY_ASSIGN_OR_RETURN(values, loader.Strings(wrapper, key, /*scalar_ok=*/true));
      std::vector<std::string> strings;
      for (auto& [value, node] : values) strings.push_back(std::move(value));
      rule.metadata.emplace_back(key, std::move(strings));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Rule> ParseRule(Loader& loader, const YAML::Node& node) {
  const YamlReader& yaml = loader.yaml;
  POLICY_RETURN_IF_ERROR(
      yaml.ExpectMap(node, "a rule", {"name", "description", "when", "route", "candidates",
                                      "deny", "redact"}));
  Rule rule;
  POLICY_ASSIGN_OR_RETURN(name, yaml.String(node, "name", /*required=*/true));
  rule.name = *name;
  if (rule.name.empty()) return yaml.Error(node["name"], "a rule name must not be empty");
  if (rule.name == "default" || rule.name == "requested") {
    return yaml.Error(node["name"],
                      absl::StrCat("'", rule.name, "' is reserved and cannot name a rule"));
  }
  POLICY_ASSIGN_OR_RETURN(description, yaml.String(node, "description"));
  rule.description = description.value_or("");

  if (const YAML::Node when = node["when"]) {
    POLICY_RETURN_IF_ERROR(ParseWhen(loader, when, rule));
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
  const YAML::Node candidates = node["candidates"];
  if (route) {
    const std::string what = absl::StrCat("rule '", rule.name, "'");
    // Reads a non-empty list of distinct targets: a repeated target would make the fallback
    // chain loop back on itself.
    auto read_list = [&](const YAML::Node& list, std::string_view key) -> absl::Status {
      if (!list.IsSequence()) {
        return yaml.Error(list, absl::StrCat("'", Sv(key), "' of rule '", rule.name,
                                             "' must be a target or a list of targets"));
      }
      if (list.size() == 0) {
        return yaml.Error(list, absl::StrCat("'", Sv(key), "' of rule '", rule.name,
                                             "' must not be empty"));
      }
      for (const auto& item : list) {
        POLICY_ASSIGN_OR_RETURN(target, loader.Target(item, what));
        for (const TargetInfo& seen : rule.route) {
          if (seen.name == target.name) {
            return yaml.Error(item, absl::StrCat("rule '", rule.name, "' names '", target.name,
                                                 "' twice in '", Sv(key),
                                                 "': a fallback cycle"));
          }
        }
        rule.route.push_back(std::move(target));
        rule.route_marks.push_back(item.Mark());
      }
      return absl::OkStatus();
    };
    if (route.IsScalar() && route.Scalar() == "cheapest") {
      rule.cheapest = true;
      if (candidates) {
        POLICY_RETURN_IF_ERROR(read_list(candidates, "candidates"));
      } else {
        rule.implicit_candidates = true;
        for (const TargetInfo& target : loader.targets) {
          rule.route.push_back(target);
          rule.route_marks.push_back(route.Mark());
        }
      }
    } else if (candidates) {
      return yaml.Error(candidates, absl::StrCat("rule '", rule.name,
                                                 "' has 'candidates' but its route is not "
                                                 "'cheapest'"));
    } else if (route.IsScalar()) {
      POLICY_ASSIGN_OR_RETURN(target, loader.Target(route, what));
      rule.route.push_back(std::move(target));
      rule.route_marks.push_back(route.Mark());
    } else {
      POLICY_RETURN_IF_ERROR(read_list(route, "route"));
    }
    rule.target = rule.route.front();
  } else if (candidates) {
    return yaml.Error(candidates, absl::StrCat("rule '", rule.name,
                                               "' has 'candidates' but its route is not "
                                               "'cheapest'"));
  } else {
    POLICY_ASSIGN_OR_RETURN(message, yaml.String(node, "deny"));
    rule.deny = true;
    rule.deny_message = *message;
    if (rule.deny_message.empty()) {
      return yaml.Error(deny, "a deny message must not be empty: the client reads it");
    }
  }
  if (const YAML::Node redact = node["redact"]) {
    if (rule.deny) {
      return yaml.Error(redact, absl::StrCat("rule '", rule.name,
                                             "' denies; only a 'route' can 'redact'"));
    }
    if (redact.IsScalar()) {
      POLICY_ASSIGN_OR_RETURN(flag, yaml.Bool(node, "redact"));
      rule.redact = flag.value_or(false);
    } else if (redact.IsSequence()) {
      POLICY_ASSIGN_OR_RETURN(types, loader.Strings(node, "redact", /*scalar_ok=*/false));
      for (auto& [type, item] : types) {
        if (std::find(loader.known_types.begin(), loader.known_types.end(), type) ==
            loader.known_types.end()) {
          return yaml.Error(item, absl::StrCat("rule '", rule.name, "' redacts unknown finding "
                                               "type '", type, "' (types: ",
                                               Quoted(loader.known_types), ")"));
        }
        rule.redact_types.push_back(std::move(type));
      }
      rule.redact = true;
    } else {
      return yaml.Error(redact, absl::StrCat("'redact' of rule '", rule.name,
                                             "' must be true, false or a list of finding types"));
    }
  }
  return rule;
}

absl::Status ParseCost(const YamlReader& yaml, const YAML::Node& cost, CostModel& out) {
  if (!cost) return absl::OkStatus();
  POLICY_RETURN_IF_ERROR(yaml.ExpectMap(
      cost, "cost", {"expected_completion_tokens", "bytes_per_token", "message_overhead_tokens"}));
  POLICY_ASSIGN_OR_RETURN(completion, yaml.Int(cost, "expected_completion_tokens", 0, 10'000'000));
  out.expected_completion_tokens = completion.value_or(out.expected_completion_tokens);
  POLICY_ASSIGN_OR_RETURN(bytes, yaml.Double(cost, "bytes_per_token", 0.5, 64));
  out.bytes_per_token = bytes.value_or(out.bytes_per_token);
  POLICY_ASSIGN_OR_RETURN(overhead, yaml.Int(cost, "message_overhead_tokens", 0, 1000));
  out.message_overhead_tokens = overhead.value_or(out.message_overhead_tokens);
  return absl::OkStatus();
}

bool MetadataMatches(const Rule& rule, const std::map<std::string, std::string>* metadata) {
  for (const auto& [key, values] : rule.metadata) {
    if (metadata == nullptr) return false;
    auto it = metadata->find(key);
    if (it == metadata->end() ||
        std::find(values.begin(), values.end(), it->second) == values.end()) {
      return false;
    }
  }
  return true;
}

// The lowest level a request matching `rule` can have, and the condition that guarantees it. With
// `redacted` (a remote target of a redacting rule) it is the level left after redaction: a
// min_level may have come from findings that are now placeholders, and so may a findings test
// that names a redacted type.
std::pair<int, std::string> LevelFloor(const Rule& rule, const Loader& loader, bool redacted) {
  const int top = static_cast<int>(loader.levels.size()) - 1;
  int floor = loader.default_level;
  std::string cause = absl::StrCat("default_level: ", loader.levels[floor]);
  auto raise = [&](int level, std::string why) {
    if (level > floor) {
      floor = level;
      cause = std::move(why);
    }
  };
  if (rule.min_level && !redacted) {
    raise(*rule.min_level, absl::StrCat("min_level: ", loader.levels[*rule.min_level]));
  }
  // A content test made of findings alone guarantees a finding, and so that finding's level.
  if (rule.keyword_group < 0 && rule.pattern_group < 0 && !rule.findings.empty()) {
    int lowest = top;
    bool any = false;
    bool removed = false;  // the guaranteed finding may be one that redaction removes
    for (const std::string& wanted : rule.findings) {
      for (const auto& [type, level] : loader.type_levels) {  // every enabled concrete type
        if (!TypeMatches(type, wanted)) continue;
        lowest = std::min(lowest, level);
        any = true;
        removed = removed || (redacted && rule.Redacts(type));
      }
    }
    if (any && !removed) raise(lowest, absl::StrCat("findings: ", Quoted(rule.findings)));
  }
  for (const auto& [key, values] : rule.metadata) {
    int lowest = top;
    if (key == loader.metadata_key) {  // the caller's label raises the level to itself
      for (const std::string& value : values) {
        auto it = std::find(loader.levels.begin(), loader.levels.end(), value);
        lowest = std::min(lowest, it == loader.levels.end()
                                      ? top
                                      : static_cast<int>(it - loader.levels.begin()));
      }
    } else if (key == "tenant") {
      for (const std::string& value : values) {
        auto it = loader.tenant_levels.find(value);
        lowest = std::min(lowest, it == loader.tenant_levels.end() ? 0 : it->second);
      }
    } else {
      continue;
    }
    raise(lowest, absl::StrCat(key, ": ", Quoted(values)));
  }
  return {floor, std::move(cause)};
}

}  // namespace

PolicySet::PolicySet() = default;
PolicySet::~PolicySet() = default;

absl::StatusOr<std::shared_ptr<const PolicySet>> PolicySet::FromYaml(
    const YAML::Node& node, std::string_view file, const std::vector<TargetInfo>& targets,
    std::string_view version) {
  Loader loader{YamlReader{std::string(file)}, targets};
  const YamlReader& yaml = loader.yaml;
  POLICY_RETURN_IF_ERROR(
      yaml.ExpectMap(node, "policy",
                     {"default", "sensitivity", "clearance", "cost", "difficulty", "rules"}));
  std::shared_ptr<PolicySet> set(new PolicySet());
  set->version_ = std::string(version);
  set->targets_ = targets;
  POLICY_RETURN_IF_ERROR(ParseCost(yaml, node["cost"], set->cost_model_));
  POLICY_ASSIGN_OR_RETURN(difficulty,
                          HeuristicDifficultyScorer::FromYaml(node["difficulty"], yaml));
  set->difficulty_ = std::move(difficulty);

  POLICY_RETURN_IF_ERROR(ParseSensitivity(loader, node["sensitivity"]));

  const YAML::Node default_node = node["default"];
  if (!default_node) return yaml.Error(node, "missing required key 'default' in policy");
  POLICY_ASSIGN_OR_RETURN(default_target, loader.Target(default_node, "'default'"));
  set->default_target_ = std::move(default_target);

  const int top = static_cast<int>(loader.levels.size()) - 1;
  set->clearance_.assign(targets.size(), top);
  if (const YAML::Node clearance = node["clearance"]) {
    if (!clearance.IsMap()) {
      return yaml.Error(clearance, "'clearance' must be a map of target: level");
    }
    // Fail closed: a remote target nobody cleared receives only the lowest level.
    for (size_t i = 0; i < targets.size(); ++i) {
      if (targets[i].locality == Locality::kRemote) set->clearance_[i] = 0;
    }
    for (const auto& entry : clearance) {
      POLICY_ASSIGN_OR_RETURN(target, loader.Target(entry.first, "'clearance'"));
      POLICY_ASSIGN_OR_RETURN(level, loader.Level(entry.second, absl::StrCat("clearance of '",
                                                                             target.name, "'")));
      for (size_t i = 0; i < targets.size(); ++i) {
        if (targets[i].name == target.name) set->clearance_[i] = level;
      }
    }
  }

  if (const YAML::Node rules = node["rules"]) {
    if (!rules.IsSequence()) return yaml.Error(rules, "'rules' must be a list of rules");
    absl::flat_hash_set<std::string> names;
    for (const auto& item : rules) {
      POLICY_ASSIGN_OR_RETURN(rule, ParseRule(loader, item));
      if (!names.insert(rule.name).second) {
        return yaml.Error(item["name"], absl::StrCat("duplicate rule name '", rule.name, "'"));
      }
      set->rules_.push_back(std::move(rule));
    }
  }

  // Sovereignty, proved at load time: every path a request can take to a target (each rule's
  // route, fallbacks and candidates, and the default) must respect that target's clearance for
  // the lowest level a request on that path can have.
  std::vector<std::pair<YAML::Mark, std::string>> unsafe;
  auto check = [&](std::string_view from, int floor, std::string_view cause,
                   std::string_view hop, const TargetInfo& target, const YAML::Mark& mark) {
    const int clearance = set->Clearance(target.name);
    if (floor <= clearance) return;
    unsafe.emplace_back(mark, absl::StrCat(Sv(from), " (", Sv(cause), ") → ", Sv(hop), "'",
                                           target.name, "' (clearance ",
                                           loader.levels[clearance], ")"));
  };
  check("default", loader.default_level,
        absl::StrCat("default_level: ", loader.levels[loader.default_level]), "",
        set->default_target_, node["default"].Mark());
  for (const Rule& rule : set->rules_) {
    // `route: cheapest` without `candidates` means every target cleared for the request.
    if (rule.deny || rule.implicit_candidates) continue;
    for (size_t i = 0; i < rule.route.size(); ++i) {
      const bool redacted = rule.redact && rule.route[i].locality == Locality::kRemote;
      const auto [floor, cause] = LevelFloor(rule, loader, redacted);
      const std::string_view hop = rule.cheapest ? "candidate " : i > 0 ? "fallback " : "";
      check(absl::StrCat("rule '", rule.name, "'"), floor,
            redacted ? absl::StrCat(cause, ", after redaction") : cause, hop, rule.route[i],
            rule.route_marks[i]);
    }
  }
  if (!unsafe.empty()) {
    std::string message = absl::StrCat("unsafe path: ", unsafe.front().second);
    for (size_t i = 1; i < unsafe.size(); ++i) {
      absl::StrAppend(&message, "; also ", unsafe[i].second);
    }
    return yaml.Error(unsafe.front().first, message);
  }

  auto scanner = Scanner::Build(loader.enabled_builtins, loader.terms, loader.regexes);
  if (!scanner.ok()) return yaml.Error(node, StdSv(scanner.status().message()));
  set->scanner_ = *std::move(scanner);
  set->levels_ = std::move(loader.levels);
  set->default_level_ = loader.default_level;
  set->min_confidence_ = loader.min_confidence;
  set->type_levels_.insert(loader.type_levels.begin(), loader.type_levels.end());
  set->metadata_key_ = std::move(loader.metadata_key);
  set->tenant_levels_ = std::move(loader.tenant_levels);
  set->groups_ = std::move(loader.groups);
  return set;
}

int PolicySet::TargetIndex(std::string_view name) const {
  for (size_t i = 0; i < targets_.size(); ++i) {
    if (targets_[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

double PolicySet::RuleCostUsd(const Rule& rule, const CostEstimate& cost,
                              const TargetInfo* pinned, int level, int redacted_level) const {
  auto usd = [&](std::string_view name) {
    const int index = TargetIndex(name);
    return index < 0 ? 0 : cost.targets[index].estimated_usd;
  };
  // A deny rule is priced on where the request would otherwise go.
  if (rule.deny) return usd(pinned != nullptr ? pinned->name : default_target_.name);
  // A route on the target that would serve it: the first (or cheapest) one cleared.
  std::optional<double> best;
  for (const TargetInfo& target : rule.route) {
    const bool redacted = rule.redact && target.locality == Locality::kRemote;
    if (!MayReceive(target.name, redacted ? redacted_level : level)) continue;
    const double price = usd(target.name);
    if (!rule.cheapest) return price;
    if (!best || price < *best) best = price;
  }
  return best.value_or(usd(rule.target.name));
}

const TargetInfo* PolicySet::FindTarget(std::string_view name) const {
  for (const TargetInfo& target : targets_) {
    if (target.name == name) return &target;
  }
  return nullptr;
}

int PolicySet::Clearance(std::string_view target) const {
  for (size_t i = 0; i < targets_.size(); ++i) {
    if (targets_[i].name == target) return clearance_[i];
  }
  return -1;
}

bool PolicySet::MayReceive(std::string_view target, int level_rank) const {
  return level_rank <= Clearance(target);
}

bool PolicySet::Redacts(const Decision& decision, std::string_view target) const {
  if (!decision.redact) return false;
  const TargetInfo* info = FindTarget(target);
  return info != nullptr && info->locality == Locality::kRemote;
}

int PolicySet::SentLevel(const Decision& decision, std::string_view target) const {
  return Redacts(decision, target) ? decision.redacted_level_rank : decision.level_rank;
}

void PolicySet::ExplainRejections(const Rule* fired, Decision& decision) const {
  decision.rejected.reserve(targets_.size());
  auto usd = [&](std::string_view name) {
    const int index = TargetIndex(name);
    return index < 0 || decision.cost.targets.empty() ? 0.0
                                                       : decision.cost.targets[index].estimated_usd;
  };
  // Why a cleared target that is not on the decided route was passed over.
  const std::string elsewhere =
      fired != nullptr && fired->deny ? absl::StrCat("rule '", fired->name, "' denied the request")
      : fired != nullptr              ? absl::StrCat("rule '", fired->name, "' fired first")
      : decision.rule == "requested"  ? std::string("the request named another target")
                                      : absl::StrCat("no rule matched; the default is '",
                                                     default_target_.name, "'");
  for (const TargetInfo& info : targets_) {
    if (!decision.denied && info.name == decision.target) continue;
    std::string reason;
    if (!MayReceive(decision, info.name)) {
      reason = absl::StrCat("not cleared for ", levels_[SentLevel(decision, info.name)],
                            Redacts(decision, info.name) ? " (after redaction)" : "");
    } else if (decision.denied) {
      reason = elsewhere;
    } else if (auto it = std::find(decision.targets.begin(), decision.targets.end(), info.name);
               it != decision.targets.end()) {
      const size_t position = static_cast<size_t>(it - decision.targets.begin()) + 1;
      reason = fired != nullptr && fired->cheapest
                   ? absl::StrCat("more expensive: ", usd(info.name), " USD vs ",
                                  usd(decision.target), " USD (fallback ", position, ")")
                   : absl::StrCat("fallback ", position, " of rule '", decision.rule, "'");
    } else if (fired != nullptr && fired->cheapest) {
      reason = absl::StrCat("not a candidate of rule '", fired->name, "'");
    } else {
      reason = elsewhere;
    }
    decision.rejected.push_back({info.name, std::move(reason)});
  }
}

std::vector<std::string> PolicySet::TextRules() const {
  std::vector<std::string> names;
  for (const Rule& rule : rules_) {
    if (rule.keyword_group >= 0 || rule.pattern_group >= 0) names.push_back(rule.name);
  }
  return names;
}

Decision PolicySet::Classify(const RequestFeatures& request) const {
  Decision decision;
  decision.policy_version = version_;
  const int top = static_cast<int>(levels_.size()) - 1;

  // Per-thread buffers, reused: their capacity stays, so a request allocates no scratch.
  thread_local std::vector<char> group_hit;
  thread_local std::vector<const Scanner::Hit*> typed;  // hits of named dictionaries/patterns
  thread_local Scanner::Result result;
  group_hit.assign(groups_.size(), 0);
  for (size_t i = 0; i < request.texts.size(); ++i) {
    if (absl::Status status = scanner_->Scan(request.texts[i], result); !status.ok()) {
      decision.rule = "default";
      decision.denied = true;
      decision.reason = absl::StrCat("the request could not be classified: ", status.message());
      decision.level_rank = decision.redacted_level_rank = top;
      decision.level = decision.redacted_level = levels_[top];
      decision.findings.clear();
      for (const TargetInfo& info : targets_) {
        decision.rejected.push_back({info.name, "the request could not be classified"});
      }
      return decision;
    }
    typed.clear();
    for (const Scanner::Hit& hit : result.hits) {
      group_hit[hit.group] = 1;
      if (!groups_[hit.group].type.empty()) typed.push_back(&hit);
    }
    std::sort(typed.begin(), typed.end(), [](const Scanner::Hit* a, const Scanner::Hit* b) {
      if (a->start != b->start) return a->start < b->start;
      if (a->end != b->end) return a->end < b->end;
      return a->group < b->group;
    });
    // Built-in findings come sorted by start: merging the two runs keeps decision.findings
    // ordered by message and start (built-ins first on a tie) without sorting it afterwards.
    decision.findings.reserve(decision.findings.size() + result.findings.size() + typed.size());
    size_t next_builtin = 0;
    size_t next_hit = 0;
    while (next_builtin < result.findings.size() || next_hit < typed.size()) {
      if (next_hit == typed.size() ||
          (next_builtin < result.findings.size() &&
           result.findings[next_builtin].start <= typed[next_hit]->start)) {
        Finding& finding = result.findings[next_builtin++];
        if (finding.confidence < min_confidence_) continue;
        finding.message = i;
        decision.findings.push_back(std::move(finding));
      } else {
        const Scanner::Hit& hit = *typed[next_hit++];
        decision.findings.push_back({groups_[hit.group].type, i, hit.start, hit.end, 1.0});
      }
    }
  }
  // A replay without the text: only the recorded findings (texts is empty, so no order to keep).
  if (request.recorded_findings != nullptr) {
    for (const Finding& finding : *request.recorded_findings) {
      if (type_levels_.contains(finding.type)) decision.findings.push_back(finding);
    }
  }

  // What redaction cannot remove: the default level, the tenant floor and the caller's label.
  int floor = default_level_;
  if (request.metadata != nullptr) {
    if (auto tenant = request.metadata->find("tenant"); tenant != request.metadata->end()) {
      if (auto it = tenant_levels_.find(tenant->second); it != tenant_levels_.end()) {
        floor = std::max(floor, it->second);
      }
    }
    if (auto label = request.metadata->find(metadata_key_); label != request.metadata->end()) {
      auto it = std::find(levels_.begin(), levels_.end(), label->second);
      // A label we cannot read might have meant anything: assume the worst.
      floor = std::max(floor, it == levels_.end() ? top : static_cast<int>(it - levels_.begin()));
    }
  }
  // The request's level, leaving out the findings `redacting` replaces with placeholders.
  auto level_without = [&](const Rule* redacting) {
    int result = floor;
    for (const Finding& finding : decision.findings) {
      if (redacting != nullptr && redacting->Redacts(finding.type)) continue;
      if (auto it = type_levels_.find(finding.type); it != type_levels_.end()) {
        result = std::max(result, it->second);
      }
    }
    return result;
  };
  const int level = level_without(nullptr);
  decision.level_rank = decision.redacted_level_rank = level;
  decision.level = decision.redacted_level = levels_[level];

  CostEstimate& cost = decision.cost;
  if (request.prompt_tokens.has_value()) {
    cost.prompt_tokens = std::max<int64_t>(0, *request.prompt_tokens);
    cost.prompt_tokens_exact = true;
  } else {
    for (std::string_view text : request.texts) {
      cost.prompt_tokens += static_cast<int64_t>(
                                std::ceil(static_cast<double>(text.size()) /
                                          cost_model_.bytes_per_token)) +
                            cost_model_.message_overhead_tokens;
    }
  }
  cost.completion_tokens = request.max_tokens.has_value() && *request.max_tokens > 0
                               ? *request.max_tokens
                               : cost_model_.expected_completion_tokens;
  cost.targets.reserve(targets_.size());
  for (const TargetInfo& info : targets_) {
    int64_t prompt = cost.prompt_tokens;
    bool exact = cost.prompt_tokens_exact;
    if (!exact && info.locality == Locality::kLocal && request.token_counter != nullptr) {
      if (std::optional<int64_t> counted = request.token_counter->CountPromptTokens(info.name)) {
        prompt = std::max<int64_t>(0, *counted);
        exact = true;
      }
    }
    cost.targets.push_back(
        {info.name,
         (static_cast<double>(prompt) * info.input_usd_per_million +
          static_cast<double>(cost.completion_tokens) * info.output_usd_per_million) /
             1e6,
         prompt, cost.completion_tokens, exact});
  }

  decision.difficulty = request.recorded_difficulty.has_value()
                            ? *request.recorded_difficulty
                            : difficulty_->Score(request, cost.prompt_tokens);
  const double difficulty = decision.difficulty.score;
  const DifficultyTier tier = decision.difficulty.tier;

  const TargetInfo* pinned =
      request.requested_model == "auto" ? nullptr : FindTarget(request.requested_model);

  auto matches = [&](const Rule& rule) {
    if (!rule.models.empty() &&
        std::find(rule.models.begin(), rule.models.end(), request.requested_model) ==
            rule.models.end()) {
      return false;
    }
    if (rule.min_level && level < *rule.min_level) return false;
    if (rule.max_level && level > *rule.max_level) return false;
    if (!MetadataMatches(rule, request.metadata)) return false;
    if (!rule.difficulty_tiers.empty() &&
        std::find(rule.difficulty_tiers.begin(), rule.difficulty_tiers.end(), tier) ==
            rule.difficulty_tiers.end()) {
      return false;
    }
    if (rule.min_difficulty && difficulty < *rule.min_difficulty) return false;
    if (rule.max_difficulty && difficulty > *rule.max_difficulty) return false;
    if (rule.min_estimated_usd || rule.max_estimated_usd) {
      const double usd =
          RuleCostUsd(rule, cost, pinned, level, rule.redact ? level_without(&rule) : level);
      if (rule.min_estimated_usd && usd < *rule.min_estimated_usd) return false;
      if (rule.max_estimated_usd && usd > *rule.max_estimated_usd) return false;
    }
    if (!rule.has_content_test()) return true;
    if (rule.keyword_group >= 0 && group_hit[rule.keyword_group]) return true;
    if (rule.pattern_group >= 0 && group_hit[rule.pattern_group]) return true;
    for (const Finding& finding : decision.findings) {
      for (const std::string& wanted : rule.findings) {
        if (TypeMatches(finding.type, wanted)) return true;
      }
    }
    return false;
  };

  const Rule* fired = nullptr;
  for (const Rule& rule : rules_) {
    // A pinned request only yields to rules about its content or about the model it named.
    if (pinned != nullptr && !rule.is_content_rule() && rule.models.empty()) continue;
    if (!matches(rule)) continue;
    decision.rule = rule.name;
    fired = &rule;
    if (rule.deny) {
      decision.denied = true;
      decision.reason = rule.deny_message;
      ExplainRejections(fired, decision);
      return decision;
    }
    decision.reason = rule.description;
    break;
  }
  if (fired != nullptr && fired->redact) {
    decision.redact = true;
    decision.redacted_level_rank = level_without(fired);
    decision.redacted_level = levels_[decision.redacted_level_rank];
    for (Finding& finding : decision.findings) finding.redacted = fired->Redacts(finding.type);
  }
  std::vector<const TargetInfo*> chosen;
  std::string refused;  // the planned targets that may not receive what they would be sent
  auto consider = [&](const TargetInfo& candidate) {
    if (MayReceive(decision, candidate.name)) {
      chosen.push_back(&candidate);
    } else {
      absl::StrAppend(&refused, refused.empty() ? "'" : ", '", candidate.name, "'",
                      Redacts(decision, candidate.name)
                          ? absl::StrCat(" (", levels_[decision.redacted_level_rank],
                                         " after redaction)")
                          : "");
    }
  };
  if (fired != nullptr) {
    for (const TargetInfo& candidate : fired->route) consider(candidate);
    if (fired->cheapest) {
      std::stable_sort(chosen.begin(), chosen.end(), [&](const TargetInfo* a, const TargetInfo* b) {
        return cost.targets[TargetIndex(a->name)].estimated_usd <
               cost.targets[TargetIndex(b->name)].estimated_usd;
      });
    }
  } else {
    decision.rule = pinned != nullptr ? "requested" : "default";
    consider(pinned != nullptr ? *pinned : default_target_);
  }
  if (chosen.empty()) {
    if (MayReceive(decision, default_target_.name)) {
      chosen.push_back(&default_target_);
      decision.reason = absl::StrCat(refused, " may not receive ", levels_[level],
                                     " data; sent to the default target");
    } else {
      decision.denied = true;
      decision.reason = absl::StrCat("no permitted target: ", refused, " may not receive ",
                                     levels_[level], " data");
      ExplainRejections(fired, decision);
      return decision;
    }
  }
  const TargetInfo* target = chosen.front();
  decision.targets.reserve(chosen.size());
  for (const TargetInfo* info : chosen) decision.targets.push_back(info->name);
  decision.target = target->name;
  decision.locality = target->locality;
  const TargetCost& served = cost.targets[TargetIndex(target->name)];
  cost.estimated_usd = served.estimated_usd;
  cost.prompt_tokens = served.prompt_tokens;
  cost.prompt_tokens_exact = served.prompt_tokens_exact;
  ExplainRejections(fired, decision);
  return decision;
}

}  // namespace switchyard::policies
