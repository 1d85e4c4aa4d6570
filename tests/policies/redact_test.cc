#include "policies/redact.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policies/policy_set.h"
#include "policies/yaml_util.h"

namespace switchyard::policies {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

TEST(RedactTest, ReplacesFindingsWithTypedNumberedPlaceholders) {
  const std::vector<std::string_view> texts = {"mail bob@acme.io or ann@acme.io",
                                               "again bob@acme.io, key AKIAQ3EGRTNDVB2YOBXR"};
  const std::vector<Finding> findings = {
      {"email", 0, 5, 16, 0.95},
      {"email", 0, 20, 31, 0.95},
      {"email", 1, 6, 17, 0.95},
      {"secret.aws_access_key", 1, 23, 43, 1.0},
  };
  const Redaction redaction = Redact(texts, findings);
  EXPECT_THAT(redaction.texts, ElementsAre("mail <EMAIL_1> or <EMAIL_2>",
                                           "again <EMAIL_1>, key <SECRET_AWS_ACCESS_KEY_1>"));
  EXPECT_THAT(redaction.restore,
              ElementsAre(Pair("<EMAIL_1>", "bob@acme.io"), Pair("<EMAIL_2>", "ann@acme.io"),
                          Pair("<SECRET_AWS_ACCESS_KEY_1>", "AKIAQ3EGRTNDVB2YOBXR")));
}

TEST(RedactTest, MergesOverlappingSpansAndSkipsOutOfRangeOnes) {
  const std::vector<std::string_view> texts = {"0123456789"};
  const std::vector<Finding> findings = {
      {"a", 0, 2, 6, 1}, {"b", 0, 4, 8, 1}, {"c", 0, 8, 20, 1}, {"d", 3, 0, 1, 1}};
  const Redaction redaction = Redact(texts, findings);
  // No byte of 'b' survives although it starts inside 'a'.
  EXPECT_THAT(redaction.texts, ElementsAre("01<A_1>89"));
  EXPECT_THAT(redaction.restore, ElementsAre(Pair("<A_1>", "234567")));
}

TEST(RedactTest, WorksOnADecisionsFindings) {
  auto root = ParseYaml("policy: { default: local }", "p.yaml");
  ASSERT_TRUE(root.ok());
  auto set = PolicySet::FromYaml((*root)["policy"], "p.yaml", {{"local", Locality::kLocal}}, "v");
  ASSERT_TRUE(set.ok()) << set.status();
  RequestFeatures request;
  request.texts = {"hello", "write to bob@acme.io about card 4111 1111 1111 1111"};
  const Decision decision = (*set)->Classify(request);
  const Redaction redaction = Redact(request.texts, decision.findings);
  EXPECT_THAT(redaction.texts,
              ElementsAre("hello", "write to <EMAIL_1> about card <CREDIT_CARD_1>"));
}

// Separators of several bytes (a no-break space, a non-breaking hyphen) are inside the span, and
// an apostrophe in the local part is part of the address: nothing of either is left in clear.
TEST(RedactTest, BuiltinFindingsCoverWideSeparatorsAndApostrophes) {
  auto root = ParseYaml("policy: { default: local }", "p.yaml");
  ASSERT_TRUE(root.ok());
  auto set = PolicySet::FromYaml((*root)["policy"], "p.yaml", {{"local", Locality::kLocal}}, "v");
  ASSERT_TRUE(set.ok()) << set.status();
  RequestFeatures request;
  request.texts = {"card 4111\u00a01111\u00a01111\u00a01111, ssn 536\u201122\u20111234, mail "
                   "o'brien@corp.ie"};
  const Decision decision = (*set)->Classify(request);
  const Redaction redaction = Redact(request.texts, decision.findings);
  EXPECT_THAT(redaction.texts,
              ElementsAre("card <CREDIT_CARD_1>, ssn <US_SSN_1>, mail <EMAIL_1>"));
  EXPECT_THAT(redaction.restore,
              ElementsAre(Pair("<CREDIT_CARD_1>", "4111\u00a01111\u00a01111\u00a01111"),
                          Pair("<US_SSN_1>", "536\u201122\u20111234"),
                          Pair("<EMAIL_1>", "o'brien@corp.ie")));
}

// A pattern's match ends after a whole character, so the redacted text stays valid UTF-8 and
// no byte of the character is left behind.
TEST(RedactTest, PatternFindingsCoverWholeCharacters) {
  auto root = ParseYaml(R"EOF(
policy:
  default: local
  sensitivity:
    patterns: [{ name: account, level: internal, regex: 'ACCT-.' }]
)EOF",
                        "p.yaml");
  ASSERT_TRUE(root.ok());
  auto set = PolicySet::FromYaml((*root)["policy"], "p.yaml", {{"local", Locality::kLocal}}, "v");
  ASSERT_TRUE(set.ok()) << set.status();
  RequestFeatures request;
  request.texts = {"ref ACCT-\xc3\xa9"};
  const Decision decision = (*set)->Classify(request);
  const Redaction redaction = Redact(request.texts, decision.findings);
  EXPECT_THAT(redaction.texts, ElementsAre("ref <ACCOUNT_1>"));
  EXPECT_THAT(redaction.restore, ElementsAre(Pair("<ACCOUNT_1>", "ACCT-\xc3\xa9")));
}

struct RestoreCase {
  std::string name;
  std::vector<std::string> deltas;
  std::string want;
};

void PrintTo(const RestoreCase& c, std::ostream* os) { *os << c.name; }

class RestorerTest : public ::testing::TestWithParam<RestoreCase> {};

TEST_P(RestorerTest, RestoresAcrossDeltas) {
  Restorer restorer(std::vector<std::pair<std::string, std::string>>{
      {"<EMAIL_1>", "bob@acme.io"}, {"<EMAIL_12>", "ann@acme.io"}});
  std::string out;
  for (const std::string& delta : GetParam().deltas) out += restorer.Push(delta);
  out += restorer.Finish();
  EXPECT_EQ(out, GetParam().want);
}

INSTANTIATE_TEST_SUITE_P(
    Table, RestorerTest,
    ::testing::ValuesIn(std::vector<RestoreCase>{
        {"Whole", {"hi <EMAIL_1>!"}, "hi bob@acme.io!"},
        {"SplitEverywhere", {"hi <", "EMA", "IL_", "1", ">!"}, "hi bob@acme.io!"},
        {"ByteByByte", {"<", "E", "M", "A", "I", "L", "_", "1", "2", ">"}, "ann@acme.io"},
        {"NotAPlaceholder", {"a < b", " and <EMAIL_3>"}, "a < b and <EMAIL_3>"},
        {"PartialAtEndFlushed", {"see <EMAIL_"}, "see <EMAIL_"},
        {"Adjacent", {"<EMAIL_1><EMAIL_12>"}, "bob@acme.ioann@acme.io"},
        {"Unicode", {"é <EMA", "IL_1> ü"}, "é bob@acme.io ü"},
    }),
    [](const auto& info) { return info.param.name; });

TEST(RestorerTest, HoldsBackOnlyAPossiblePlaceholder) {
  Restorer restorer(
      std::vector<std::pair<std::string, std::string>>{{"<EMAIL_1>", "bob@acme.io"}});
  EXPECT_EQ(restorer.Push("hello <EM"), "hello ");
  EXPECT_EQ(restorer.Push("PTY> x"), "<EMPTY> x");
  EXPECT_EQ(restorer.Push("<"), "");
  EXPECT_EQ(restorer.Push("EMAIL_1> done"), "bob@acme.io done");
  EXPECT_EQ(restorer.Finish(), "");
}

const std::vector<TargetInfo>& Targets() {
  static const auto* targets = new std::vector<TargetInfo>{
      {"local", Locality::kLocal},
      {"gpt-4o", Locality::kRemote},
      {"claude", Locality::kRemote},
  };
  return *targets;
}

absl::StatusOr<std::shared_ptr<const PolicySet>> Load(std::string_view text) {
  auto root = ParseYaml(text, "policy.yaml");
  if (!root.ok()) return root.status();
  return PolicySet::FromYaml((*root)["policy"], "policy.yaml", Targets(), "v1");
}

// Without `redact` the rule below is refused at load time (email is internal, gpt-4o public);
// with it, gpt-4o receives only what redaction leaves.
constexpr std::string_view kRedactPolicy = R"EOF(
policy:
  default: local
  sensitivity:
    tenants: { acme: internal }
    dictionaries: [{ name: codenames, level: confidential, terms: [falcon] }]
  clearance: { gpt-4o: public, claude: internal }
  rules:
    - name: mail-to-cloud
      when: { findings: [email] }
      route: [gpt-4o, local]
      redact: [email, phone]
    - name: all-to-claude
      when: { keywords: [claude] }
      route: claude
      redact: true
)EOF";

TEST(RedactRuleTest, RemoteTargetsReceiveTheLevelAfterRedaction) {
  auto set = Load(kRedactPolicy);
  ASSERT_TRUE(set.ok()) << set.status();
  RequestFeatures request;
  request.texts = {"write to bob@acme.io"};
  const Decision decision = (*set)->Classify(request);
  EXPECT_EQ(decision.rule, "mail-to-cloud");
  EXPECT_THAT(decision.targets, ElementsAre("gpt-4o", "local"));
  EXPECT_TRUE(decision.redact);
  EXPECT_EQ(decision.level, "internal");
  EXPECT_EQ(decision.redacted_level, "public");
  ASSERT_EQ(decision.findings.size(), 1u);
  EXPECT_TRUE(decision.findings[0].redacted);
  EXPECT_EQ((*set)->SentLevel(decision, "gpt-4o"), 0);
  EXPECT_EQ((*set)->SentLevel(decision, "local"), 1);  // local targets get the original
  EXPECT_TRUE((*set)->Redacts(decision, "gpt-4o"));
  EXPECT_FALSE((*set)->Redacts(decision, "local"));
  EXPECT_TRUE((*set)->MayReceive(decision, "gpt-4o"));
  EXPECT_FALSE((*set)->MayReceive("gpt-4o", decision.level_rank));
}

TEST(RedactRuleTest, WhatRedactionCannotRemoveStillCounts) {
  auto set = Load(kRedactPolicy);
  ASSERT_TRUE(set.ok()) << set.status();
  // A dictionary the rule does not redact.
  RequestFeatures request;
  request.texts = {"write to bob@acme.io about falcon"};
  Decision decision = (*set)->Classify(request);
  EXPECT_EQ(decision.rule, "mail-to-cloud");
  EXPECT_EQ(decision.redacted_level, "confidential");
  EXPECT_THAT(decision.targets, ElementsAre("local"));
  EXPECT_THAT(decision.rejected,
              ::testing::Contains(Rejection{"gpt-4o", "not cleared for confidential (after "
                                                      "redaction)"}));
  ASSERT_EQ(decision.findings.size(), 2u);
  EXPECT_TRUE(decision.findings[0].redacted);
  EXPECT_FALSE(decision.findings[1].redacted);

  // The tenant floor.
  const std::map<std::string, std::string> acme = {{"tenant", "acme"}};
  request.texts = {"write to bob@acme.io"};
  request.metadata = &acme;
  decision = (*set)->Classify(request);
  EXPECT_EQ(decision.redacted_level, "internal");
  EXPECT_THAT(decision.targets, ElementsAre("local"));

  // The caller's label.
  const std::map<std::string, std::string> labelled = {{"sensitivity", "internal"}};
  request.metadata = &labelled;
  decision = (*set)->Classify(request);
  EXPECT_EQ(decision.redacted_level, "internal");
  EXPECT_THAT(decision.targets, ElementsAre("local"));

  // `redact: true` takes every finding, dictionaries included: claude is cleared for internal.
  request.metadata = nullptr;
  request.texts = {"claude: falcon and card 4111 1111 1111 1111"};
  decision = (*set)->Classify(request);
  EXPECT_EQ(decision.rule, "all-to-claude");
  EXPECT_EQ(decision.level, "restricted");
  EXPECT_EQ(decision.redacted_level, "public");
  EXPECT_THAT(decision.targets, ElementsAre("claude"));
  for (const Finding& finding : decision.findings) EXPECT_TRUE(finding.redacted) << finding.type;
  const Redaction redaction = Redact(request.texts, decision.findings);
  EXPECT_THAT(redaction.texts,
              ElementsAre("claude: <CODENAMES_1> and card <CREDIT_CARD_1>"));
}

TEST(RedactRuleTest, RulesWithoutRedactChangeNothing) {
  auto set = Load(R"EOF(
policy:
  default: local
  clearance: { gpt-4o: internal }
  rules:
    - { name: r, when: { keywords: [go] }, route: gpt-4o, redact: false }
)EOF");
  ASSERT_TRUE(set.ok()) << set.status();
  RequestFeatures request;
  request.texts = {"go bob@acme.io"};
  const Decision decision = (*set)->Classify(request);
  EXPECT_FALSE(decision.redact);
  EXPECT_EQ(decision.redacted_level, decision.level);
  EXPECT_FALSE(decision.findings.at(0).redacted);
  EXPECT_EQ(decision.target, "gpt-4o");
}

struct LoadCase {
  std::string name;
  std::string yaml;
  std::string error;  // empty: loads
};

void PrintTo(const LoadCase& c, std::ostream* os) { *os << c.name; }

class RedactLoadTest : public ::testing::TestWithParam<LoadCase> {};

TEST_P(RedactLoadTest, ChecksPathsWithTheLevelLeftAfterRedaction) {
  auto set = Load(GetParam().yaml);
  if (GetParam().error.empty()) {
    EXPECT_TRUE(set.ok()) << set.status();
  } else {
    ASSERT_FALSE(set.ok());
    EXPECT_EQ(std::string(set.status().message()), GetParam().error);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, RedactLoadTest,
    ::testing::ValuesIn(std::vector<LoadCase>{
        {"FindingsRedactedAreSafe", R"EOF(
policy:
  default: local
  clearance: { gpt-4o: public }
  rules:
    - { name: r, when: { findings: [secret] }, route: gpt-4o, redact: [secret] }
)EOF",
         ""},
        {"WithoutRedactUnsafe", R"EOF(
policy:
  default: local
  clearance: { gpt-4o: public }
  rules:
    - { name: r, when: { findings: [secret] }, route: gpt-4o }
)EOF",
         "policy.yaml:6:55: unsafe path: rule 'r' (findings: secret) → 'gpt-4o' (clearance "
         "public)"},
        {"OtherTypeRedactedUnsafe", R"EOF(
policy:
  default: local
  clearance: { gpt-4o: public }
  rules:
    - { name: r, when: { findings: [secret] }, route: gpt-4o, redact: [email] }
)EOF",
         "policy.yaml:6:55: unsafe path: rule 'r' (findings: secret, after redaction) → "
         "'gpt-4o' (clearance public)"},
        {"MinLevelMayComeFromFindings", R"EOF(
policy:
  default: local
  clearance: { gpt-4o: public }
  rules:
    - { name: r, when: { min_level: confidential }, route: gpt-4o, redact: true }
)EOF",
         ""},
        {"TenantFloorRemains", R"EOF(
policy:
  default: local
  sensitivity: { tenants: { acme: confidential } }
  clearance: { gpt-4o: internal }
  rules:
    - name: r
      when: { findings: [email], tenant: acme }
      route: [local, gpt-4o]
      redact: true
)EOF",
         "policy.yaml:9:22: unsafe path: rule 'r' (tenant: acme, after redaction) → fallback "
         "'gpt-4o' (clearance internal)"},
        {"LocalTargetsKeepTheFullLevel", R"EOF(
policy:
  default: local
  clearance: { local: internal }
  rules:
    - { name: r, when: { findings: [secret] }, route: local, redact: true }
)EOF",
         "policy.yaml:6:55: unsafe path: rule 'r' (findings: secret) → 'local' (clearance "
         "internal)"},
        {"OnDeny", R"EOF(
policy:
  default: local
  rules:
    - { name: r, deny: "no", redact: true }
)EOF",
         "policy.yaml:5:38: rule 'r' denies; only a 'route' can 'redact'"},
        {"UnknownType", R"EOF(
policy:
  default: local
  rules:
    - { name: r, route: local, redact: [emails] }
)EOF",
         "policy.yaml:5:41: rule 'r' redacts unknown finding type 'emails' (types: email, "
         "phone, credit_card, iban, us_ssn, ip_address, secret.aws_access_key, secret, "
         "secret.github_token, secret.slack_token, secret.slack_webhook, secret.stripe_key, "
         "secret.openai_api_key, secret.anthropic_api_key, secret.google_api_key, "
         "secret.google_oauth_token, secret.private_key, secret.jwt, secret.generic)"},
        {"NotABoolOrList", R"EOF(
policy:
  default: local
  rules:
    - { name: r, route: local, redact: { email: yes } }
)EOF",
         "policy.yaml:5:40: 'redact' of rule 'r' must be true, false or a list of finding types"},
    }),
    [](const auto& info) { return info.param.name; });

// Counts every prompt as 42 tokens, and remembers which targets it was asked about.
class FixedCounter : public TokenCounter {
 public:
  std::optional<int64_t> CountPromptTokens(std::string_view target) const override {
    asked.emplace_back(target);
    return 42;
  }
  mutable std::vector<std::string> asked;
};

TEST(TokenCounterTest, LocalTargetsUseTheirTokenizerRemoteTargetsTheEstimate) {
  auto root = ParseYaml("policy: { default: local }", "p.yaml");
  ASSERT_TRUE(root.ok());
  auto set = PolicySet::FromYaml(
      (*root)["policy"], "p.yaml",
      {{"local", Locality::kLocal, 1, 2}, {"gpt-4o", Locality::kRemote, 2.5, 10}}, "v");
  ASSERT_TRUE(set.ok()) << set.status();
  RequestFeatures request;
  request.texts = {std::string_view("0123456789abcdef")};  // estimate: 16 / 4 + 4 = 8
  request.max_tokens = 10;
  FixedCounter counter;
  request.token_counter = &counter;
  const Decision decision = (*set)->Classify(request);
  EXPECT_THAT(counter.asked, ElementsAre("local"));
  ASSERT_EQ(decision.cost.targets.size(), 2u);
  EXPECT_EQ(decision.cost.targets[0].prompt_tokens, 42);
  EXPECT_TRUE(decision.cost.targets[0].prompt_tokens_exact);
  EXPECT_DOUBLE_EQ(decision.cost.targets[0].estimated_usd, (42 * 1 + 10 * 2) / 1e6);
  EXPECT_EQ(decision.cost.targets[1].prompt_tokens, 8);
  EXPECT_FALSE(decision.cost.targets[1].prompt_tokens_exact);
  EXPECT_DOUBLE_EQ(decision.cost.targets[1].estimated_usd, (8 * 2.5 + 10 * 10) / 1e6);
  // The headline figures are the chosen target's.
  EXPECT_EQ(decision.cost.prompt_tokens, 42);
  EXPECT_TRUE(decision.cost.prompt_tokens_exact);
}

}  // namespace
}  // namespace switchyard::policies
