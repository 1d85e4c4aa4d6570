// Precision and recall of the built-in detectors on the labelled corpus in corpus/ (made by
// corpus/generate.py). A finding counts as correct only with the expected type and exact span.
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "policies/detectors.h"
#include "policies/scanner.h"

namespace switchyard::policies {
namespace {

struct Counts {
  int true_positives = 0;
  int false_positives = 0;
  int false_negatives = 0;
  double precision() const {
    const int found = true_positives + false_positives;
    return found == 0 ? 1.0 : static_cast<double>(true_positives) / found;
  }
  double recall() const {
    const int expected = true_positives + false_negatives;
    return expected == 0 ? 1.0 : static_cast<double>(true_positives) / expected;
  }
};

std::string Category(const std::string& type) { return type.substr(0, type.find('.')); }

TEST(CorpusTest, PrecisionAndRecallPerType) {
  // SWITCHYARD_DETECTOR_CORPUS points at another corpus, e.g. one generated with a new seed.
  const char* override_path = std::getenv("SWITCHYARD_DETECTOR_CORPUS");
  const std::string path = override_path != nullptr
                               ? std::string(override_path)
                               : std::string(SWITCHYARD_SOURCE_DIR) +
                                     "/tests/policies/corpus/detectors.jsonl";
  std::ifstream in(path);
  ASSERT_TRUE(in) << "cannot open " << path;
  auto scanner = Scanner::Build(BuiltinTypes(), {}, {});
  ASSERT_TRUE(scanner.ok()) << scanner.status();

  std::map<std::string, Counts> by_type;      // full type, e.g. secret.jwt
  std::map<std::string, Counts> by_category;  // email, ..., secret
  std::vector<std::string> mistakes;
  int records = 0;
  int negatives = 0;
  std::string line;
  Scanner::Result result;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    ++records;
    const nlohmann::json record = nlohmann::json::parse(line);
    const std::string text = record.at("text").get<std::string>();
    using Key = std::tuple<std::string, size_t, size_t>;
    std::set<Key> expected;
    for (const auto& f : record.at("findings")) {
      expected.insert({f.at("type").get<std::string>(), f.at("start").get<size_t>(),
                       f.at("end").get<size_t>()});
    }
    if (expected.empty()) ++negatives;
    ASSERT_TRUE((*scanner)->Scan(text, result).ok());
    std::set<Key> found;
    for (const Finding& f : result.findings) found.insert({f.type, f.start, f.end});
    for (const Key& key : found) {
      const std::string& type = std::get<0>(key);
      Counts& t = by_type[type];
      Counts& c = by_category[Category(type)];
      if (expected.count(key)) {
        ++t.true_positives;
        ++c.true_positives;
      } else {
        ++t.false_positives;
        ++c.false_positives;
        mistakes.push_back("FP " + type + " '" +
                           text.substr(std::get<1>(key), std::get<2>(key) - std::get<1>(key)) +
                           "' in: " + text);
      }
    }
    for (const Key& key : expected) {
      if (found.count(key)) continue;
      const std::string& type = std::get<0>(key);
      ++by_type[type].false_negatives;
      ++by_category[Category(type)].false_negatives;
      mistakes.push_back("FN " + type + " '" +
                         text.substr(std::get<1>(key), std::get<2>(key) - std::get<1>(key)) +
                         "' in: " + text);
    }
  }
  EXPECT_GE(records, 1000);
  EXPECT_GE(negatives, 300);

  std::printf("%-26s %6s %6s %6s %9s %7s\n", "type", "TP", "FP", "FN", "precision", "recall");
  for (const auto* table : {&by_category, &by_type}) {
    for (const auto& [type, c] : *table) {
      std::printf("%-26s %6d %6d %6d %9.3f %7.3f\n", type.c_str(), c.true_positives,
                  c.false_positives, c.false_negatives, c.precision(), c.recall());
    }
    std::printf("\n");
  }
  for (size_t i = 0; i < mistakes.size() && i < 40; ++i) std::printf("%s\n", mistakes[i].c_str());

  for (const std::string type :
       {"email", "phone", "credit_card", "iban", "us_ssn", "ip_address", "secret"}) {
    const Counts& c = by_category[type];
    EXPECT_GE(c.true_positives + c.false_negatives, 60) << type << ": too few positives";
    EXPECT_GE(c.precision(), 0.95) << type;
    EXPECT_GE(c.recall(), 0.95) << type;
  }
  for (const auto& [type, c] : by_type) {
    if (c.true_positives + c.false_negatives < 10) continue;
    EXPECT_GE(c.precision(), 0.95) << type;
    EXPECT_GE(c.recall(), 0.95) << type;
  }
}

}  // namespace
}  // namespace switchyard::policies
