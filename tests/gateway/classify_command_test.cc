// `switchyard classify`: one JSON decision per input line, explaining every target's estimated
// cost and why each other target lost, with findings as type and span only.
#include "gateway/classify_command.h"

#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace switchyard::gateway {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;

constexpr char kConfig[] = R"(
targets:
  - { name: local, kind: local, model: unused.gguf }
  - name: gpt
    kind: openai_compatible
    base_url: http://127.0.0.1:9/v1
    model: gpt-upstream
    price: { input_per_million: 2.5, output_per_million: 10 }
  - name: mini
    kind: openai_compatible
    base_url: http://127.0.0.1:9/v1
    model: mini-upstream
    price: { input_per_million: 0.15, output_per_million: 0.6 }
policy:
  default: local
  clearance: { gpt: internal, mini: public }
  rules:
    - { name: block, when: { keywords: [forbidden] }, deny: "not here" }
    - name: cloud-redacted
      when: { findings: [email] }
      route: [mini, gpt]
      redact: true
    - { name: cheap, when: { keywords: [cheap] }, route: cheapest, candidates: [gpt, mini] }
)";

std::vector<json> Classify(const std::string& input) {
  absl::StatusOr<Config> config = ParseConfig(kConfig, "classify.yaml", "");
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok()) return {};
  std::istringstream in(input);
  std::ostringstream out;
  EXPECT_EQ(RunClassify(*config, in, out), 0);
  std::vector<json> lines;
  std::istringstream lines_in(out.str());
  for (std::string line; std::getline(lines_in, line);) lines.push_back(json::parse(line));
  EXPECT_THAT(out.str(), Not(HasSubstr("bob@initech.com")));
  return lines;
}

TEST(ClassifyCommandTest, ExplainsCostsRejectionsAndRedaction) {
  const std::vector<json> lines = Classify(
      "{\"text\":\"something cheap please\",\"max_tokens\":100}\n"
      "{\"text\":\"mail bob@initech.com\"}\n"
      "{\"text\":\"forbidden\"}\n");
  ASSERT_EQ(lines.size(), 3u);

  // route: cheapest: every target priced, the loser says by how much.
  const json& cheap = lines[0];
  EXPECT_EQ(cheap["target"], "mini");
  EXPECT_EQ(cheap["targets"], json::array({"mini", "gpt"}));
  ASSERT_EQ(cheap["cost"]["targets"].size(), 3u);
  EXPECT_EQ(cheap["cost"]["targets"][0]["target"], "local");
  EXPECT_EQ(cheap["cost"]["targets"][0]["estimated_usd"], 0);
  const int64_t prompt = cheap["cost"]["targets"][1]["prompt_tokens"];
  EXPECT_EQ(prompt, 6 + 4);  // ceil(22 / 4) + 4: no tokenizer offline
  EXPECT_DOUBLE_EQ(cheap["cost"]["targets"][1]["estimated_usd"].get<double>(),
                   (prompt * 2.5 + 100 * 10) / 1e6);
  EXPECT_DOUBLE_EQ(cheap["cost"]["estimated_usd"].get<double>(),
                   (prompt * 0.15 + 100 * 0.6) / 1e6);
  EXPECT_EQ(cheap["rejected"][0], json::parse(R"({"target":"local",
                                                   "reason":"not a candidate of rule 'cheap'"})"));
  EXPECT_EQ(cheap["rejected"][1]["target"], "gpt");
  EXPECT_THAT(cheap["rejected"][1]["reason"].get<std::string>(),
              ::testing::StartsWith("more expensive: "));

  // Redaction: the email counts for local, not for the remote targets it is hidden from.
  const json& mail = lines[1];
  EXPECT_EQ(mail["target"], "mini");
  EXPECT_EQ(mail["redact"], true);
  EXPECT_EQ(mail["sensitivity"]["level"], "internal");
  EXPECT_EQ(mail["sensitivity"]["redacted_level"], "public");
  EXPECT_EQ(mail["sensitivity"]["findings"][0]["type"], "email");
  EXPECT_EQ(mail["sensitivity"]["findings"][0]["start"], 5);
  EXPECT_EQ(mail["sensitivity"]["findings"][0]["end"], 20);
  EXPECT_EQ(mail["sensitivity"]["findings"][0]["redacted"], true);
  EXPECT_EQ(mail["rejected"][0]["reason"], "rule 'cloud-redacted' fired first");
  EXPECT_EQ(mail["rejected"][1]["reason"], "fallback 2 of rule 'cloud-redacted'");

  // Denied: every target is listed with the reason.
  const json& denied = lines[2];
  EXPECT_EQ(denied["denied"], true);
  ASSERT_EQ(denied["rejected"].size(), 3u);
  for (const json& rejection : denied["rejected"]) {
    EXPECT_EQ(rejection["reason"], "rule 'block' denied the request");
  }
}

}  // namespace
}  // namespace switchyard::gateway
