// The client dialects read a request off simdjson's DOM when simdjson takes the body, and off
// nlohmann's otherwise (gateway/json_view.h). Whichever DOM it is read from, a body must give
// the same request, or the same error: held here on hand-written bodies and on random mutations
// of them, for the OpenAI and the Anthropic dialect.
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gateway/anthropic_codec.h"
#include "gateway/openai_codec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/json_mutation.h"

namespace switchyard::gateway {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

template <typename T>
std::string Optional(const std::optional<T>& value) {
  return value.has_value() ? absl::StrCat(*value) : "unset";
}

// Every field a parser sets, or the error.
std::string Describe(const absl::StatusOr<InboundRequest>& request) {
  if (!request.ok()) return request.status().ToString();
  const backends::ChatRequest& chat = request->chat;
  std::string out = absl::StrCat("model=", request->requested_model,
                                 " stream=", request->stream, " usage=", request->include_usage);
  for (const backends::Message& message : chat.messages) {
    absl::StrAppend(&out, " [", message.role, ":", message.content, "]");
  }
  absl::StrAppend(&out, " max_tokens=", Optional(chat.max_tokens),
                  " temperature=", Optional(chat.temperature), " top_p=", Optional(chat.top_p),
                  " seed=", Optional(chat.seed), " top_k=", Optional(chat.top_k),
                  " min_p=", Optional(chat.min_p), " repeat=", Optional(chat.repeat_penalty),
                  " frequency=", Optional(chat.frequency_penalty),
                  " presence=", Optional(chat.presence_penalty), " user=", chat.user);
  for (const std::string& stop : chat.stop) absl::StrAppend(&out, " stop=", stop);
  for (const auto& [key, value] : request->metadata) absl::StrAppend(&out, " ", key, "=", value);
  return out;
}

struct Dialect {
  std::function<absl::StatusOr<InboundRequest>(std::string_view)> parse;
  std::function<absl::StatusOr<InboundRequest>(const json&)> from_json;
};

const Dialect kOpenAi = {ParseChatCompletionRequest, ChatCompletionFromJson};
const Dialect kAnthropic = {ParseMessagesRequest, MessagesFromJson};

// Whether the body parsed (by nlohmann) and the request it gave, or its error, is the same on
// both paths.
bool ExpectSame(const Dialect& dialect, const std::string& body) {
  const json dom = json::parse(body, nullptr, /*allow_exceptions=*/false);
  const absl::StatusOr<InboundRequest> fast = dialect.parse(body);
  if (dom.is_discarded()) {
    EXPECT_FALSE(fast.ok()) << body;
    if (!fast.ok()) {
      EXPECT_THAT(fast.status().ToString(), HasSubstr("not valid JSON")) << body;
    }
    return false;
  }
  EXPECT_EQ(Describe(fast), Describe(dialect.from_json(dom))) << body;
  return true;
}

const std::vector<std::string> kOpenAiBodies = {
    R"({"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},)"
    R"({"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},)"
    R"({"role":"developer","content":null}],"max_tokens":64,"max_completion_tokens":32,)"
    R"("temperature":0.5,"top_p":1,"seed":18446744073709551615,"stop":["x","y"],"stream":true,)"
    R"("stream_options":{"include_usage":true},"n":1,"user":"u-1",)"
    R"("metadata":{"b":"2","a":"1","b":"3"},"top_k":40,"min_p":0.05,"repeat_penalty":1.1,)"
    R"("frequency_penalty":-0.5,"presence_penalty":2})",
    R"({"messages":[{"role":"user","content":"hi","role":"assistant"}],"model":"","stop":"end",)"
    R"("seed":-1,"max_tokens":2147483647})",
    R"({"messages":[{"role":"tool","content":[]}],"temperature":2,"top_k":1048576,"n":1.0})",
    R"({"messages":[{"role":"user","content":[{"type":"image_url","text":"a"}]}],)"
    R"("metadata":{"z":1,"a":2}})",
    R"({"messages":[],"max_tokens":9223372036854775808,"top_k":18446744073709551615})",
    R"({"messages":[{"role":"user","content":"x"}],"tools":[],"tool_choice":"none",)"
    R"("response_format":{"type":"text"},"functions":[{"name":"f"}]})",
    R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}})",
};

const std::vector<std::string> kAnthropicBodies = {
    R"({"model":"claude","max_tokens":16,"system":[{"type":"text","text":"Be brief."}],)"
    R"("messages":[{"role":"user","content":"hi"},)"
    R"({"role":"assistant","content":[{"type":"text","text":"a"}]}],"temperature":1,)"
    R"("top_p":0.5,"top_k":3,"stop_sequences":["x"],"stream":false,"metadata":{"user_id":"u"}})",
    R"({"model":"","max_tokens":1,"system":"s","messages":[{"role":"user","content":null}],)"
    R"("tools":null})",
    R"({"model":"m","max_tokens":-5,"messages":[{"role":"user","content":"x"}],)"
    R"("tool_choice":{}})",
    R"({"model":"m","max_tokens":2,"messages":[{"role":"user","content":"x"}],)"
    R"("stop_sequences":[""],"top_k":-1})",
};

TEST(RequestParsersTest, BothDomsGiveTheSameRequestOrError) {
  for (const std::string& body : kOpenAiBodies) EXPECT_TRUE(ExpectSame(kOpenAi, body));
  for (const std::string& body : kAnthropicBodies) EXPECT_TRUE(ExpectSame(kAnthropic, body));
  // The first body really is read whole, duplicate keys and all.
  EXPECT_EQ(Describe(ParseChatCompletionRequest(kOpenAiBodies[0])),
            "model=gpt-4o stream=1 usage=1 [system:Be brief.] [user:ab] [system:] "
            "max_tokens=32 temperature=0.5 top_p=1 seed=18446744073709551615 top_k=40 "
            "min_p=0.05 repeat=1.1 frequency=-0.5 presence=2 user=u-1 stop=x stop=y a=1 b=3");
}

// Random damage (MutateJson): whatever nlohmann parses, the fast path reads the same way;
// whatever it refuses, the fast path refuses as invalid JSON.
void ExpectAgreementOnMutations(const Dialect& dialect, const std::vector<std::string>& bodies) {
  std::mt19937 random(14);
  const std::string alphabet = "{}[]\":,\\ abcdefghijklmnopqrstuvwxyz0123456789.-+E\xc3\xa9\xff";
  int parsed = 0;
  for (int round = 0; round < 40000; ++round) {
    const std::string text =
        test_support::MutateJson(bodies[random() % bodies.size()], alphabet, random);
    if (ExpectSame(dialect, text)) ++parsed;
    if (::testing::Test::HasFailure()) return;
  }
  // The mutations leave plenty of valid JSON, so the comparison really ran.
  EXPECT_GT(parsed, 2000);
}

TEST(RequestParsersTest, OpenAiAgreesOnRandomMutations) {
  ExpectAgreementOnMutations(kOpenAi, kOpenAiBodies);
}

TEST(RequestParsersTest, AnthropicAgreesOnRandomMutations) {
  ExpectAgreementOnMutations(kAnthropic, kAnthropicBodies);
}

}  // namespace
}  // namespace switchyard::gateway
