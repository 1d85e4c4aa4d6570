#include "backends/local/text_stream.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace switchyard::backends {
namespace {

constexpr char kFffd[] = "\xEF\xBF\xBD";

TEST(Utf8CompletePrefixLengthTest, Table) {
  struct Case {
    std::string bytes;
    size_t want;
  };
  const std::vector<Case> cases = {
      {"", 0},
      {"abc", 3},
      {"a\xD0", 1},                  // lead of a 2-byte sequence (Cyrillic)
      {"a\xD0\xBF", 3},              // complete "п"
      {"\xE0\xB8", 0},               // 2 of 3 bytes of a Thai letter
      {"\xE0\xB8\x81", 3},           // complete
      {"x\xF0\x9F\x98", 1},          // 3 of 4 bytes of an emoji
      {"\xF0\x9F\x98\x80", 4},       // complete emoji
      {"a\x80", 2},                  // stray continuation: invalid, nothing to wait for
      {"a\xFF", 2},                  // never valid
      {"a\xE0\x80", 3},              // E0 80 can never complete (overlong)
      {"a\xC0", 2},                  // overlong lead
  };
  for (const Case& c : cases) {
    EXPECT_EQ(Utf8CompletePrefixLength(c.bytes), c.want) << testing::PrintToString(c.bytes);
  }
}

TEST(SanitizeUtf8Test, ReplacesInvalidSequences) {
  EXPECT_EQ(SanitizeUtf8("plain"), "plain");
  EXPECT_EQ(SanitizeUtf8("\xD0\xBF\xD0\xBE"), "\xD0\xBF\xD0\xBE");
  EXPECT_EQ(SanitizeUtf8("a\x80z"), std::string("a") + kFffd + "z");
  EXPECT_EQ(SanitizeUtf8("a\xE0\xB8"), std::string("a") + kFffd);  // truncated: one U+FFFD
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"), std::string(kFffd) + kFffd + kFffd);  // surrogate
  EXPECT_EQ(SanitizeUtf8("\xF4\x90\x80\x80"), std::string(kFffd) + kFffd + kFffd + kFffd);
}

TEST(Utf8HoldbackTest, JoinsCharactersSplitAcrossPieces) {
  Utf8Holdback holdback;
  // "по" split byte by byte, then a Thai letter split 1 + 2, then an emoji 3 + 1.
  EXPECT_EQ(holdback.Push("\xD0"), "");
  EXPECT_EQ(holdback.Push("\xBF\xD0"), "\xD0\xBF");
  EXPECT_EQ(holdback.Push("\xBE"), "\xD0\xBE");
  EXPECT_EQ(holdback.Push("x\xE0"), "x");
  EXPECT_EQ(holdback.Push("\xB8\x81y"), "\xE0\xB8\x81y");
  EXPECT_EQ(holdback.Push("\xF0\x9F\x98"), "");
  EXPECT_EQ(holdback.Push("\x80"), "\xF0\x9F\x98\x80");
  EXPECT_EQ(holdback.Flush(), "");
}

TEST(Utf8HoldbackTest, InvalidBytesBecomeReplacementAndTruncatedTailIsFlushed) {
  Utf8Holdback holdback;
  EXPECT_EQ(holdback.Push("a\x80"), std::string("a") + kFffd);
  EXPECT_EQ(holdback.Push("\xD0"), "");
  // The expected continuation never comes: the lead is replaced, the new text kept.
  EXPECT_EQ(holdback.Push("b"), std::string(kFffd) + "b");
  EXPECT_EQ(holdback.Push("\xE0\xB8"), "");
  EXPECT_EQ(holdback.Flush(), kFffd);
}

std::string Feed(StopMatcher& matcher, const std::vector<std::string>& pieces, bool* stopped) {
  std::string out;
  *stopped = false;
  for (const std::string& piece : pieces) {
    StopMatcher::Result r = matcher.Push(piece);
    out += r.text;
    if (r.stopped) {
      *stopped = true;
      return out;
    }
  }
  return out + matcher.Flush();
}

TEST(StopMatcherTest, Table) {
  struct Case {
    std::vector<std::string> stops;
    std::vector<std::string> pieces;
    std::string want;
    bool want_stopped;
  };
  const std::vector<Case> cases = {
      {{}, {"a", "b"}, "ab", false},
      {{""}, {"a", "b"}, "ab", false},  // empty stop sequences are ignored
      {{"END"}, {"abc", "END", "more"}, "abc", true},
      {{"END"}, {"ab", "E", "N", "D"}, "ab", true},       // stop split over pieces
      {{"END"}, {"xEN", "Dy"}, "x", true},                  // text after the stop is dropped
      {{"END"}, {"E", "N", "x"}, "ENx", false},             // false start is released
      {{"END"}, {"E", "N"}, "EN", false},                   // released at flush
      {{"\n\n", "The end"}, {"a\n", "The e", "nd"}, "a\n", true},
      {{"ab", "b"}, {"xab"}, "x", true},                    // earliest match wins
      {{"aab"}, {"a", "a", "a", "b"}, "a", true},           // overlapping prefix
      {{"пр"}, {"да п", "ривет"}, "да ", true},             // multi-byte stop
  };
  for (const Case& c : cases) {
    StopMatcher matcher(c.stops);
    bool stopped = false;
    EXPECT_EQ(Feed(matcher, c.pieces, &stopped), c.want) << testing::PrintToString(c.pieces);
    EXPECT_EQ(stopped, c.want_stopped) << testing::PrintToString(c.pieces);
  }
}

TEST(StopMatcherTest, HoldsBackOnlyPossibleStarts) {
  StopMatcher matcher({"STOP"});
  EXPECT_EQ(matcher.Push("hello S").text, "hello ");
  EXPECT_EQ(matcher.Push("T").text, "");
  EXPECT_EQ(matcher.Push("x").text, "STx");
  StopMatcher::Result r = matcher.Push("STOP!");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(matcher.Push("later").text, "");
  EXPECT_EQ(matcher.Flush(), "");
}

}  // namespace
}  // namespace switchyard::backends
