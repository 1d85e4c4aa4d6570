#include "policies/redact.h"

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

TEST(RedactTest, SkipsOverlappingAndOutOfRangeSpans) {
  const std::vector<std::string_view> texts = {"0123456789"};
  const std::vector<Finding> findings = {
      {"a", 0, 2, 6, 1}, {"b", 0, 4, 8, 1}, {"c", 0, 8, 20, 1}, {"d", 3, 0, 1, 1}};
  const Redaction redaction = Redact(texts, findings);
  EXPECT_THAT(redaction.texts, ElementsAre("01<A_1>6789"));
  EXPECT_EQ(redaction.restore.size(), 1u);
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

}  // namespace
}  // namespace switchyard::policies
