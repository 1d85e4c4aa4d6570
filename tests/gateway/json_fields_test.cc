// JsonBody takes simdjson's fast path where it can; whatever the path, it must accept exactly
// what nlohmann's parser accepts, and its view must read as nlohmann's DOM reads (the same
// values, number types, key order and duplicate keys), or give the same error.
#include "gateway/json_fields.h"

#include <string>
#include <vector>

#include "gateway/json_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace switchyard::gateway {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

// What a reader sees through a view, rebuilt as nlohmann's DOM with the view's number types.
template <typename View>
json Rebuild(const View& view) {
  if (view.is_null()) return nullptr;
  if (view.is_boolean()) return view.boolean();
  if (view.is_string()) return std::string(view.string());
  if (view.is_number_unsigned()) return view.uint64();
  if (view.is_number_integer()) return view.int64();
  if (view.is_number()) return view.number();
  json out = view.is_array() ? json::array() : json::object();
  absl::Status status;
  if (view.is_array()) {
    EXPECT_EQ(out.size(), 0u);
    status = view.EachItem([&](size_t index, const View& item) {
      EXPECT_EQ(index, out.size());
      out.push_back(Rebuild(item));
      return absl::OkStatus();
    });
    EXPECT_EQ(out.size(), view.size());
  } else {
    std::string previous;
    status = view.EachField([&](std::string_view key, const View& value) {
      EXPECT_TRUE(out.empty() || std::string(key) > previous) << "fields out of key order";
      previous = std::string(key);
      out[previous] = Rebuild(value);
      // find gives the field EachField gave: the last of duplicate keys.
      EXPECT_EQ(Rebuild(*view.find(key)), out[previous]);
      return absl::OkStatus();
    });
  }
  EXPECT_TRUE(status.ok()) << status;
  return out;
}

// The same values with the same types all the way down (json's == takes 1 and 1u as equal).
void ExpectSameTypes(const json& a, const json& b, const std::string& path) {
  ASSERT_EQ(a.type(), b.type()) << path;
  if (a.is_object()) {
    for (const auto& [key, value] : a.items()) ExpectSameTypes(value, b.at(key), path + "." + key);
  } else if (a.is_array()) {
    for (size_t i = 0; i < a.size(); ++i) {
      ExpectSameTypes(a[i], b[i], path + "[" + std::to_string(i) + "]");
    }
  }
}

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
    absl::StatusOr<JsonBody> parsed = JsonBody::Parse(body);
    if (expected.is_discarded()) {
      ASSERT_FALSE(parsed.ok());
      EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("not valid JSON"));
      continue;
    }
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    const json seen = parsed->Read([](const auto& view) { return Rebuild(view); });
    EXPECT_EQ(seen, expected);
    // The same number types, which field checks depend on (is_number_integer, _unsigned).
    ExpectSameTypes(seen, expected, "");
    // nlohmann's own view reads its DOM back unchanged.
    EXPECT_EQ(Rebuild(NlohmannView(expected)), expected);
  }
}

// Of duplicate keys the last wins, as in nlohmann's DOM, on both paths.
TEST(JsonFieldsTest, FindTakesTheLastOfDuplicateKeys) {
  // The second body has an integer past 64 bits, which simdjson declines: nlohmann reads it.
  for (const char* body :
       {R"({"k":1,"j":0,"k":"two"})", R"({"k":1,"j":18446744073709551616,"k":"two"})"}) {
    SCOPED_TRACE(body);
    absl::StatusOr<JsonBody> parsed = JsonBody::Parse(body);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    parsed->Read([](const auto& view) {
      ASSERT_TRUE(view.find("k").has_value());
      ASSERT_TRUE(view.find("k")->is_string());
      EXPECT_EQ(view.find("k")->string(), "two");
      EXPECT_FALSE(view.find("absent").has_value());
    });
  }
}

TEST(JsonFieldsTest, RefusesNonObjectsAndNamesSyntaxErrors) {
  // The last two are declined by simdjson (past 64 bits, too deep): nlohmann decides.
  for (std::string body : {std::string("[]"), std::string("1"), std::string("\"x\""),
                           std::string("null"), std::string("[18446744073709551616]"),
                           "[" + Nested(1500) + "]"}) {
    SCOPED_TRACE(body.substr(0, 40));
    absl::StatusOr<JsonBody> parsed = JsonBody::Parse(body);
    ASSERT_FALSE(parsed.ok());
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("must be a JSON object"));
  }
  absl::StatusOr<JsonBody> truncated = JsonBody::Parse("{\"a\":\n[1,");
  ASSERT_FALSE(truncated.ok());
  EXPECT_THAT(std::string(truncated.status().message()), HasSubstr("line 2, column 4"));
  absl::StatusOr<JsonBody> overflow = JsonBody::Parse(R"({"a":1e400})");
  ASSERT_FALSE(overflow.ok());
  EXPECT_THAT(std::string(overflow.status().message()), HasSubstr("number overflow"));
}

// nlohmann keeps "-0" as a signed integer; simdjson reads it as 0, which the view then reads as
// unsigned like "0". Equal as values, and no field check tells them apart.
TEST(JsonFieldsTest, MinusZeroIsZero) {
  absl::StatusOr<JsonBody> parsed = JsonBody::Parse(R"({"z":-0})");
  ASSERT_TRUE(parsed.ok());
  parsed->Read([](const auto& view) {
    ASSERT_TRUE(view.find("z").has_value());
    EXPECT_TRUE(view.find("z")->is_number_integer());
    EXPECT_EQ(view.find("z")->int64(), 0);
  });
}

}  // namespace
}  // namespace switchyard::gateway
