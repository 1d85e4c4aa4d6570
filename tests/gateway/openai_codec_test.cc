// The OpenAI wire format at the edge: what is accepted, what is refused (naming the field), and
// the exact shape of what is sent back.
#include "gateway/openai_codec.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace switchyard::gateway {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

// One event of a stream with this id, model and time.
std::string ChatChunkEvent(std::string_view id, std::string_view model, int64_t created,
                           std::string_view delta, bool first,
                           const backends::Completion* finish) {
  return ChatChunkWriter(std::string(id), std::string(model), created).Event(delta, first, finish);
}

TEST(OpenAiCodecTest, ParsesAFullRequest) {
  absl::StatusOr<InboundRequest> request = ParseChatCompletionRequest(R"({
    "model": "gpt-4o",
    "messages": [
      {"role": "developer", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]},
      {"role": "assistant", "content": null}
    ],
    "max_completion_tokens": 50, "temperature": 0.5, "top_p": 0.9, "seed": 42,
    "stop": ["\n\n", "END"], "stream": true, "stream_options": {"include_usage": true},
    "user": "u-1", "n": 1, "metadata": {"sensitivity": "confidential"},
    "top_k": 20, "min_p": 0.1, "repeat_penalty": 1.1, "frequency_penalty": -0.5,
    "presence_penalty": 0.25
  })");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->requested_model, "gpt-4o");
  ASSERT_EQ(request->chat.messages.size(), 3u);
  EXPECT_EQ(request->chat.messages[0].role, "system");  // developer is OpenAI's new name
  EXPECT_EQ(request->chat.messages[1].content, "Hello there");
  EXPECT_EQ(request->chat.messages[2].content, "");
  EXPECT_EQ(request->chat.max_tokens, 50);
  EXPECT_FLOAT_EQ(*request->chat.temperature, 0.5f);
  EXPECT_FLOAT_EQ(*request->chat.top_p, 0.9f);
  EXPECT_EQ(request->chat.seed, 42u);
  EXPECT_THAT(request->chat.stop, ::testing::ElementsAre("\n\n", "END"));
  EXPECT_TRUE(request->stream);
  EXPECT_TRUE(request->include_usage);
  EXPECT_EQ(request->chat.user, "u-1");
  EXPECT_EQ(request->metadata.at("sensitivity"), "confidential");
  EXPECT_EQ(request->chat.top_k, 20);
  EXPECT_FLOAT_EQ(*request->chat.min_p, 0.1f);
  EXPECT_FLOAT_EQ(*request->chat.repeat_penalty, 1.1f);
  EXPECT_FLOAT_EQ(*request->chat.frequency_penalty, -0.5f);
  EXPECT_FLOAT_EQ(*request->chat.presence_penalty, 0.25f);
}

TEST(OpenAiCodecTest, DefaultsWhenFieldsAreAbsent) {
  absl::StatusOr<InboundRequest> request =
      ParseChatCompletionRequest(R"({"messages":[{"role":"user","content":"hi"}]})");
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(request->requested_model, "auto");
  EXPECT_FALSE(request->chat.max_tokens.has_value());
  EXPECT_FALSE(request->chat.temperature.has_value());
  EXPECT_FALSE(request->stream);
  EXPECT_TRUE(request->chat.stop.empty());
}

// What asks for nothing a target would be asked to do is accepted: no tools, tool choices that
// call none, plain-text answers; fields the gateway does not know are ignored.
TEST(OpenAiCodecTest, AcceptsToolAndFormatFieldsThatAskForNothing) {
  for (const char* extra :
       {R"("tools":[])", R"("tools":null,"functions":[])", R"("tool_choice":"none")",
        R"("tool_choice":"auto","function_call":"none")", R"("response_format":{"type":"text"})",
        R"("response_format":null)", R"("logprobs":false,"some_vendor_field":{"x":1})"}) {
    const std::string body =
        std::string(R"({"messages":[{"role":"user","content":"hi"}],)") + extra + "}";
    absl::StatusOr<InboundRequest> request = ParseChatCompletionRequest(body);
    EXPECT_TRUE(request.ok()) << body << ": " << request.status();
  }
}

TEST(OpenAiCodecTest, RefusesBadFieldsByName) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"messages":[{"role":"user","content":"x"}],"model":5})", "'model' must be a string"},
      {R"({"messages":[{"role":"user"}],"stop":[1]})", "'stop' must be a string or a list"},
      {R"({"messages":[{"role":"user"}],"stop":["a","b","c","d","e"]})", "at most 4"},
      {R"({"messages":[{"role":"user"}],"stop":[""]})", "empty strings"},
      {R"({"messages":[{"role":"user"}],"max_tokens":0})", "'max_tokens' must be a positive"},
      {R"({"messages":[{"role":"user"}],"max_tokens":1.5})", "'max_tokens' must be an integer"},
      {R"({"messages":[{"role":"user"}],"top_p":2})", "'top_p' must be between 0 and 1"},
      {R"({"messages":[{"role":"user"}],"n":2})", "'n' must be 1"},
      {R"({"messages":[{"role":"user"}],"top_k":-1})", "'top_k' must be between 0 and"},
      {R"({"messages":[{"role":"user"}],"top_k":2.5})", "'top_k' must be an integer"},
      {R"({"messages":[{"role":"user"}],"min_p":1.5})", "'min_p' must be between 0 and 1"},
      {R"({"messages":[{"role":"user"}],"repeat_penalty":0})", "'repeat_penalty' must be greater"},
      {R"({"messages":[{"role":"user"}],"frequency_penalty":3})", "'frequency_penalty' must be"},
      {R"({"messages":[{"role":"user"}],"presence_penalty":"x"})", "'presence_penalty' must be a"},
      {R"({"messages":[{"role":"user"}],"seed":"x"})", "'seed' must be an integer"},
      {R"({"messages":[{"role":"user"}],"metadata":{"a":1}})", "'metadata.a' must be a string"},
      {R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})",
       "'messages[0].content[0].type' 'image_url' is not supported"},
      {R"({"messages":[{"content":"x"}]})", "'messages[0].role' must be a string"},
      {R"({"messages":[1]})", "'messages[0]' must be an object"},
      {R"({"messages":[{"role":"user","content":"x"},{"role":"user","content":5}]})",
       "'messages[1].content' must be a string or a list of parts"},
      {R"({"messages":[{"role":"user","content":[{"type":"text","text":"a"},7]}]})",
       "'messages[0].content[1]' must be an object"},
      {R"({"messages":[{"role":"user","content":[{"text":"a"}]}]})",
       "'messages[0].content[0].type' must be a string"},
      {R"({"messages":[{"role":"user","content":[{"type":"text","text":null}]}]})",
       "'messages[0].content[0].text' must be a string"},
      {R"({"messages":[{"role":"robot","content":"x"}]})",
       "'messages[0].role' 'robot' is not one of"},
      {R"({"messages":[{"role":"user"}],"stream_options":{"include_usage":1}})",
       "'stream_options.include_usage'"},
      // Tool calls and structured output are refused, not silently dropped.
      {R"({"messages":[{"role":"user"}],"tools":[{"type":"function","function":{"name":"f"}}]})",
       "'tools' is not supported"},
      {R"({"messages":[{"role":"user"}],"functions":[{"name":"f"}]})",
       "'functions' is not supported"},
      {R"({"messages":[{"role":"user"}],"tool_choice":"required"})",
       "'tool_choice' is not supported"},
      {R"({"messages":[{"role":"user"}],"tool_choice":{"type":"function"}})",
       "'tool_choice' is not supported"},
      {R"({"messages":[{"role":"user"}],"function_call":{"name":"f"}})",
       "'function_call' is not supported"},
      {R"({"messages":[{"role":"user"}],"response_format":{"type":"json_object"}})",
       "'response_format.type' 'json_object' is not supported; only \"text\" is"},
      {R"({"messages":[{"role":"user"}],"response_format":{"type":"json_schema"}})",
       "'response_format.type' 'json_schema' is not supported"},
      {R"({"messages":[{"role":"user"}],"response_format":"json"})",
       "'response_format' must be an object"},
      {R"({"messages":[{"role":"user"}],"response_format":{}})",
       "'response_format.type' must be a string"},
  };
  for (const auto& [body, message] : cases) {
    absl::StatusOr<InboundRequest> request = ParseChatCompletionRequest(body);
    ASSERT_FALSE(request.ok()) << body;
    EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(request.status().message()), HasSubstr(message)) << body;
  }
}

TEST(OpenAiCodecTest, InvalidJsonAndUtf8NameThePosition) {
  absl::StatusOr<InboundRequest> truncated = ParseChatCompletionRequest(R"({"messages": [)");
  ASSERT_FALSE(truncated.ok());
  EXPECT_THAT(std::string(truncated.status().message()), HasSubstr("not valid JSON"));
  EXPECT_THAT(std::string(truncated.status().message()), HasSubstr("line 1, column 15"));

  absl::StatusOr<InboundRequest> bad_utf8 =
      ParseChatCompletionRequest("{\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]}");
  ASSERT_FALSE(bad_utf8.ok());
  EXPECT_THAT(std::string(bad_utf8.status().message()), HasSubstr("UTF-8"));
}

TEST(OpenAiCodecTest, CompletionJsonHasOpenAiShapeAndOrder) {
  backends::Completion completion;
  completion.finish_reason = backends::FinishReason::kLength;
  completion.usage = {5, 7};
  const std::string text = ChatCompletionJson("chatcmpl-1", "local", 1700000000, "Hi \"there\"",
                                              completion);
  EXPECT_EQ(text,
            R"({"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"local",)"
            R"("choices":[{"index":0,"message":{"role":"assistant","content":"Hi \"there\""},)"
            R"("logprobs":null,"finish_reason":"length"}],)"
            R"("usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}})");
}

TEST(OpenAiCodecTest, ChunkEventsAreSseFramed) {
  const std::string first = ChatChunkEvent("id", "m", 1, "Hel", true, nullptr);
  ASSERT_TRUE(first.starts_with("data: "));
  ASSERT_TRUE(first.ends_with("\n\n"));
  json chunk = json::parse(first.substr(6));
  EXPECT_EQ(chunk["object"], "chat.completion.chunk");
  EXPECT_EQ(chunk["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(chunk["choices"][0]["delta"]["content"], "Hel");
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(chunk.contains("usage"));

  backends::Completion done;
  done.usage = {1, 2};
  json last = json::parse(ChatChunkEvent("id", "m", 1, "", false, &done).substr(6));
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(last["choices"][0]["delta"].empty());
  EXPECT_FALSE(last.contains("usage"));

  json usage = json::parse(ChatUsageEvent("id", "m", 1, {4, 5}).substr(6));
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 5);
}

TEST(OpenAiCodecTest, InvalidUtf8FromABackendIsReplacedNotThrown) {
  backends::Completion completion;
  const std::string text = ChatCompletionJson("id", "m", 1, "bad \xff byte", completion);
  json parsed = json::parse(text);
  EXPECT_THAT(parsed["choices"][0]["message"]["content"].get<std::string>(), HasSubstr("bad "));
}

TEST(OpenAiCodecTest, ErrorJsonUsesTheStatusTable) {
  json error = json::parse(ErrorJson(absl::NotFoundError("model 'x' does not exist")));
  EXPECT_EQ(error["error"]["message"], "model 'x' does not exist");
  EXPECT_EQ(error["error"]["type"], "not_found_error");
  EXPECT_TRUE(error["error"]["param"].is_null());

  // A field's error names the field in `param`, as OpenAI's do.
  for (const auto& [body, field] : std::vector<std::pair<std::string, std::string>>{
           {R"({"messages":[{"role":"user"}],"max_tokens":0})", "max_tokens"},
           {R"({"messages":[{"role":"robot"}]})", "messages[0].role"},
           {R"({"messages":[{"role":"user"}],"tools":[{"type":"function"}]})", "tools"},
           {R"({"messages":[{"role":"user"}],"metadata":{"k":1}})", "metadata.k"}}) {
    absl::StatusOr<InboundRequest> request = ParseChatCompletionRequest(body);
    ASSERT_FALSE(request.ok()) << body;
    json field_error = json::parse(ErrorJson(request.status()));
    EXPECT_EQ(field_error["error"]["param"], field) << body;
    EXPECT_EQ(field_error["error"]["type"], "invalid_request_error");
  }
  // A syntax error names no field.
  json syntax = json::parse(ErrorJson(ParseChatCompletionRequest("{").status()));
  EXPECT_TRUE(syntax["error"]["param"].is_null());
}


// The per-token event is built without a DOM; it must stay byte for byte what the DOM dumps,
// escapes and multi-byte characters included, and invalid UTF-8 still gets replaced.
TEST(OpenAiCodecTest, TokenEventsMatchTheDomByteForByte) {
  using ordered = nlohmann::ordered_json;
  auto reference = [](const std::string& id, const std::string& model, int64_t created,
                      const std::string& delta, bool first,
                      const backends::Completion* finish = nullptr) {
    ordered delta_object = ordered::object();
    if (first) delta_object["role"] = "assistant";
    if (!delta.empty() || first) delta_object["content"] = delta;
    ordered chunk = {{"id", id},
                     {"object", "chat.completion.chunk"},
                     {"created", created},
                     {"model", model},
                     {"choices", ordered::array({ordered{{"index", 0},
                                                         {"delta", delta_object},
                                                         {"logprobs", nullptr},
                                                         {"finish_reason", nullptr}}})}};
    if (finish != nullptr) {
      chunk["choices"][0]["finish_reason"] = FinishReasonName(finish->finish_reason);
    }
    return "data: " + chunk.dump(-1, ' ', false, ordered::error_handler_t::replace) + "\n\n";
  };
  const std::vector<std::string> texts = {
      "", "Hello", " world", "quote \" backslash \\ slash /", "\b\f\n\r\t", std::string("\0\x01\x1f\x7f", 4),
      "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "\xed\x9f\xbf \xef\xbf\xbf \xf4\x8f\xbf\xbf",
      "bad \xff byte", "cut \xe2\x82", "overlong \xc0\xaf", "surrogate \xed\xa0\x80", "\xf4\x90\x80\x80"};
  // A stream's writer renders the shared start of its events once; one writer serves them all.
  const ChatChunkWriter writer("chatcmpl-1", "gpt-4o", 1700000000);
  for (const std::string& text : texts) {
    for (bool first : {true, false}) {
      EXPECT_EQ(ChatChunkEvent("chatcmpl-1", "gpt-4o", 1700000000, text, first, nullptr),
                reference("chatcmpl-1", "gpt-4o", 1700000000, text, first))
          << json(text).dump(-1, ' ', true, json::error_handler_t::replace);
      EXPECT_EQ(writer.Event(text, first, nullptr),
                reference("chatcmpl-1", "gpt-4o", 1700000000, text, first))
          << json(text).dump(-1, ' ', true, json::error_handler_t::replace);
      EXPECT_EQ(ChatChunkEvent(text, text, -5, "x", first, nullptr),
                reference(text, text, -5, "x", first));
      EXPECT_EQ(ChatChunkWriter(text, text, -5).Event("x", first, nullptr),
                reference(text, text, -5, "x", first));
    }
  }
  // The finishing event (a finish reason, no usage) takes the same direct path.
  for (auto reason : {backends::FinishReason::kStop, backends::FinishReason::kLength,
                      backends::FinishReason::kContentFilter}) {
    backends::Completion done;
    done.finish_reason = reason;
    done.usage = {12, 3456789012};
    for (bool first : {true, false}) {
      for (const std::string& text : {std::string(), std::string("bad \xff byte")}) {
        EXPECT_EQ(ChatChunkEvent("chatcmpl-1", text, 1700000000, "", first, &done),
                  reference("chatcmpl-1", text, 1700000000, "", first, &done));
        EXPECT_EQ(ChatChunkWriter("chatcmpl-1", text, 1700000000).Event("", first, &done),
                  reference("chatcmpl-1", text, 1700000000, "", first, &done));
      }
    }
  }
}

TEST(OpenAiCodecTest, CompletionJsonMatchesTheDomByteForByte) {
  using ordered = nlohmann::ordered_json;
  for (const std::string text : {"", "plain", "esc \" \\ \n \x01 \x7f", "caf\xc3\xa9 \xf0\x9f\x98\x80",
                                 "bad \xff byte"}) {
    for (auto [reason, name] : {std::pair{backends::FinishReason::kStop, "stop"},
                                std::pair{backends::FinishReason::kLength, "length"},
                                std::pair{backends::FinishReason::kContentFilter,
                                          "content_filter"}}) {
      backends::Completion completion;
      completion.finish_reason = reason;
      completion.usage = {123, 4567};
      ordered expected = {
          {"id", text},
          {"object", "chat.completion"},
          {"created", 1700000000},
          {"model", "m"},
          {"choices", ordered::array({ordered{
                          {"index", 0},
                          {"message", {{"role", "assistant"}, {"content", text}}},
                          {"logprobs", nullptr},
                          {"finish_reason", name}}})},
          {"usage", {{"prompt_tokens", 123}, {"completion_tokens", 4567}, {"total_tokens", 4690}}}};
      EXPECT_EQ(ChatCompletionJson(text, "m", 1700000000, text, completion),
                expected.dump(-1, ' ', false, ordered::error_handler_t::replace));
    }
  }
}

}  // namespace
}  // namespace switchyard::gateway
