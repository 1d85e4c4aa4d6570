#include "policies/policy_set.h"

#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policies/yaml_util.h"

namespace switchyard::policies {
namespace {

using ::testing::HasSubstr;

const std::vector<TargetInfo>& Targets() {
  static const auto* targets = new std::vector<TargetInfo>{
      {"local", Locality::kLocal},
      {"gpt-4o", Locality::kRemote},
      {"claude", Locality::kRemote},
  };
  return *targets;
}

// Parses `text` (a whole config file with a `policy:` section) as "policy.yaml".
absl::StatusOr<std::shared_ptr<const PolicySet>> Load(std::string_view text) {
  auto root = ParseYaml(text, "policy.yaml");
  if (!root.ok()) return root.status();
  return PolicySet::FromYaml((*root)["policy"], "policy.yaml", Targets(), "v123");
}

constexpr std::string_view kExamplePolicy = R"EOF(
policy:
  default: local
  rules:
    - name: keep-secrets-local
      description: Confidential material never leaves the host
      when:
        keywords: [confidential, "project falcon", "c++"]
        patterns: ['\b\d{3}-\d{2}-\d{4}\b']
      route: local
    - name: block
      when: { keywords: [forbidden] }
      deny: "This request is not allowed"
    - name: hard-to-frontier
      when: { model: gpt-4o }
      route: gpt-4o
    - name: claude-for-reviews
      description: Reviews go to claude
      when: { keywords: [review] }
      route: claude
    - name: aliases
      when: { model: [smart, clever] }
      route: gpt-4o
)EOF";

struct ClassifyCase {
  std::string name;
  std::vector<std::string> texts;
  std::string model;
  std::string want_target;  // empty when denied
  std::string want_rule;
};

void PrintTo(const ClassifyCase& c, std::ostream* os) { *os << c.name; }

class ClassifyTest : public ::testing::TestWithParam<ClassifyCase> {};

TEST_P(ClassifyTest, Decides) {
  auto set = Load(kExamplePolicy);
  ASSERT_TRUE(set.ok()) << set.status();
  const ClassifyCase& c = GetParam();
  RequestFeatures request;
  for (const std::string& text : c.texts) request.texts.push_back(text);
  request.requested_model = c.model;
  Decision decision = (*set)->Classify(request);
  EXPECT_EQ(decision.target, c.want_target);
  EXPECT_EQ(decision.rule, c.want_rule);
  EXPECT_EQ(decision.denied, c.want_target.empty());
  EXPECT_EQ(decision.policy_version, "v123");
  if (!c.want_target.empty()) {
    const Locality want = c.want_target == "local" ? Locality::kLocal : Locality::kRemote;
    EXPECT_EQ(decision.locality, want);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, ClassifyTest,
    ::testing::ValuesIn(std::vector<ClassifyCase>{
        {"NoMatchUsesDefault", {"hello there"}, "auto", "local", "default"},
        {"KeywordCaseInsensitive", {"This is CONFIDENTIAL."}, "auto", "local",
         "keep-secrets-local"},
        {"KeywordWholeWordOnly", {"nonconfidentiality agreement"}, "auto", "local", "default"},
        {"PhraseAnyWhitespace", {"about Project\n  Falcon today"}, "auto", "local",
         "keep-secrets-local"},
        {"PhraseNeedsBothWords", {"project falconry"}, "auto", "local", "default"},
        {"KeywordWithSymbols", {"I write C++ daily"}, "auto", "local", "keep-secrets-local"},
        {"PatternMatches", {"ssn 123-45-6789 ok"}, "auto", "local", "keep-secrets-local"},
        {"PatternNeedsBoundaries", {"1123-45-67890"}, "auto", "local", "default"},
        {"LaterMessageScanned", {"hi", "a forbidden thing"}, "auto", "", "block"},
        {"FirstMatchWins", {"confidential and forbidden"}, "auto", "local",
         "keep-secrets-local"},
        {"AutoRulesRoute", {"please review this"}, "auto", "claude", "claude-for-reviews"},
        {"ModelRule", {"hello"}, "gpt-4o", "gpt-4o", "hard-to-frontier"},
        {"ModelListAlias", {"hello"}, "clever", "gpt-4o", "aliases"},
        {"PinnedKeepsTarget", {"hello"}, "claude", "claude", "requested"},
        {"PinnedSensitivityWins", {"confidential plan"}, "gpt-4o", "local",
         "keep-secrets-local"},
        {"PinnedDenyWins", {"forbidden"}, "claude", "", "block"},
        {"PinnedYieldsToContentRoute", {"review it"}, "local", "claude",
         "claude-for-reviews"},
        {"UnknownModelActsLikeAuto", {"hello"}, "mystery", "local", "default"},
        {"EmptyRequest", {}, "auto", "local", "default"},
    }),
    [](const auto& info) { return info.param.name; });

TEST(PolicySetTest, DecisionCarriesReason) {
  auto set = Load(kExamplePolicy);
  ASSERT_TRUE(set.ok()) << set.status();
  RequestFeatures request;
  request.texts = {"forbidden"};
  EXPECT_EQ((*set)->Classify(request).reason, "This request is not allowed");
  request.texts = {"confidential"};
  EXPECT_EQ((*set)->Classify(request).reason, "Confidential material never leaves the host");
  EXPECT_EQ((*set)->version(), "v123");
}

TEST(PolicySetTest, RuleWithoutWhenMatchesEverythingUnlessPinned) {
  auto set = Load(R"EOF(
policy:
  default: local
  rules:
    - name: everything-remote
      route: gpt-4o
)EOF");
  ASSERT_TRUE(set.ok()) << set.status();
  RequestFeatures request;
  request.texts = {"hi"};
  EXPECT_EQ((*set)->Classify(request).target, "gpt-4o");
  request.requested_model = "claude";
  EXPECT_EQ((*set)->Classify(request).target, "claude");
}

struct ErrorCase {
  std::string name;
  std::string yaml;
  std::string want;  // the whole message
};

void PrintTo(const ErrorCase& c, std::ostream* os) { *os << c.name; }

class FromYamlErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(FromYamlErrorTest, ReportsPosition) {
  auto set = Load(GetParam().yaml);
  ASSERT_FALSE(set.ok());
  EXPECT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(set.status().message()), GetParam().want);
}

INSTANTIATE_TEST_SUITE_P(
    Table, FromYamlErrorTest,
    ::testing::ValuesIn(std::vector<ErrorCase>{
        {"UnknownPolicyKey", R"EOF(
policy:
  default: local
  rulez: []
)EOF",
         "policy.yaml:4:3: unknown key 'rulez' in policy (did you mean 'rules'?)"},
        {"MissingDefault", R"EOF(
policy:
  rules: []
)EOF",
         "policy.yaml:3:3: missing required key 'default' in policy"},
        {"UnknownDefault", R"EOF(
policy:
  default: nowhere
)EOF",
         "policy.yaml:3:12: 'default' names unknown target 'nowhere' (targets: local, gpt-4o, "
         "claude)"},
        {"RulesNotList", R"EOF(
policy:
  default: local
  rules: {a: b}
)EOF",
         "policy.yaml:4:10: 'rules' must be a list of rules"},
        {"UnknownRuleKey", R"EOF(
policy:
  default: local
  rules:
    - name: r
      rout: local
)EOF",
         "policy.yaml:6:7: unknown key 'rout' in a rule (did you mean 'route'?)"},
        {"UnknownWhenKey", R"EOF(
policy:
  default: local
  rules:
    - name: r
      when:
        keyword: [a]
      route: local
)EOF",
         "policy.yaml:7:9: unknown key 'keyword' in the 'when' of rule 'r' (did you mean "
         "'keywords'?)"},
        {"UnknownRouteTarget", R"EOF(
policy:
  default: local
  rules:
    - name: r
      route: gpt-5
)EOF",
         "policy.yaml:6:14: rule 'r' names unknown target 'gpt-5' (targets: local, gpt-4o, "
         "claude)"},
        {"InvalidRegex", R"EOF(
policy:
  default: local
  rules:
    - name: r
      when:
        patterns: ['ok', '(unclosed']
      route: local
)EOF",
         "policy.yaml:7:26: invalid regex '(unclosed': missing ): (unclosed"},
        {"MissingAction", R"EOF(
policy:
  default: local
  rules:
    - name: r
      when: {keywords: [a]}
)EOF",
         "policy.yaml:5:7: rule 'r' needs an action: 'route' or 'deny'"},
        {"BothActions", R"EOF(
policy:
  default: local
  rules:
    - name: r
      route: local
      deny: no
)EOF",
         "policy.yaml:7:13: rule 'r' has both 'route' and 'deny'; give exactly one"},
        {"MissingName", R"EOF(
policy:
  default: local
  rules:
    - route: local
)EOF",
         "policy.yaml:5:7: missing required key 'name'"},
        {"DuplicateName", R"EOF(
policy:
  default: local
  rules:
    - {name: r, route: local}
    - {name: r, route: gpt-4o}
)EOF",
         "policy.yaml:6:14: duplicate rule name 'r'"},
        {"ReservedName", R"EOF(
policy:
  default: local
  rules:
    - {name: default, route: local}
)EOF",
         "policy.yaml:5:14: 'default' is reserved and cannot name a rule"},
        {"EmptyKeywords", R"EOF(
policy:
  default: local
  rules:
    - name: r
      when: {keywords: []}
      route: local
)EOF",
         "policy.yaml:6:24: 'keywords' must not be empty"},
        {"BlankKeyword", R"EOF(
policy:
  default: local
  rules:
    - name: r
      when: {keywords: [a, "  "]}
      route: local
)EOF",
         "policy.yaml:6:28: an item of 'keywords' is empty"},
        {"KeywordsNotList", R"EOF(
policy:
  default: local
  rules:
    - name: r
      when: {keywords: secret}
      route: local
)EOF",
         "policy.yaml:6:24: 'keywords' must be a list of strings"},
        {"EmptyDeny", R"EOF(
policy:
  default: local
  rules:
    - name: r
      deny: ""
)EOF",
         "policy.yaml:6:13: a deny message must not be empty: the client reads it"},
        {"PolicyNotMap", R"EOF(
policy: [local]
)EOF",
         "policy.yaml:2:9: policy must be a map, not a list"},
    }),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace switchyard::policies
