// The Anthropic dialect's per-token stream event is built without a DOM; it must stay byte for
// byte what the DOM dumps, escapes and multi-byte characters included, and invalid UTF-8 must
// still be replaced.
#include "gateway/anthropic_codec.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace switchyard::gateway {
namespace {

using ordered = nlohmann::ordered_json;

std::string Reference(const std::string& text) {
  const ordered data = {{"type", "content_block_delta"},
                        {"index", 0},
                        {"delta", {{"type", "text_delta"}, {"text", text}}}};
  return "event: content_block_delta\ndata: " +
         data.dump(-1, ' ', false, ordered::error_handler_t::replace) + "\n\n";
}

TEST(AnthropicCodecTest, TokenEventsMatchTheDomByteForByte) {
  const std::vector<std::string> texts = {
      "", "Hello", " world", "quote \" backslash \\ slash /", "\b\f\n\r\t",
      std::string("\0\x01\x1f\x7f", 4), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
      "\xed\x9f\xbf \xef\xbf\xbf \xf4\x8f\xbf\xbf", "bad \xff byte", "cut \xe2\x82",
      "overlong \xc0\xaf", "surrogate \xed\xa0\x80", "\xf4\x90\x80\x80",
      std::string(300, 'a') + "\"" + std::string(17, 'b')};
  for (const std::string& text : texts) {
    EXPECT_EQ(MessageDeltaEvent(text), Reference(text))
        << nlohmann::json(text).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
  }
}

}  // namespace
}  // namespace switchyard::gateway
