// ScanOpenAiChunk and ScanOpenAiCompletion against the DOM they replace: whenever the scanner
// answers, its fields must be exactly what nlohmann::json gives, for hand-picked chunks and bodies
// and for many random mutations of them; and it must answer for what real providers send, or the
// fast path is never taken.
#include "backends/remote/openai_chunk.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/json_mutation.h"

namespace switchyard::backends {
namespace {

using Json = nlohmann::json;

// Which scan, and the choice member it reads the content from.
struct Kind {
  const char* message_key;
  bool (*scan)(std::string_view, OpenAiChunkFields*);
};
const Kind kChunk = {"delta", &ScanOpenAiChunk};
const Kind kCompletion = {"message", &ScanOpenAiCompletion};

// What OpenAiReader reads from the DOM; nullopt when the text is not a JSON object.
std::optional<OpenAiChunkFields> FromDom(const std::string& text, const Kind& kind) {
  Json chunk = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!chunk.is_object()) return std::nullopt;
  OpenAiChunkFields f;
  f.has_error = chunk.contains("error");
  if (chunk.contains("usage") && chunk["usage"].is_object()) {
    const Json& u = chunk["usage"];
    if (u.contains("prompt_tokens") && u["prompt_tokens"].is_number_integer()) {
      f.prompt_tokens = u["prompt_tokens"].get<int64_t>();
    }
    if (u.contains("completion_tokens") && u["completion_tokens"].is_number_integer()) {
      f.completion_tokens = u["completion_tokens"].get<int64_t>();
    }
  }
  if (chunk.contains("choices") && chunk["choices"].is_array() && !chunk["choices"].empty() &&
      chunk["choices"][0].is_object()) {
    const Json& choice = chunk["choices"][0];
    if (choice.contains(kind.message_key) && choice[kind.message_key].is_object()) {
      f.has_message = true;
      const Json& message = choice[kind.message_key];
      if (message.contains("content") && message["content"].is_string()) {
        f.content = message["content"].get<std::string>();
      }
    }
    if (choice.contains("finish_reason") && !choice["finish_reason"].is_null()) {
      f.finish_reason = true;
      f.finish_is_length = choice["finish_reason"].is_string() &&
                           choice["finish_reason"].get<std::string>() == "length";
      f.finish_is_content_filter = choice["finish_reason"].is_string() &&
                                   choice["finish_reason"].get<std::string>() == "content_filter";
    }
  }
  return f;
}

void ExpectSame(const std::string& text, const OpenAiChunkFields& scanned,
                const Kind& kind = kChunk) {
  std::optional<OpenAiChunkFields> dom = FromDom(text, kind);
  ASSERT_TRUE(dom.has_value()) << "scanner accepted what the DOM refuses: " << text;
  EXPECT_EQ(scanned.has_error, dom->has_error) << text;
  EXPECT_EQ(scanned.prompt_tokens, dom->prompt_tokens) << text;
  EXPECT_EQ(scanned.completion_tokens, dom->completion_tokens) << text;
  EXPECT_EQ(scanned.has_message, dom->has_message) << text;
  EXPECT_EQ(scanned.content, dom->content) << text;
  EXPECT_EQ(scanned.finish_reason, dom->finish_reason) << text;
  EXPECT_EQ(scanned.finish_is_length, dom->finish_is_length) << text;
  EXPECT_EQ(scanned.finish_is_content_filter, dom->finish_is_content_filter) << text;
}

// Chunks as providers send them; the scanner must read every one.
const std::vector<std::string> kRealChunks = {
    R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]})",
    R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":" world"},"logprobs":null,"finish_reason":null}]})",
    R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]})",
    R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"length"}]})",
    R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}})",
    R"({ "choices" : [ { "delta" : { "content" : "caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \n\t" } } ] })",
    "{\"choices\":[{\"delta\":{\"content\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}}]}",
    R"({"error":{"message":"overloaded","type":"server_error"}})",
    R"({"choices":[{"delta":{"content":null},"finish_reason":null}],"usage":null})",
    R"({"choices":[{"delta":{"content":"x"}},{"delta":{"content":"second choice"}}]})",
    R"({"choices":"none","usage":{"prompt_tokens":1.5,"completion_tokens":-0}})",
    R"({"choices":[7,{"delta":{"content":"not first"}}]})",
    R"({"choices":[{"finish_reason":7,"delta":[1,2]}],"usage":{"prompt_tokens":"7"}})",
    R"({"nested":{"a":[[[{"b":[true,false,null,-1.25e+3,0.5E-2]}]]]},"choices":[{"delta":{"content":"ok"}}]})",
    R"({})",
    R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"content_filter"}]})",
};

// Non-streamed answers as providers send them (OpenAI, vLLM, llama-server), and edge cases.
const std::vector<std::string> kRealCompletions = {
    R"({"id":"chatcmpl-2","object":"chat.completion","created":1700000000,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":3,"total_tokens":22,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}},"service_tier":"default","system_fingerprint":"fp_2"})",
    R"({"id":"cmpl-3","object":"chat.completion","created":1700000000,"model":"qwen","choices":[{"index":0,"message":{"role":"assistant","reasoning_content":null,"content":"cut sh","tool_calls":[]},"logprobs":null,"finish_reason":"length","stop_reason":null}],"usage":{"prompt_tokens":5,"total_tokens":7,"completion_tokens":2},"prompt_logprobs":null})",
    R"({"choices":[{"finish_reason":"stop","index":0,"message":{"role":"assistant","content":"caf\u00e9 \ud83d\ude00"}}],"created":1,"model":"m","object":"chat.completion","usage":{"completion_tokens":2,"prompt_tokens":4,"total_tokens":6},"timings":{"prompt_ms":1.5,"predicted_per_second":80.25}})",
    R"({"choices":[{"message":{"content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}]})",
    R"({"choices":[{"message":"not an object","finish_reason":null}]})",
    R"({"choices":[{"delta":{"content":"a chunk, not a body"}}]})",
    R"({"choices":[]})",
    R"({"error":{"message":"bad"},"choices":[{"message":{"content":"x"}}]})",
};

TEST(OpenAiChunkTest, ReadsRealCompletionsExactlyAsTheDom) {
  for (const std::string& text : kRealCompletions) {
    OpenAiChunkFields scanned;
    ASSERT_TRUE(ScanOpenAiCompletion(text, &scanned)) << text;
    ExpectSame(text, scanned, kCompletion);
  }
  OpenAiChunkFields f;
  ASSERT_TRUE(ScanOpenAiCompletion(kRealCompletions[0], &f));
  EXPECT_TRUE(f.has_message);
  EXPECT_EQ(f.content, "Hello there.");
  EXPECT_TRUE(f.finish_reason);
  EXPECT_FALSE(f.finish_is_length);
  EXPECT_EQ(f.prompt_tokens, 19);
  EXPECT_EQ(f.completion_tokens, 3);
  ASSERT_TRUE(ScanOpenAiCompletion(kRealCompletions[1], &f));
  EXPECT_EQ(f.content, "cut sh");
  EXPECT_TRUE(f.finish_is_length);
  // A chunk's delta is not a body's message, and the other way round.
  ASSERT_TRUE(ScanOpenAiCompletion(kRealCompletions[5], &f));
  EXPECT_FALSE(f.has_message);
  EXPECT_FALSE(f.content.has_value());
  ASSERT_TRUE(ScanOpenAiChunk(kRealCompletions[0], &f));
  EXPECT_FALSE(f.has_message);
  EXPECT_FALSE(f.content.has_value());
}

TEST(OpenAiChunkTest, ReadsRealChunksExactlyAsTheDom) {
  for (const std::string& text : kRealChunks) {
    OpenAiChunkFields scanned;
    ASSERT_TRUE(ScanOpenAiChunk(text, &scanned)) << text;
    ExpectSame(text, scanned);
  }
  OpenAiChunkFields f;
  ASSERT_TRUE(ScanOpenAiChunk(kRealChunks[5], &f));
  EXPECT_EQ(*f.content, "caf\xc3\xa9 \xf0\x9f\x98\x80 \"q\" \\ / \n\t");
  ASSERT_TRUE(ScanOpenAiChunk(kRealChunks[4], &f));
  EXPECT_EQ(f.prompt_tokens, 19);
  EXPECT_EQ(f.completion_tokens, 10);
  ASSERT_TRUE(ScanOpenAiChunk(kRealChunks.back(), &f));
  EXPECT_TRUE(f.finish_is_content_filter);
  EXPECT_FALSE(f.finish_is_length);
}

TEST(OpenAiChunkTest, DeclinesWhatItDoesNotVouchFor) {
  const std::vector<std::string> declined = {
      "",
      "[]",
      "\"text\"",
      R"({"choices":[{"delta":{"content":"x"}}]} trailing)",
      R"({"choices":[{"delta":{"content":"x"}}])",
      R"({"choices":[{"delta":{"content":"bad \x escape"}}]})",
      R"({"choices":[{"delta":{"content":"\ud800 lone high"}}]})",
      R"({"choices":[{"delta":{"content":"\udc00 lone low"}}]})",
      "{\"choices\":[{\"delta\":{\"content\":\"\xc0\xaf overlong\"}}]}",
      "{\"choices\":[{\"delta\":{\"content\":\"\xed\xa0\x80 surrogate\"}}]}",
      "{\"choices\":[{\"delta\":{\"content\":\"raw\nnewline\"}}]}",
      R"({"usage":{"prompt_tokens":1234567890123456789}})",
      R"({"choices":[{"delta":{"content":"a","content":"b"}}]})",
      R"({"choi\u0063es":[{"delta":{"content":"escaped key"}}]})",
      R"({"a":01})",
      R"({"a":1.})",
      R"({"a":tru})",
      R"({"a":1,})",
      std::string(100, '[') + std::string(100, ']'),
      "{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}",
  };
  for (const std::string& text : declined) {
    OpenAiChunkFields f;
    EXPECT_FALSE(ScanOpenAiChunk(text, &f)) << text;
  }
}

// Random damage to real chunks and bodies (MutateJson): whatever the scanner accepts, the DOM
// reads the same way.
void ExpectAgreementOnMutations(const std::vector<std::string>& originals, const Kind& kind) {
  std::mt19937 random(7);
  const std::string alphabet = "{}[]\":,\\/ utfnlre0123456789.-+Eu\xc3\xa9\xf0\x9f\xff\x01";
  int accepted = 0;
  for (int round = 0; round < 100000; ++round) {
    const std::string text =
        test_support::MutateJson(originals[random() % originals.size()], alphabet, random);
    OpenAiChunkFields scanned;
    if (!kind.scan(text, &scanned)) continue;
    ++accepted;
    ExpectSame(text, scanned, kind);
    if (::testing::Test::HasFailure()) return;
  }
  // The mutations leave plenty of valid JSON, so the comparison above really ran.
  EXPECT_GT(accepted, 3000);
}

TEST(OpenAiChunkTest, AgreesWithTheDomOnRandomMutations) {
  ExpectAgreementOnMutations(kRealChunks, kChunk);
}

TEST(OpenAiChunkTest, CompletionAgreesWithTheDomOnRandomMutations) {
  ExpectAgreementOnMutations(kRealCompletions, kCompletion);
}

}  // namespace
}  // namespace switchyard::backends
