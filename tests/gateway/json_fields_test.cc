// ParseJsonObject takes simdjson's fast path where it can; whatever the path, it must accept
// exactly what nlohmann's parser accepts and give the same DOM, or the same error.
#include "gateway/json_fields.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace switchyard::gateway {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

std::string Nested(int depth) {
  return "{\"a\":" + std::string(depth, '[') + "1" + std::string(depth, ']') + "}";
}

TEST(JsonFieldsTest, ParsesLikeNlohmann) {
  std::string big = "{\"messages\":[";
  for (int i = 0; i < 2000; ++i) {
    big += (i ? "," : "") + std::string(R"({"role":"user","content":"line \"quoted\" \u00e9\n"})");
  }
  big += "]}";  // past the size of the reused parser
  const std::vector<std::string> bodies = {
      R"({})",
      R"({"s":"plain","e":"\" \\ \/ \b \f \n \r \t \u0041 \u00e9 \u20ac \ud83d\ude00","u":"é€😀"})",
      R"({"i":0,"n":-1,"big":18446744073709551615,"min":-9223372036854775808})",
      R"({"f":1.5,"e":1e2,"neg":-2.5E-3,"t":true,"fa":false,"nu":null})",
      R"({"k":1,"k":2})",             // duplicate keys: the last wins
      R"({"arr":[[],{},[{"x":[1,"2",null]}]]})",
      "\xEF\xBB\xBF{\"bom\":1}",      // a UTF-8 byte order mark
      " \t\r\n{\"ws\":1} \n",
      R"({"huge":18446744073709551616})",  // past 64 bits
      R"({"tiny":1e-400})",
      Nested(1500),                   // deeper than simdjson's default limit
      big,
      // Refused by both:
      R"({"a":1)", R"({"a":1}x)", R"({"a":01})", R"({"a":"\x"})", "{\"a\":\"\x01\"}",
      "{\"a\":\"\xc3\x28\"}", R"({"a":"\ud800"})", R"({"a":"\udc00"})", R"({"a":"\ud800x"})",
      R"({'a':1})", R"({"a":[1,]})", R"({"a":tru})", R"({"a":NaN})", "", "   ",
      R"({"inf":1e400})",             // a number past double's range
  };
  for (const std::string& body : bodies) {
    SCOPED_TRACE(body.substr(0, 80));
    const json expected = json::parse(body, nullptr, /*allow_exceptions=*/false);
    absl::StatusOr<json> parsed = ParseJsonObject(body);
    if (expected.is_discarded()) {
      ASSERT_FALSE(parsed.ok());
      EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("not valid JSON"));
      continue;
    }
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, expected);
    // The same number types, which field checks depend on (is_number_integer, _unsigned).
    for (const auto& [key, value] : expected.items()) {
      EXPECT_EQ((*parsed)[key].type(), value.type()) << key;
    }
  }
}

TEST(JsonFieldsTest, RefusesNonObjectsAndNamesSyntaxErrors) {
  for (const char* body : {"[]", "1", "\"x\"", "null"}) {
    absl::StatusOr<json> parsed = ParseJsonObject(body);
    ASSERT_FALSE(parsed.ok());
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("must be a JSON object"));
  }
  absl::StatusOr<json> truncated = ParseJsonObject("{\"a\":\n[1,");
  ASSERT_FALSE(truncated.ok());
  EXPECT_THAT(std::string(truncated.status().message()), HasSubstr("line 2, column 4"));
  absl::StatusOr<json> overflow = ParseJsonObject(R"({"a":1e400})");
  ASSERT_FALSE(overflow.ok());
  EXPECT_THAT(std::string(overflow.status().message()), HasSubstr("number overflow"));
}

// nlohmann keeps "-0" as a signed integer; simdjson reads it as 0, which the DOM then holds as
// unsigned like "0". Equal as values, and no field check tells them apart.
TEST(JsonFieldsTest, MinusZeroIsZero) {
  absl::StatusOr<json> parsed = ParseJsonObject(R"({"z":-0})");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ((*parsed)["z"], 0);
  EXPECT_TRUE((*parsed)["z"].is_number_integer());
}

}  // namespace
}  // namespace switchyard::gateway
