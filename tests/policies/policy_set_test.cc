#include "policies/policy_set.h"

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <map>
#include <string>
#include <thread>
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

// Maps shared through an alias are one map, not a repetition, even one that holds itself.
TEST(ParseYamlTest, AliasesAreNotDuplicates) {
  auto root =
      ParseYaml("base: &b {x: 1, y: 2}\nuse: *b\nloop: &l [1, *l]\nagain: *l\n", "a.yaml");
  ASSERT_TRUE(root.ok()) << root.status();
  EXPECT_EQ((*root)["use"]["y"].as<int>(), 2);
  auto nested = ParseYaml("a:\n  - {k: 1}\n  - {k: 2, b: {c: 1, c: 1}}\n", "a.yaml");
  ASSERT_FALSE(nested.ok());
  EXPECT_EQ(std::string(nested.status().message()),
            "a.yaml:3:22: duplicate key 'c' (first at line 3)");
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
        // yaml-cpp keeps both entries of a repeated key: lookups read the first, loops both.
        {"DuplicatePolicySection", R"EOF(
policy:
  default: gpt-4o
policy:
  default: local
)EOF",
         "policy.yaml:4:1: duplicate key 'policy' (first at line 2)"},
        {"DuplicateClearance", R"EOF(
policy:
  default: local
  clearance: {gpt-4o: public, gpt-4o: internal}
)EOF",
         "policy.yaml:4:31: duplicate key 'gpt-4o' (first at line 4)"},
        {"DuplicateWhen", R"EOF(
policy:
  default: local
  rules:
    - name: r
      when: { keywords: [secret] }
      route: local
      when: { model: gpt-4o }
)EOF",
         "policy.yaml:8:7: duplicate key 'when' (first at line 6)"},
        {"DuplicateQuotedKey", R"EOF(
policy:
  default: local
  "default": gpt-4o
)EOF",
         "policy.yaml:4:3: duplicate key 'default' (first at line 3)"},
    }),
    [](const auto& info) { return info.param.name; });

constexpr std::string_view kSensitivityPolicy = R"EOF(
policy:
  default: local
  sensitivity:
    detectors:
      secret.jwt: confidential
      ip_address: off
    dictionaries:
      - name: codenames
        level: confidential
        terms: [falcon, "blue heron"]
    patterns:
      - name: employee_id
        level: internal
        regex: '\bEMP-\d{6}\b'
    tenants: { acme: internal }
  clearance: { gpt-4o: internal, claude: public }
  rules:
    - name: no-cards-anywhere
      when: { findings: [credit_card] }
      deny: "Card numbers are not accepted"
    - name: secrets-local
      when: { findings: [secret] }
      route: local
    - name: sensitive-local
      when: { min_level: confidential }
      route: local
    - name: ml-team
      when: { metadata: { team: [ml, research] }, max_level: public }
      route: claude
    - name: everything-else
      route: gpt-4o
)EOF";

struct LevelCase {
  std::string name;
  std::string text;
  std::map<std::string, std::string> metadata;
  std::string model;
  std::string want_level;
  std::string want_target;  // empty when denied
  std::string want_rule;
  std::vector<std::string> want_types;
};

void PrintTo(const LevelCase& c, std::ostream* os) { *os << c.name; }

class SensitivityTest : public ::testing::TestWithParam<LevelCase> {};

TEST_P(SensitivityTest, Decides) {
  auto set = Load(kSensitivityPolicy);
  ASSERT_TRUE(set.ok()) << set.status();
  const LevelCase& c = GetParam();
  RequestFeatures request;
  request.texts = {c.text};
  request.metadata = &c.metadata;
  request.requested_model = c.model;
  Decision decision = (*set)->Classify(request);
  EXPECT_EQ(decision.level, c.want_level);
  EXPECT_EQ(decision.target, c.want_target);
  EXPECT_EQ(decision.rule, c.want_rule);
  std::vector<std::string> types;
  for (const Finding& finding : decision.findings) types.push_back(finding.type);
  EXPECT_THAT(types, ::testing::ElementsAreArray(c.want_types));
}

INSTANTIATE_TEST_SUITE_P(
    Table, SensitivityTest,
    ::testing::ValuesIn(std::vector<LevelCase>{
        {"Public", "what is 2+2", {}, "auto", "public", "gpt-4o", "everything-else", {}},
        {"EmailIsInternal", "mail bob@acme.io", {}, "auto", "internal", "gpt-4o",
         "everything-else", {"email"}},
        {"DictionaryIsConfidential", "status of Blue\nHeron?", {}, "auto", "confidential", "local",
         "sensitive-local", {"codenames"}},
        {"PatternFinding", "badge EMP-123456", {}, "auto", "internal", "gpt-4o", "everything-else",
         {"employee_id"}},
        {"DisabledDetectorSilent", "ping 10.1.2.3", {}, "auto", "public", "gpt-4o",
         "everything-else", {}},
        {"CardDenied", "pay with 4111-1111-1111-1111", {}, "auto", "restricted", "",
         "no-cards-anywhere", {"credit_card"}},
        {"SecretPrefix", "key AKIAQ3EGRTNDVB2YOBXR", {}, "auto", "restricted", "local",
         "secrets-local", {"secret.aws_access_key"}},
        {"LabelRaises", "hello", {{"sensitivity", "confidential"}}, "auto", "confidential",
         "local", "sensitive-local", {}},
        {"LabelNeverLowers", "mail bob@acme.io", {{"sensitivity", "public"}}, "auto", "internal",
         "gpt-4o", "everything-else", {"email"}},
        {"UnknownLabelFailsClosed", "hello", {{"sensitivity", "secret-ish"}}, "auto",
         "restricted", "local", "sensitive-local", {}},
        {"TenantFloor", "hello", {{"tenant", "acme"}}, "auto", "internal", "gpt-4o",
         "everything-else", {}},
        {"MetadataRule", "hello", {{"team", "ml"}}, "auto", "public", "claude", "ml-team", {}},
        {"MetadataRuleNeedsLevel", "bob@acme.io", {{"team", "ml"}}, "auto", "internal", "gpt-4o",
         "everything-else", {"email"}},
        {"PinnedBeyondClearanceGoesDefault", "mail bob@acme.io", {}, "claude", "internal",
         "local", "requested", {"email"}},
        {"PinnedWithinClearance", "hello", {}, "claude", "public", "claude", "requested", {}},
    }),
    [](const auto& info) { return info.param.name; });

TEST(PolicySetTest, FindingsCarrySpansNotValues) {
  auto set = Load(kSensitivityPolicy);
  ASSERT_TRUE(set.ok()) << set.status();
  RequestFeatures request;
  request.texts = {"hi", "write to bob@acme.io or FALCON"};
  Decision decision = (*set)->Classify(request);
  ASSERT_EQ(decision.findings.size(), 2u);
  EXPECT_EQ(decision.findings[0], (Finding{"email", 1, 9, 20, 0.95}));
  EXPECT_EQ(decision.findings[1], (Finding{"codenames", 1, 24, 30, 1.0}));
}

// Pattern regexes read the text as UTF-8, as RE2 (which validates them) does: '.' and a class
// are one character, so a name with an umlaut is found and raises the level.
TEST(PolicySetTest, PatternsMatchCharactersNotBytes) {
  auto set = Load(R"EOF(
policy:
  default: local
  sensitivity:
    patterns:
      - { name: surname, level: confidential, regex: 'M.ller' }
      - { name: umlaut_surname, level: internal, regex: 'M[äöü]ller' }
  clearance: { gpt-4o: internal }
  rules:
    - name: to-cloud
      route: gpt-4o
)EOF");
  ASSERT_TRUE(set.ok()) << set.status();
  RequestFeatures request;
  request.texts = {"Herr Müller"};
  const Decision decision = (*set)->Classify(request);
  EXPECT_EQ(decision.level, "confidential");
  EXPECT_EQ(decision.target, "local");
  ASSERT_EQ(decision.findings.size(), 2u);
  EXPECT_EQ(decision.findings[0], (Finding{"surname", 0, 5, 12, 1.0}));
  EXPECT_EQ(decision.findings[1], (Finding{"umlaut_surname", 0, 5, 12, 1.0}));
}

// A replay without the text: recorded finding types decide the level and `findings` rules;
// types of detectors this policy does not run are dropped; keyword rules are named as untestable.
TEST(PolicySetTest, RecordedFindingsStandInForTheScan) {
  auto set = Load(kSensitivityPolicy);
  ASSERT_TRUE(set.ok()) << set.status();
  const std::vector<Finding> recorded = {{"codenames", 0, 0, 0, 1.0}, {"ip_address", 0, 0, 0, 1.0}};
  RequestFeatures request;
  request.recorded_findings = &recorded;
  request.prompt_tokens = 100;
  request.recorded_difficulty = DifficultyScore{0.75, DifficultyTier::kHard, {}};
  Decision decision = (*set)->Classify(request);
  EXPECT_EQ(decision.level, "confidential");
  EXPECT_EQ(decision.rule, "sensitive-local");
  ASSERT_EQ(decision.findings.size(), 1u);  // ip_address is off in this policy
  EXPECT_EQ(decision.findings[0].type, "codenames");
  EXPECT_EQ(decision.difficulty.score, 0.75);
  EXPECT_EQ(decision.difficulty.tier, DifficultyTier::kHard);
  EXPECT_EQ(decision.cost.prompt_tokens, 100);

  const std::vector<Finding> card = {{"credit_card", 0, 0, 0, 1.0}};
  request.recorded_findings = &card;
  EXPECT_TRUE((*set)->Classify(request).denied);

  EXPECT_EQ((*set)->TextRules(), std::vector<std::string>{});
  auto example = Load(kExamplePolicy);
  ASSERT_TRUE(example.ok());
  EXPECT_EQ((*example)->TextRules(),
            (std::vector<std::string>{"keep-secrets-local", "block", "claude-for-reviews"}));
}

TEST(PolicySetTest, ClearanceFailsClosedWithoutPermittedTarget) {
  auto set = Load(R"EOF(
policy:
  default: gpt-4o
  clearance: { gpt-4o: internal }
)EOF");
  ASSERT_TRUE(set.ok()) << set.status();
  RequestFeatures request;
  request.texts = {"card 4111 1111 1111 1111"};
  Decision decision = (*set)->Classify(request);
  EXPECT_TRUE(decision.denied);
  EXPECT_EQ(decision.target, "");
  EXPECT_THAT(decision.reason, HasSubstr("may not receive restricted"));
  EXPECT_TRUE((*set)->MayReceive("local", 3));
  EXPECT_FALSE((*set)->MayReceive("claude", 1));  // remote and not cleared: public only
  EXPECT_TRUE((*set)->MayReceive("claude", 0));
  EXPECT_FALSE((*set)->MayReceive("nowhere", 0));
}

TEST(PolicySetTest, LargeDictionary) {
  std::string yaml = "policy:\n  default: local\n  sensitivity:\n    dictionaries:\n"
                     "      - name: customers\n        level: restricted\n        terms:\n";
  for (int i = 0; i < 5000; ++i) yaml += "          - customer" + std::to_string(i) + "\n";
  auto set = Load(yaml);
  ASSERT_TRUE(set.ok()) << set.status();
  RequestFeatures request;
  request.texts = {"about CUSTOMER4321 and customer43210x"};
  Decision decision = (*set)->Classify(request);
  EXPECT_EQ(decision.level, "restricted");
  ASSERT_EQ(decision.findings.size(), 1u);
  EXPECT_EQ(decision.findings[0].start, 6u);
}

// Classify runs on many gateway threads at once; each keeps its own Hyperscan scratch.
TEST(PolicySetTest, ClassifyIsThreadSafe) {
  auto set = Load(kSensitivityPolicy);
  ASSERT_TRUE(set.ok()) << set.status();
  const std::vector<std::string> texts = {"mail bob@acme.io", "about blue heron",
                                          "key AKIAQ3EGRTNDVB2YOBXR", "hello",
                                          "pay 4111 1111 1111 1111"};
  std::vector<Decision> want;
  for (const std::string& text : texts) {
    RequestFeatures request;
    request.texts = {text};
    want.push_back((*set)->Classify(request));
  }
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const size_t k = static_cast<size_t>(i + t) % texts.size();
        RequestFeatures request;
        request.texts = {texts[k]};
        const Decision got = (*set)->Classify(request);
        if (got.target != want[k].target || got.findings != want[k].findings) ++mismatches;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(
    Sensitivity, FromYamlErrorTest,
    ::testing::ValuesIn(std::vector<ErrorCase>{
        {"UnknownDetector", R"EOF(
policy:
  default: local
  sensitivity:
    detectors: { emial: internal }
)EOF",
         "policy.yaml:5:18: unknown detector 'emial' (detectors: email, phone, credit_card, iban, "
         "us_ssn, ip_address, secret.aws_access_key, secret.github_token, secret.slack_token, "
         "secret.slack_webhook, secret.stripe_key, secret.openai_api_key, "
         "secret.anthropic_api_key, secret.google_api_key, secret.google_oauth_token, "
         "secret.private_key, secret.jwt, secret.generic, secret)"},
        {"UnknownLevel", R"EOF(
policy:
  default: local
  sensitivity:
    detectors: { email: secret }
)EOF",
         "policy.yaml:5:25: detector 'email' names unknown level 'secret' (levels: public, "
         "internal, confidential, restricted)"},
        {"UnknownFindingType", R"EOF(
policy:
  default: local
  rules:
    - name: r
      when: { findings: [emails] }
      route: local
)EOF",
         "policy.yaml:6:26: unknown finding type 'emails' (types: email, phone, credit_card, "
         "iban, us_ssn, ip_address, secret.aws_access_key, secret, secret.github_token, "
         "secret.slack_token, secret.slack_webhook, secret.stripe_key, secret.openai_api_key, "
         "secret.anthropic_api_key, secret.google_api_key, secret.google_oauth_token, "
         "secret.private_key, secret.jwt, secret.generic)"},
        {"DisabledFindingType", R"EOF(
policy:
  default: local
  sensitivity:
    detectors: { phone: off }
  rules:
    - name: r
      when: { findings: [phone] }
      route: local
)EOF",
         "policy.yaml:8:26: rule 'r' tests finding 'phone' but that detector is off"},
        {"InvalidDictionaryPatternRegex", R"EOF(
policy:
  default: local
  sensitivity:
    patterns:
      - { name: p, level: internal, regex: 'a(b' }
)EOF",
         "policy.yaml:6:44: invalid regex 'a(b': missing ): a(b"},
        // Each of these matched an empty string somewhere in almost any message, a finding that
        // raised every such request's level: everywhere, at a word's edge, at a line's start.
        {"PatternMatchingEmpty", R"EOF(
policy:
  default: local
  sensitivity:
    patterns:
      - { name: p, level: internal, regex: 'x*' }
)EOF",
         "policy.yaml:6:44: regex 'x*' can match the empty string, and so almost any message; "
         "it must match at least one character"},
        {"PatternMatchingEmptyAtWordEdges", R"EOF(
policy:
  default: local
  sensitivity:
    patterns:
      - { name: p, level: internal, regex: '\b(?:EMP-\d{6})?' }
)EOF",
         "policy.yaml:6:44: regex '\\b(?:EMP-\\d{6})?' can match the empty string, and so almost "
         "any message; it must match at least one character"},
        {"RulePatternMatchingEmptyAtLineStarts", R"EOF(
policy:
  default: local
  rules:
    - name: r
      when: { patterns: ['^#', '(?m)^'] }
      route: local
)EOF",
         "policy.yaml:6:32: regex '(?m)^' can match the empty string, and so almost any message; "
         "it must match at least one character"},
        {"DuplicateTypeName", R"EOF(
policy:
  default: local
  sensitivity:
    dictionaries:
      - { name: email, level: internal, terms: [x] }
)EOF",
         "policy.yaml:6:17: finding type 'email' is already defined"},
        {"UnsafeRoute", R"EOF(
policy:
  default: local
  clearance: { gpt-4o: internal }
  rules:
    - name: r
      when: { min_level: confidential }
      route: gpt-4o
)EOF",
         "policy.yaml:8:14: unsafe path: rule 'r' (min_level: confidential) → 'gpt-4o' "
         "(clearance internal)"},
        {"ClearanceUnknownTarget", R"EOF(
policy:
  default: local
  clearance: { gpt-5: internal }
)EOF",
         "policy.yaml:4:16: 'clearance' names unknown target 'gpt-5' (targets: local, gpt-4o, "
         "claude)"},
        {"ImpossibleLevels", R"EOF(
policy:
  default: local
  rules:
    - name: r
      when: { min_level: restricted, max_level: public }
      route: local
)EOF",
         "policy.yaml:6:49: rule 'r' can never match: min_level is above max_level"},
        {"UnknownSensitivityKey", R"EOF(
policy:
  default: local
  sensitivity:
    level: [a]
)EOF",
         "policy.yaml:5:5: unknown key 'level' in sensitivity (did you mean 'levels'?)"},
    }),
    [](const auto& info) { return info.param.name; });

// Prices in USD per million tokens (input, output): local is free, gpt-4o dear, claude cheaper.
const std::vector<TargetInfo>& PricedTargets() {
  static const auto* targets = new std::vector<TargetInfo>{
      {"local", Locality::kLocal, 0, 0},
      {"gpt-4o", Locality::kRemote, 2.5, 10},
      {"claude", Locality::kRemote, 1, 5},
  };
  return *targets;
}

absl::StatusOr<std::shared_ptr<const PolicySet>> LoadPriced(std::string_view text) {
  auto root = ParseYaml(text, "policy.yaml");
  if (!root.ok()) return root.status();
  return PolicySet::FromYaml((*root)["policy"], "policy.yaml", PricedTargets(), "v1");
}

TEST(CostTest, EstimatesTokensFromBytes) {
  auto set = LoadPriced("policy: { default: gpt-4o }");
  ASSERT_TRUE(set.ok()) << set.status();
  const std::string system(100, 'a');  // 25 tokens + 4
  const std::string user(9, 'b');      // 3 tokens + 4
  RequestFeatures request;
  request.texts = {system, user};
  const Decision decision = (*set)->Classify(request);
  EXPECT_EQ(decision.cost.prompt_tokens, 36);
  EXPECT_FALSE(decision.cost.prompt_tokens_exact);
  EXPECT_EQ(decision.cost.completion_tokens, 256);
  ASSERT_EQ(decision.cost.targets.size(), 3u);
  EXPECT_EQ(decision.cost.targets[0].target, "local");
  EXPECT_DOUBLE_EQ(decision.cost.targets[0].estimated_usd, 0);
  EXPECT_EQ(decision.cost.targets[1].target, "gpt-4o");
  EXPECT_DOUBLE_EQ(decision.cost.targets[1].estimated_usd, (36 * 2.5 + 256 * 10) / 1e6);
  EXPECT_EQ(decision.cost.targets[1].prompt_tokens, 36);
  EXPECT_EQ(decision.cost.targets[1].completion_tokens, 256);
  EXPECT_DOUBLE_EQ(decision.cost.targets[2].estimated_usd, (36 * 1.0 + 256 * 5) / 1e6);
  EXPECT_DOUBLE_EQ(decision.cost.estimated_usd, decision.cost.targets[1].estimated_usd);
}

TEST(CostTest, ExactTokensAndMaxTokensWin) {
  auto set = LoadPriced(R"EOF(
policy:
  default: claude
  cost: { expected_completion_tokens: 1000, bytes_per_token: 2, message_overhead_tokens: 0 }
)EOF");
  ASSERT_TRUE(set.ok()) << set.status();
  RequestFeatures request;
  request.texts = {"abcd"};
  Decision decision = (*set)->Classify(request);
  EXPECT_EQ(decision.cost.prompt_tokens, 2);
  EXPECT_EQ(decision.cost.completion_tokens, 1000);
  request.prompt_tokens = 4000;
  request.max_tokens = 100;
  decision = (*set)->Classify(request);
  EXPECT_EQ(decision.cost.prompt_tokens, 4000);
  EXPECT_TRUE(decision.cost.prompt_tokens_exact);
  EXPECT_EQ(decision.cost.completion_tokens, 100);
  EXPECT_DOUBLE_EQ(decision.cost.estimated_usd, (4000 * 1.0 + 100 * 5) / 1e6);
}

TEST(CostTest, DeniedRequestCostsNothing) {
  auto set = LoadPriced(R"EOF(
policy:
  default: claude
  rules: [{ name: no, deny: "no" }]
)EOF");
  ASSERT_TRUE(set.ok()) << set.status();
  RequestFeatures request;
  request.texts = {"hello"};
  const Decision decision = (*set)->Classify(request);
  EXPECT_TRUE(decision.denied);
  EXPECT_EQ(decision.cost.estimated_usd, 0);
  EXPECT_EQ(decision.cost.targets.size(), 3u);  // still explained
}

constexpr std::string_view kCostPolicy = R"EOF(
policy:
  default: local
  rules:
    - name: too-dear
      when: { min_estimated_usd: 0.5 }
      deny: "over budget"
    - name: cheap-to-frontier
      when: { max_estimated_usd: 0.01 }
      route: gpt-4o
    - name: mid-to-claude
      when: { max_estimated_usd: 0.05 }
      route: claude
)EOF";

struct CostCase {
  std::string name;
  int64_t prompt_tokens;
  int32_t max_tokens;
  std::string want_target;  // empty when denied
  std::string want_rule;
};

void PrintTo(const CostCase& c, std::ostream* os) { *os << c.name; }

class CostRuleTest : public ::testing::TestWithParam<CostCase> {};

TEST_P(CostRuleTest, Decides) {
  auto set = LoadPriced(kCostPolicy);
  ASSERT_TRUE(set.ok()) << set.status();
  const CostCase& c = GetParam();
  RequestFeatures request;
  request.texts = {"hello"};
  request.prompt_tokens = c.prompt_tokens;
  request.max_tokens = c.max_tokens;
  const Decision decision = (*set)->Classify(request);
  EXPECT_EQ(decision.target, c.want_target);
  EXPECT_EQ(decision.rule, c.want_rule);
}

// gpt-4o: 2.5 in, 10 out; claude: 1 in, 5 out; the deny rule prices the default (free) target.
INSTANTIATE_TEST_SUITE_P(
    Table, CostRuleTest,
    ::testing::ValuesIn(std::vector<CostCase>{
        {"SmallGoesFrontier", 1000, 500, "gpt-4o", "cheap-to-frontier"},      // $0.0075
        {"AtTheCapInclusive", 2000, 500, "gpt-4o", "cheap-to-frontier"},      // $0.01
        {"MediumGoesClaude", 10000, 2000, "claude", "mid-to-claude"},         // $0.045 / $0.02
        {"LargeStaysLocal", 100000, 4000, "local", "default"},                // $0.12 on claude
        {"DenyPricesDefaultTarget", 10000000, 4000, "local", "default"},      // local is free
    }),
    [](const auto& info) { return info.param.name; });

TEST(CostTest, DenyRulePricesPinnedTarget) {
  auto set = LoadPriced(kCostPolicy);
  ASSERT_TRUE(set.ok()) << set.status();
  RequestFeatures request;
  request.texts = {"hello"};
  request.requested_model = "gpt-4o";
  request.prompt_tokens = 1'000'000;  // $2.50 on gpt-4o
  const Decision decision = (*set)->Classify(request);
  EXPECT_TRUE(decision.denied);
  EXPECT_EQ(decision.rule, "too-dear");
}

INSTANTIATE_TEST_SUITE_P(
    Cost, FromYamlErrorTest,
    ::testing::ValuesIn(std::vector<ErrorCase>{
        {"UnknownCostKey", R"EOF(
policy:
  default: local
  cost: { expected_tokens: 10 }
)EOF",
         "policy.yaml:4:11: unknown key 'expected_tokens' in cost (allowed: "
         "expected_completion_tokens, bytes_per_token, message_overhead_tokens)"},
        {"NegativeCompletion", R"EOF(
policy:
  default: local
  cost: { expected_completion_tokens: -1 }
)EOF",
         "policy.yaml:4:39: 'expected_completion_tokens' must be between 0 and 10000000, not -1"},
        {"CostNotNumber", R"EOF(
policy:
  default: local
  rules:
    - name: r
      when: { max_estimated_usd: cheap }
      route: local
)EOF",
         "policy.yaml:6:34: 'max_estimated_usd' must be a number"},
        {"ImpossibleCost", R"EOF(
policy:
  default: local
  rules:
    - name: r
      when: { min_estimated_usd: 2, max_estimated_usd: 1 }
      route: local
)EOF",
         "policy.yaml:6:56: rule 'r' can never match: min_estimated_usd is above "
         "max_estimated_usd"},
    }),
    [](const auto& info) { return info.param.name; });

constexpr std::string_view kDifficultyPolicy = R"EOF(
policy:
  default: local
  difficulty:
    weights: { length: 0 }
    tiers: { medium: 0.3, hard: 0.6 }
  rules:
    - name: hard-to-frontier
      when: { difficulty: hard }
      route: gpt-4o
    - name: middling
      when: { min_difficulty: 0.3, max_difficulty: 0.45 }
      route: claude
    - name: medium-or-hard
      when: { difficulty: [medium, hard] }
      route: gpt-4o
)EOF";

TEST(DifficultyRuleTest, RoutesOnTierAndScore) {
  auto set = Load(kDifficultyPolicy);
  ASSERT_TRUE(set.ok()) << set.status();
  RequestFeatures request;
  request.texts = {"hello there"};
  Decision decision = (*set)->Classify(request);
  EXPECT_EQ(decision.rule, "default");
  EXPECT_EQ(decision.difficulty.tier, DifficultyTier::kEasy);
  EXPECT_EQ(decision.difficulty.score, 0);

  request.texts = {"Why?"};  // reasoning 1/3 x 1.2 + questions 1/4 x 0.4 = 0.5
  decision = (*set)->Classify(request);
  EXPECT_NEAR(decision.difficulty.score, 1 - std::exp(-0.5), 1e-9);
  EXPECT_EQ(decision.difficulty.tier, DifficultyTier::kMedium);
  EXPECT_EQ(decision.rule, "middling");

  request.texts = {"Explain why, compare, contrast and prove."};  // 4/6 x 1.2 -> 0.55
  decision = (*set)->Classify(request);
  EXPECT_EQ(decision.difficulty.tier, DifficultyTier::kMedium);
  EXPECT_EQ(decision.rule, "medium-or-hard");

  request.texts = {"Prove step by step, explain why, compare and contrast; derive it."};
  decision = (*set)->Classify(request);
  EXPECT_EQ(decision.difficulty.tier, DifficultyTier::kHard);
  EXPECT_EQ(decision.rule, "hard-to-frontier");
  EXPECT_EQ(decision.target, "gpt-4o");
}

INSTANTIATE_TEST_SUITE_P(
    Difficulty, FromYamlErrorTest,
    ::testing::ValuesIn(std::vector<ErrorCase>{
        {"UnknownTier", R"EOF(
policy:
  default: local
  rules:
    - name: r
      when: { difficulty: [easy, extreme] }
      route: local
)EOF",
         "policy.yaml:6:34: unknown difficulty tier 'extreme' (tiers: easy, medium, hard)"},
        {"UnknownDifficultyKey", R"EOF(
policy:
  default: local
  difficulty: { tier: {} }
)EOF",
         "policy.yaml:4:17: unknown key 'tier' in difficulty (did you mean 'tiers'?)"},
        {"ScoreOutOfRange", R"EOF(
policy:
  default: local
  rules:
    - name: r
      when: { min_difficulty: 2 }
      route: local
)EOF",
         "policy.yaml:6:31: 'min_difficulty' must be between 0 and 1, not 2"},
        {"ImpossibleDifficulty", R"EOF(
policy:
  default: local
  rules:
    - name: r
      when: { min_difficulty: 0.8, max_difficulty: 0.2 }
      route: local
)EOF",
         "policy.yaml:6:52: rule 'r' can never match: min_difficulty is above max_difficulty"},
    }),
    [](const auto& info) { return info.param.name; });

constexpr std::string_view kRoutePolicy = R"EOF(
policy:
  default: local
  sensitivity:
    tenants: { acme: confidential }
  clearance: { gpt-4o: internal, claude: public }
  rules:
    - name: reviews
      when: { keywords: [review] }
      route: [claude, gpt-4o, local]
    - name: cheap
      when: { keywords: [cheap] }
      route: cheapest
      candidates: [gpt-4o, claude]
    - name: cheapest-anywhere
      when: { keywords: [anywhere] }
      route: cheapest
)EOF";

struct RouteCase {
  std::string name;
  std::string text;
  std::map<std::string, std::string> metadata;
  std::vector<std::string> want_targets;  // empty when denied
  std::string want_rule;
};

void PrintTo(const RouteCase& c, std::ostream* os) { *os << c.name; }

class RouteTest : public ::testing::TestWithParam<RouteCase> {};

TEST_P(RouteTest, Decides) {
  auto set = LoadPriced(kRoutePolicy);
  ASSERT_TRUE(set.ok()) << set.status();
  const RouteCase& c = GetParam();
  RequestFeatures request;
  request.texts = {c.text};
  request.metadata = &c.metadata;
  const Decision decision = (*set)->Classify(request);
  EXPECT_THAT(decision.targets, ::testing::ElementsAreArray(c.want_targets));
  EXPECT_EQ(decision.target, c.want_targets.empty() ? "" : c.want_targets.front());
  EXPECT_EQ(decision.rule, c.want_rule);
  EXPECT_EQ(decision.denied, c.want_targets.empty());
}

INSTANTIATE_TEST_SUITE_P(
    Table, RouteTest,
    ::testing::ValuesIn(std::vector<RouteCase>{
        {"FallbackListInOrder", "review this", {}, {"claude", "gpt-4o", "local"}, "reviews"},
        {"FallbackDropsUncleared", "review bob@acme.io", {}, {"gpt-4o", "local"}, "reviews"},
        {"FallbackOnlyLocalLeft", "review", {{"tenant", "acme"}}, {"local"}, "reviews"},
        {"CheapestFirst", "cheap please", {}, {"claude", "gpt-4o"}, "cheap"},
        {"CheapestSkipsUncleared", "cheap bob@acme.io", {}, {"gpt-4o"}, "cheap"},
        {"CheapestNoneClearedGoesDefault", "cheap", {{"tenant", "acme"}}, {"local"}, "cheap"},
        {"CheapestAllTargets", "anywhere", {}, {"local", "claude", "gpt-4o"},
         "cheapest-anywhere"},
        {"PlainDefault", "hello", {}, {"local"}, "default"},
    }),
    [](const auto& info) { return info.param.name; });

TEST(RouteTest, NoClearedTargetAndUnclearedDefaultDenies) {
  auto set = LoadPriced(R"EOF(
policy:
  default: claude
  clearance: { gpt-4o: internal, claude: public }
  rules:
    - { name: r, route: [claude, gpt-4o] }
)EOF");
  ASSERT_TRUE(set.ok()) << set.status();
  RequestFeatures request;
  request.texts = {"card 4111 1111 1111 1111"};
  const Decision decision = (*set)->Classify(request);
  EXPECT_TRUE(decision.denied);
  EXPECT_TRUE(decision.targets.empty());
  EXPECT_EQ(decision.reason,
            "no permitted target: 'claude', 'gpt-4o' may not receive restricted data");
}

TEST(RouteTest, CostConditionUsesServingTarget) {
  auto set = LoadPriced(R"EOF(
policy:
  default: local
  rules:
    - name: cheap-enough
      when: { max_estimated_usd: 0.002 }
      route: cheapest
      candidates: [gpt-4o, claude]
)EOF");
  ASSERT_TRUE(set.ok()) << set.status();
  RequestFeatures request;
  request.texts = {"hi"};
  request.prompt_tokens = 1000;
  request.max_tokens = 100;  // claude $0.0015, gpt-4o $0.0035
  Decision decision = (*set)->Classify(request);
  EXPECT_EQ(decision.rule, "cheap-enough");
  EXPECT_THAT(decision.targets, ::testing::ElementsAre("claude", "gpt-4o"));
  EXPECT_DOUBLE_EQ(decision.cost.estimated_usd, 0.0015);
  request.max_tokens = 200;  // claude $0.002... + just over
  request.prompt_tokens = 1100;
  EXPECT_EQ((*set)->Classify(request).rule, "default");
}

INSTANTIATE_TEST_SUITE_P(
    Routes, FromYamlErrorTest,
    ::testing::ValuesIn(std::vector<ErrorCase>{
        {"FallbackCycle", R"EOF(
policy:
  default: local
  rules:
    - name: r
      route: [gpt-4o, claude, gpt-4o]
)EOF",
         "policy.yaml:6:31: rule 'r' names 'gpt-4o' twice in 'route': a fallback cycle"},
        {"FallbackUnknownTarget", R"EOF(
policy:
  default: local
  rules:
    - name: r
      route: [gpt-4o, gpt-5]
)EOF",
         "policy.yaml:6:23: rule 'r' names unknown target 'gpt-5' (targets: local, gpt-4o, "
         "claude)"},
        {"EmptyRoute", R"EOF(
policy:
  default: local
  rules:
    - name: r
      route: []
)EOF",
         "policy.yaml:6:14: 'route' of rule 'r' must not be empty"},
        {"EmptyCandidates", R"EOF(
policy:
  default: local
  rules:
    - name: r
      route: cheapest
      candidates: []
)EOF",
         "policy.yaml:7:19: 'candidates' of rule 'r' must not be empty"},
        {"CandidatesWithoutCheapest", R"EOF(
policy:
  default: local
  rules:
    - name: r
      route: local
      candidates: [local]
)EOF",
         "policy.yaml:7:19: rule 'r' has 'candidates' but its route is not 'cheapest'"},
        {"RouteMap", R"EOF(
policy:
  default: local
  rules:
    - name: r
      route: { a: b }
)EOF",
         "policy.yaml:6:14: 'route' of rule 'r' must be a target or a list of targets"},
    }),
    [](const auto& info) { return info.param.name; });

// Policies under which some path could carry a request above a target's clearance.
INSTANTIATE_TEST_SUITE_P(
    UnsafePaths, FromYamlErrorTest,
    ::testing::ValuesIn(std::vector<ErrorCase>{
        {"Fallback", R"EOF(
policy:
  default: local
  clearance: { gpt-4o: internal }
  rules:
    - name: x
      when: { min_level: confidential }
      route: [local, gpt-4o]
)EOF",
         "policy.yaml:8:22: unsafe path: rule 'x' (min_level: confidential) → fallback 'gpt-4o' "
         "(clearance internal)"},
        {"CheapestCandidate", R"EOF(
policy:
  default: local
  clearance: { gpt-4o: restricted }
  rules:
    - name: x
      when: { min_level: internal }
      route: cheapest
      candidates: [gpt-4o, claude]
)EOF",
         "policy.yaml:9:28: unsafe path: rule 'x' (min_level: internal) → candidate 'claude' "
         "(clearance public)"},
        {"FindingsImplyLevel", R"EOF(
policy:
  default: local
  clearance: { gpt-4o: confidential }
  rules:
    - name: secrets
      when: { findings: [secret] }
      route: gpt-4o
)EOF",
         "policy.yaml:8:14: unsafe path: rule 'secrets' (findings: secret) → 'gpt-4o' "
         "(clearance confidential)"},
        {"TenantFloor", R"EOF(
policy:
  default: local
  sensitivity: { tenants: { acme: internal } }
  clearance: { local: restricted }
  rules:
    - name: acme
      when: { tenant: acme }
      route: claude
)EOF",
         "policy.yaml:9:14: unsafe path: rule 'acme' (tenant: acme) → 'claude' (clearance "
         "public)"},
        {"CallerLabel", R"EOF(
policy:
  default: local
  clearance: { gpt-4o: public }
  rules:
    - name: labelled
      when: { metadata: { sensitivity: [internal, confidential] } }
      route: gpt-4o
)EOF",
         "policy.yaml:8:14: unsafe path: rule 'labelled' (sensitivity: internal, confidential) → "
         "'gpt-4o' (clearance public)"},
        {"DefaultLevel", R"EOF(
policy:
  default: gpt-4o
  sensitivity: { default_level: internal }
  clearance: { gpt-4o: public }
)EOF",
         "policy.yaml:3:12: unsafe path: default (default_level: internal) → 'gpt-4o' "
         "(clearance public)"},
        {"EveryPathListed", R"EOF(
policy:
  default: local
  clearance: { gpt-4o: internal }
  rules:
    - name: x
      when: { min_level: restricted }
      route: [gpt-4o, claude]
)EOF",
         "policy.yaml:8:15: unsafe path: rule 'x' (min_level: restricted) → 'gpt-4o' (clearance "
         "internal); also rule 'x' (min_level: restricted) → fallback 'claude' (clearance "
         "public)"},
    }),
    [](const auto& info) { return info.param.name; });

// Rules whose conditions do not guarantee a level are safe: the run-time check filters them.
TEST(UnsafePathTest, MixedContentTestIsNotAFloor) {
  auto set = Load(R"EOF(
policy:
  default: local
  clearance: { gpt-4o: internal }
  rules:
    - name: mixed
      when: { findings: [secret], keywords: [hello] }
      route: gpt-4o
    - name: any
      route: cheapest
)EOF");
  ASSERT_TRUE(set.ok()) << set.status();
}

struct ExplainCase {
  std::string name;
  std::string text;
  std::map<std::string, std::string> metadata;
  std::string model;
  std::vector<Rejection> want;
};

void PrintTo(const ExplainCase& c, std::ostream* os) { *os << c.name; }

class ExplainTest : public ::testing::TestWithParam<ExplainCase> {};

TEST_P(ExplainTest, SaysWhyEveryOtherTargetLost) {
  auto set = LoadPriced(R"EOF(
policy:
  default: local
  sensitivity: { tenants: { acme: confidential } }
  clearance: { gpt-4o: internal, claude: public }
  rules:
    - { name: block, when: { keywords: [forbidden] }, deny: "no" }
    - name: reviews
      when: { keywords: [review] }
      route: [claude, gpt-4o]
    - name: cheap
      when: { keywords: [cheap] }
      route: cheapest
      candidates: [gpt-4o, claude]
    - name: pricey
      when: { keywords: [pricey] }
      route: cheapest
      candidates: [gpt-4o]
)EOF");
  ASSERT_TRUE(set.ok()) << set.status();
  const ExplainCase& c = GetParam();
  RequestFeatures request;
  request.texts = {c.text};
  request.metadata = &c.metadata;
  request.requested_model = c.model;
  request.prompt_tokens = 1000;
  request.max_tokens = 100;  // claude 0.0015 USD, gpt-4o 0.0035 USD
  EXPECT_THAT((*set)->Classify(request).rejected, ::testing::ElementsAreArray(c.want));
}

INSTANTIATE_TEST_SUITE_P(
    Table, ExplainTest,
    ::testing::ValuesIn(std::vector<ExplainCase>{
        {"Default", "hello", {}, "auto",
         {{"gpt-4o", "no rule matched; the default is 'local'"},
          {"claude", "no rule matched; the default is 'local'"}}},
        {"FallbackAndFiredFirst", "review it", {}, "auto",
         {{"local", "rule 'reviews' fired first"}, {"gpt-4o", "fallback 2 of rule 'reviews'"}}},
        {"NotCleared", "review bob@acme.io", {}, "auto",
         {{"local", "rule 'reviews' fired first"}, {"claude", "not cleared for internal"}}},
        {"MoreExpensive", "cheap", {}, "auto",
         {{"local", "not a candidate of rule 'cheap'"},
          {"gpt-4o", "more expensive: 0.0035 USD vs 0.0015 USD (fallback 2)"}}},
        {"NotACandidate", "pricey", {}, "auto",
         {{"local", "not a candidate of rule 'pricey'"},
          {"claude", "not a candidate of rule 'pricey'"}}},
        {"Denied", "forbidden", {}, "auto",
         {{"local", "rule 'block' denied the request"},
          {"gpt-4o", "rule 'block' denied the request"},
          {"claude", "rule 'block' denied the request"}}},
        {"DeniedNotCleared", "forbidden", {{"tenant", "acme"}}, "auto",
         {{"local", "rule 'block' denied the request"},
          {"gpt-4o", "not cleared for confidential"},
          {"claude", "not cleared for confidential"}}},
        {"Requested", "hello", {}, "claude",
         {{"local", "the request named another target"},
          {"gpt-4o", "the request named another target"}}},
    }),
    [](const auto& info) { return info.param.name; });

// The language reference's opening example must stay a valid policy.
TEST(ReadmeTest, ExampleLoads) {
  // SWITCHYARD_SOURCE_DIR, not __FILE__: ccache's base_dir makes __FILE__ relative.
  const auto path = std::filesystem::path(SWITCHYARD_SOURCE_DIR) / "policies/README.md";
  std::ifstream in(path);
  ASSERT_TRUE(in) << path;
  std::stringstream text;
  text << in.rdbuf();
  const std::string readme = text.str();
  const size_t start = readme.find("policy:\n");
  const size_t end = readme.find("```", start);
  ASSERT_NE(start, std::string::npos);
  auto set = LoadPriced(readme.substr(start, end - start));
  ASSERT_TRUE(set.ok()) << set.status();
  RequestFeatures request;
  request.texts = {"Prove step by step why the algorithm terminates, compare two proofs, and "
                   "explain the invariant; you must not assume the input is sorted."};
  const Decision decision = (*set)->Classify(request);
  EXPECT_EQ(decision.rule, "hard-questions") << decision.difficulty.score;
  EXPECT_THAT(decision.targets, ::testing::ElementsAre("gpt-4o", "claude", "local"));
}

}  // namespace
}  // namespace switchyard::policies
