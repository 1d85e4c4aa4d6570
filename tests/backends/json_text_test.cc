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

TEST(Utf8SequenceLengthTest, AcceptsRfc3629RangesOnly) {
  EXPECT_EQ(Utf8SequenceLength("\xC3\xA9", 0), 2u);              // U+00E9
  EXPECT_EQ(Utf8SequenceLength("a\xE2\x82\xAC", 1), 3u);         // U+20AC after an ASCII byte
  EXPECT_EQ(Utf8SequenceLength("\xF0\x9F\x98\x80", 0), 4u);      // U+1F600
  EXPECT_EQ(Utf8SequenceLength("\xF4\x8F\xBF\xBF", 0), 4u);      // U+10FFFF, the last
  EXPECT_EQ(Utf8SequenceLength("\xC0\xAF", 0), 0u);              // overlong '/'
  EXPECT_EQ(Utf8SequenceLength("\xE0\x80\xAF", 0), 0u);          // overlong, three bytes
  EXPECT_EQ(Utf8SequenceLength("\xED\xA0\x80", 0), 0u);          // a surrogate, U+D800
  EXPECT_EQ(Utf8SequenceLength("\xF4\x90\x80\x80", 0), 0u);      // past U+10FFFF
  EXPECT_EQ(Utf8SequenceLength("\xF5\x80\x80\x80", 0), 0u);      // no such lead byte
  EXPECT_EQ(Utf8SequenceLength("\x80", 0), 0u);                  // a continuation alone
  EXPECT_EQ(Utf8SequenceLength("\xE2\x82", 0), 0u);              // cut short by the end
  EXPECT_EQ(Utf8SequenceLength("\xE2\x82" "a", 0), 0u);          // cut short by ASCII
}

}  // namespace
}  // namespace switchyard::backends
