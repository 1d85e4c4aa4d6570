#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policies/detectors.h"
#include "policies/scanner.h"

namespace switchyard::policies {
namespace {

// "type:value" for every finding, so expectations read like the text.
std::vector<std::string> Detect(std::string_view text) {
  static const auto* scanner = [] {
    auto built = Scanner::Build(BuiltinTypes(), {}, {});
    EXPECT_TRUE(built.ok()) << built.status();
    return built->release();
  }();
  Scanner::Result result;
  EXPECT_TRUE(scanner->Scan(text, result).ok());
  std::vector<std::string> out;
  for (const Finding& f : result.findings) {
    out.push_back(std::string(f.type) + ":" + std::string(text.substr(f.start, f.end - f.start)));
  }
  return out;
}

struct DetectCase {
  std::string text;
  std::vector<std::string> want;
};

void PrintTo(const DetectCase& c, std::ostream* os) { *os << c.text; }

class DetectTest : public ::testing::TestWithParam<DetectCase> {};

TEST_P(DetectTest, Finds) { EXPECT_THAT(Detect(GetParam().text), ::testing::ElementsAreArray(GetParam().want)); }

INSTANTIATE_TEST_SUITE_P(
    Table, DetectTest,
    ::testing::ValuesIn(std::vector<DetectCase>{
        {"mail jane.doe+x@acme-corp.co.uk today", {"email:jane.doe+x@acme-corp.co.uk"}},
        {"mail user@example.com", {}},
        {"call +44 20 7123 4567 now", {"phone:+44 20 7123 4567"}},
        {"call (415) 555-2671 now", {"phone:(415) 555-2671"}},
        {"call 415-555-0123", {}},
        {"ring 030 12345678", {"phone:030 12345678"}},
        {"card 4111 1111 1111 1111.", {"credit_card:4111 1111 1111 1111"}},
        {"card 4111 1111 1111 1112.", {}},
        {"iban DE89 3704 0044 0532 0130 00 ok", {"iban:DE89 3704 0044 0532 0130 00"}},
        {"iban DE89370400440532013000", {"iban:DE89370400440532013000"}},
        {"iban DE89370400440532013001", {}},
        {"ssn 536-22-1234", {"us_ssn:536-22-1234"}},
        {"ssn 666-22-1234", {}},
        {"host 10.1.2.3 up", {"ip_address:10.1.2.3"}},
        {"version 1.2.3.4", {}},
        {"oid 1.3.6.1.4.1", {}},
        {"v6 fe80::1ff:fe23:4567:890a here", {"ip_address:fe80::1ff:fe23:4567:890a"}},
        {"at 12:30:45", {}},
        {"std::vector<int>", {}},
        {"key AKIAQ3EGRTNDVB2YOBXR", {"secret.aws_access_key:AKIAQ3EGRTNDVB2YOBXR"}},
        {"key AKIAIOSFODNN7EXAMPLE", {}},
        {"commit 3f786850e387550fdab836ed7e6dc881de23001b", {}},
        {"id 123e4567-e89b-12d3-a456-426614174000", {}},
        {"password = \"Xk9#mP2$vL5q\"", {"secret.generic:Xk9#mP2$vL5q"}},
        {"api_key: 123e4567-e89b-12d3-a456-426614174000", {}},
        {"token = ${API_TOKEN}", {}},
        // Digit groups separated as text pasted from web pages and word processors separates
        // them: no-break, narrow no-break and thin spaces, typographic hyphens.
        {"card 4111\u00a01111\u00a01111\u00a01111.",
         {"credit_card:4111\u00a01111\u00a01111\u00a01111"}},
        {"card 4111\u202f1111\u202f1111\u202f1111",
         {"credit_card:4111\u202f1111\u202f1111\u202f1111"}},
        {"card 4111\u20091111\u20091111\u20091111",
         {"credit_card:4111\u20091111\u20091111\u20091111"}},
        {"card 4111\u20111111\u20111111\u20111111",
         {"credit_card:4111\u20111111\u20111111\u20111111"}},
        {"amex 3782\u2013822463\u201310005", {"credit_card:3782\u2013822463\u201310005"}},
        {"card 4111\u00a01111 1111 1111", {}},  // separators that disagree
        {"card 4111\u00a01111\u00a01111\u00a01112", {}},
        {"iban DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000 ok",
         {"iban:DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000"}},
        {"ssn 536\u201022\u20101234", {"us_ssn:536\u201022\u20101234"}},
        {"ssn 536\u00a022\u00a01234", {"us_ssn:536\u00a022\u00a01234"}},
        {"ref 2024\u2011536\u201122\u20111234", {}},  // part of a longer number
        {"call +44\u00a020\u00a07123\u00a04567 now", {"phone:+44\u00a020\u00a07123\u00a04567"}},
        {"call (415)\u00a0555\u20112671 now", {"phone:(415)\u00a0555\u20112671"}},
        {"call 1\u2011415\u2011555\u20112671", {"phone:1\u2011415\u2011555\u20112671"}},
        {"call 415\u2011555.2671", {}},
        {"ring 01\u202f23\u202f45\u202f67\u202f89", {"phone:01\u202f23\u202f45\u202f67\u202f89"}},
        // RFC 5322 allows ' and other symbols in a local part; a quote around it is prose.
        {"mail o'brien@corp.ie today", {"email:o'brien@corp.ie"}},
        {"mail 'bob@corp.ie' or \"ann.o'neill+x@corp.ie\"",
         {"email:bob@corp.ie", "email:ann.o'neill+x@corp.ie"}},
        // A long run before the address is cut at 64 bytes, not a reason to drop the address.
        {"see https://intranet.corp.ie/directory/people/search?department=finance&user=bob@corp.ie",
         {"email:anet.corp.ie/directory/people/search?department=finance&user=bob@corp.ie"}},
    }));

}  // namespace
}  // namespace switchyard::policies
