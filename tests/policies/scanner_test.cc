#include "policies/scanner.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace switchyard::policies {
namespace {

using ::testing::ElementsAre;

// The bytes of every regex hit, in order.
std::vector<std::string> RegexHits(const Scanner& scanner, std::string_view text) {
  Scanner::Result result;
  EXPECT_TRUE(scanner.Scan(text, result).ok());
  std::vector<std::string> out;
  for (const Scanner::Hit& hit : result.hits) {
    out.emplace_back(text.substr(hit.start, hit.end - hit.start));
  }
  return out;
}

// Policy regexes match characters as RE2 defines them, whichever engine runs them: Hyperscan,
// or RE2 itself for what Hyperscan cannot compile ((?U) here).
TEST(ScannerTest, PolicyRegexesMatchUtf8CharactersOnBothEngines) {
  for (const std::string prefix : {"", "(?U)"}) {
    SCOPED_TRACE(prefix);
    auto scanner = Scanner::Build(
        {}, {}, {{prefix + "M.ller", 0}, {prefix + "M[äöü]ller", 1}, {prefix + "ACCT-.", 2}});
    ASSERT_TRUE(scanner.ok()) << scanner.status();
    EXPECT_EQ((*scanner)->re2_fallback_count(), prefix.empty() ? 0u : 3u);
    EXPECT_THAT(RegexHits(**scanner, "Herr Müller"), ElementsAre("Müller", "Müller"));
    // The match takes the whole last character, never a part of it.
    EXPECT_THAT(RegexHits(**scanner, "ref ACCT-é."), ElementsAre("ACCT-é"));
    EXPECT_THAT(RegexHits(**scanner, "Herr Mueller"), ElementsAre());
  }
}

// Hyperscan's results for a UTF-8 pattern on invalid UTF-8 are undefined, so such a text is not
// scanned at all (the gateway's parsers never let one through).
TEST(ScannerTest, RefusesInvalidUtf8UnderPolicyRegexes) {
  auto scanner = Scanner::Build({}, {}, {{"ACCT-.", 0}});
  ASSERT_TRUE(scanner.ok()) << scanner.status();
  Scanner::Result result;
  for (std::string_view text : {std::string_view("ACCT-\xc3"), std::string_view("\xff ACCT-x"),
                                std::string_view("ACCT-\xed\xa0\x80"),    // a surrogate
                                std::string_view("ACCT-\xc0\xaf"),        // overlong '/'
                                std::string_view("ACCT-\xf4\x90\x80\x80")}) {  // past U+10FFFF
    const absl::Status status = (*scanner)->Scan(text, result);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << text;
  }
  EXPECT_TRUE((*scanner)->Scan("ACCT-\xf0\x9f\x98\x80 and 12345678 ascii", result).ok());
  EXPECT_TRUE((*scanner)->Scan("\xe2\x82\xac\xc3\xa9\xed\x9f\xbf\xf4\x8f\xbf\xbf", result).ok());
  // Without policy regexes nothing reads the text as UTF-8, and any bytes are scanned.
  auto builtins = Scanner::Build({"email"}, {}, {});
  ASSERT_TRUE(builtins.ok()) << builtins.status();
  EXPECT_TRUE((*builtins)->Scan("\xff bob@acme.io", result).ok());
  EXPECT_EQ(result.findings.size(), 1u);
}

}  // namespace
}  // namespace switchyard::policies
