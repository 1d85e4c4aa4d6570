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
    }));

}  // namespace
}  // namespace switchyard::policies
