#include "policies/difficulty.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policies/policy_set.h"
#include "policies/yaml_util.h"

namespace switchyard::policies {
namespace {

using Scorer = HeuristicDifficultyScorer;

std::array<double, Scorer::kCount> FeaturesOf(const std::vector<std::string>& texts,
                                               int64_t tokens = 10) {
  RequestFeatures request;
  for (const std::string& text : texts) request.texts.push_back(text);
  return Scorer(Scorer::Options{}).Features(request, tokens);
}

TEST(HeuristicDifficultyTest, EmptyRequestIsEasyZero) {
  RequestFeatures request;
  const DifficultyScore score = Scorer(Scorer::Options{}).Score(request, 0);
  EXPECT_EQ(score.score, 0);
  EXPECT_EQ(score.tier, DifficultyTier::kEasy);
  ASSERT_EQ(score.contributions.size(), 7u);
  EXPECT_EQ(score.contributions[0].feature, "length");
  EXPECT_EQ(score.contributions[6].feature, "depth");
}

struct FeatureCase {
  std::string name;
  std::vector<std::string> texts;
  Scorer::Feature feature;
  double want;  // the squashed value
};

void PrintTo(const FeatureCase& c, std::ostream* os) { *os << c.name; }

class FeatureTest : public ::testing::TestWithParam<FeatureCase> {};

TEST_P(FeatureTest, Counts) {
  const FeatureCase& c = GetParam();
  EXPECT_NEAR(FeaturesOf(c.texts)[c.feature], c.want, 1e-9);
}

// Each feature is x / (x + half): code and math halve at 4, reasoning at 2, constraints at 4,
// questions at 3, depth at 6 extra messages.
INSTANTIATE_TEST_SUITE_P(
    Table, FeatureTest,
    ::testing::ValuesIn(std::vector<FeatureCase>{
        {"PlainProseNoCode", {"tell me a story about a dragon"}, Scorer::kCode, 0},
        {"FencesAndKeywords", {"```python\ndef f():\n  return 1\n```"}, Scorer::kCode,
         4.0 / 8.0},  // two fences, def, return
        {"CodeSymbolsQuarter", {"x{};"}, Scorer::kCode, 0.75 / 4.75},
        {"LatexAndOperators", {"\\frac{a}{b} = c"}, Scorer::kMath, 1.5 / 5.5},
        {"MathWords", {"solve the equation"}, Scorer::kMath, 2.0 / 6.0},
        {"StepByStepIsOneCue", {"think step by step"}, Scorer::kReasoning, 1.0 / 3.0},
        {"StepAloneIsNoCue", {"one step at a time"}, Scorer::kReasoning, 0},
        {"ReasoningWordsCaseInsensitive", {"Explain WHY and Compare"}, Scorer::kReasoning,
         3.0 / 5.0},
        {"WholeWordsOnly", {"proven provenance whyever"}, Scorer::kReasoning, 0},
        {"ConstraintPhrases", {"at least two, at most five, no more than six, must"},
         Scorer::kConstraints, 4.0 / 8.0},
        {"BulletLines", {"do this:\n- one\n  * two\n3. three\nnot-a-bullet"},
         Scorer::kConstraints, 3.0 / 7.0},
        {"Questions", {"why? how? what?"}, Scorer::kQuestions, 3.0 / 6.0},
        {"DepthCountsExtraMessages", {"a", "b", "c"}, Scorer::kDepth, 2.0 / 8.0},
    }),
    [](const auto& info) { return info.param.name; });

TEST(HeuristicDifficultyTest, LengthUsesTokens) {
  EXPECT_NEAR(FeaturesOf({"x"}, 1000)[Scorer::kLength], 0.5, 1e-9);
  EXPECT_NEAR(FeaturesOf({"x"}, 0)[Scorer::kLength], 0, 1e-9);
}

TEST(HeuristicDifficultyTest, TiersFromDefaults) {
  Scorer scorer{Scorer::Options{}};
  RequestFeatures request;
  request.texts = {"What is 2+2?"};
  EXPECT_EQ(scorer.Score(request, 8).tier, DifficultyTier::kEasy);
  request.texts = {"Explain why the sky is blue, and compare it with a sunset."};
  EXPECT_EQ(scorer.Score(request, 20).tier, DifficultyTier::kMedium);
  request.texts = {
      "Prove step by step that for every integer n, $\\sum_{k=1}^{n} (2k-1) = n^2$. Explain "
      "why induction works here, compare it with a direct proof, and you must not use "
      "calculus."};
  const DifficultyScore hard = scorer.Score(request, 60);
  EXPECT_EQ(hard.tier, DifficultyTier::kHard);
  EXPECT_GT(hard.score, 0.7);
  EXPECT_LE(hard.score, 1.0);
  double sum = 0;
  for (const DifficultyContribution& c : hard.contributions) sum += c.contribution;
  EXPECT_NEAR(hard.score, 1 - std::exp(-sum), 1e-12);
}

absl::StatusOr<std::unique_ptr<const Scorer>> FromYaml(std::string_view text) {
  auto root = ParseYaml(text, "d.yaml");
  if (!root.ok()) return root.status();
  return Scorer::FromYaml((*root)["difficulty"], YamlReader("d.yaml"));
}

TEST(HeuristicDifficultyTest, YamlTunesWeightsAndTiers) {
  auto scorer = FromYaml(R"EOF(
difficulty:
  weights: { length: 0, code: 5 }
  tiers: { medium: 0.2, hard: 0.5 }
)EOF");
  ASSERT_TRUE(scorer.ok()) << scorer.status();
  EXPECT_EQ((*scorer)->options().weights[Scorer::kCode], 5);
  EXPECT_EQ((*scorer)->options().weights[Scorer::kLength], 0);
  EXPECT_EQ((*scorer)->options().weights[Scorer::kMath], Scorer::Options{}.weights[Scorer::kMath]);
  RequestFeatures request;
  request.texts = {"```\nreturn x;\n```"};
  EXPECT_EQ((*scorer)->Score(request, 100000).tier, DifficultyTier::kHard);
  auto defaults = FromYaml("other: 1");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ((*defaults)->options().hard, 0.7);
}

struct YamlErrorCase {
  std::string name;
  std::string yaml;
  std::string want;
};

void PrintTo(const YamlErrorCase& c, std::ostream* os) { *os << c.name; }

class DifficultyYamlErrorTest : public ::testing::TestWithParam<YamlErrorCase> {};

TEST_P(DifficultyYamlErrorTest, ReportsPosition) {
  auto scorer = FromYaml(GetParam().yaml);
  ASSERT_FALSE(scorer.ok());
  EXPECT_EQ(std::string(scorer.status().message()), GetParam().want);
}

INSTANTIATE_TEST_SUITE_P(
    Table, DifficultyYamlErrorTest,
    ::testing::ValuesIn(std::vector<YamlErrorCase>{
        {"UnknownKey", "difficulty: { weight: {} }",
         "d.yaml:1:15: unknown key 'weight' in difficulty (did you mean 'weights'?)"},
        {"UnknownFeature", "difficulty: { weights: { maths: 1 } }",
         "d.yaml:1:26: unknown key 'maths' in difficulty weights (did you mean 'math'?)"},
        {"NegativeWeight", "difficulty: { weights: { code: -1 } }",
         "d.yaml:1:32: 'code' must be between 0 and 100, not -1"},
        {"UnknownTier", "difficulty: { tiers: { extreme: 0.9 } }",
         "d.yaml:1:24: unknown key 'extreme' in difficulty tiers (allowed: medium, hard)"},
        {"TierOutOfRange", "difficulty: { tiers: { hard: 1.5 } }",
         "d.yaml:1:30: 'hard' must be between 0 and 1, not 1.5"},
        {"TiersOutOfOrder", "difficulty: { tiers: { medium: 0.8, hard: 0.5 } }",
         "d.yaml:1:22: difficulty tier 'medium' (0.8) must not be above 'hard' (0.5)"},
    }),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace switchyard::policies
