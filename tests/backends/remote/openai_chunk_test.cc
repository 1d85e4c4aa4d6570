// ScanOpenAiChunk against the DOM it replaces: whenever the scanner answers, its fields must be
// exactly what nlohmann::json gives, for hand-picked chunks and for many random mutations of
// them; and it must answer for the chunks real providers send, or the fast path is never taken.
#include "backends/remote/openai_chunk.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace switchyard::backends {
namespace {

using Json = nlohmann::json;

// What OpenAiReader reads from the DOM; nullopt when the text is not a JSON object.
std::optional<OpenAiChunkFields> FromDom(const std::string& text) {
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
    if (choice.contains("delta") && choice["delta"].is_object()) {
      const Json& delta = choice["delta"];
      if (delta.contains("content") && delta["content"].is_string()) {
        f.content = delta["content"].get<std::string>();
      }
    }
    if (choice.contains("finish_reason") && !choice["finish_reason"].is_null()) {
      f.finish_reason = true;
      f.finish_is_length = choice["finish_reason"].is_string() &&
                           choice["finish_reason"].get<std::string>() == "length";
    }
  }
  return f;
}

void ExpectSame(const std::string& text, const OpenAiChunkFields& scanned) {
  std::optional<OpenAiChunkFields> dom = FromDom(text);
  ASSERT_TRUE(dom.has_value()) << "scanner accepted what the DOM refuses: " << text;
  EXPECT_EQ(scanned.has_error, dom->has_error) << text;
  EXPECT_EQ(scanned.prompt_tokens, dom->prompt_tokens) << text;
  EXPECT_EQ(scanned.completion_tokens, dom->completion_tokens) << text;
  EXPECT_EQ(scanned.content, dom->content) << text;
  EXPECT_EQ(scanned.finish_reason, dom->finish_reason) << text;
  EXPECT_EQ(scanned.finish_is_length, dom->finish_is_length) << text;
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
};

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

// Random byte flips, insertions, deletions and truncations of real chunks: whatever the scanner
// accepts, the DOM reads the same way.
TEST(OpenAiChunkTest, AgreesWithTheDomOnRandomMutations) {
  std::mt19937 random(7);
  const std::string alphabet = "{}[]\":,\\/ utfnlre0123456789.-+Eu\xc3\xa9\xf0\x9f\xff\x01";
  int accepted = 0;
  for (int round = 0; round < 100000; ++round) {
    std::string text = kRealChunks[random() % kRealChunks.size()];
    const int edits = 1 + static_cast<int>(random() % 3);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      const size_t at = random() % text.size();
      switch (random() % 4) {
        case 0: text[at] = alphabet[random() % alphabet.size()]; break;
        case 1: text.insert(at, 1, alphabet[random() % alphabet.size()]); break;
        case 2: text.erase(at, 1); break;
        case 3: text.resize(at); break;
      }
    }
    OpenAiChunkFields scanned;
    if (!ScanOpenAiChunk(text, &scanned)) continue;
    ++accepted;
    ExpectSame(text, scanned);
    if (::testing::Test::HasFailure()) return;
  }
  // The mutations leave plenty of valid JSON, so the comparison above really ran.
  EXPECT_GT(accepted, 3000);
}

}  // namespace
}  // namespace switchyard::backends
