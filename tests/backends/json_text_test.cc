#include "backends/json_text.h"

#include <string>

#include "gtest/gtest.h"

namespace switchyard::backends {
namespace {

size_t ReferenceEnd(std::string_view text, size_t from) {
  for (size_t i = from; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') return i;
  }
  return text.size();
}

// Every byte value at every position of texts longer than two 16-byte blocks, from every start:
// the block step and the byte-at-a-time tail must agree with the plain definition.
TEST(PlainJsonTextEndTest, MatchesTheByteAtATimeDefinitionEverywhere) {
  for (int byte = 0; byte < 256; ++byte) {
    for (size_t at = 0; at < 40; ++at) {
      std::string text(40, 'a');
      text[at] = static_cast<char>(byte);
      for (size_t from = 0; from <= text.size(); ++from) {
        ASSERT_EQ(PlainJsonTextEnd(text, from), ReferenceEnd(text, from))
            << "byte " << byte << " at " << at << " from " << from;
      }
    }
  }
}

TEST(PlainJsonTextEndTest, EmptyAndAllPlainTextEndAtTheirSize) {
  EXPECT_EQ(PlainJsonTextEnd("", 0), 0u);
  const std::string plain(1000, 'x');
  EXPECT_EQ(PlainJsonTextEnd(plain, 0), 1000u);
  EXPECT_EQ(PlainJsonTextEnd(plain, 999), 1000u);
}

TEST(AppendJsonStringTest, EscapesAcrossBlockBoundaries) {
  std::string text(33, 'a');
  text[15] = '"';
  text[16] = '\\';
  text[31] = '\n';
  text[32] = '\x01';
  std::string out;
  ASSERT_TRUE(AppendJsonString(text, out));
  EXPECT_EQ(out, "\"" + std::string(15, 'a') + "\\\"\\\\" + std::string(14, 'a') + "\\n\\u0001\"");
  out.clear();
  EXPECT_FALSE(AppendJsonString(std::string(20, 'a') + "\xff", out));
  out.clear();
  ASSERT_TRUE(AppendJsonString(std::string(20, 'a') + "caf\xc3\xa9", out));
  EXPECT_EQ(out, "\"" + std::string(20, 'a') + "caf\xc3\xa9\"");
}

}  // namespace
}  // namespace switchyard::backends
