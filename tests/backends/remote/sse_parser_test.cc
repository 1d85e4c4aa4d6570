#include "backends/remote/sse_parser.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace switchyard::backends {
namespace {

using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::IsEmpty;

// Feeds `bytes`, appending a copy of each event to `events`.
absl::Status FeedInto(SseParser& parser, std::string_view bytes, std::vector<SseEvent>* events) {
  return parser.Feed(bytes, [events](const SseEvent& event) {
    events->push_back(event);
    return true;
  });
}

std::vector<SseEvent> ParseAll(std::string_view stream) {
  SseParser parser;
  std::vector<SseEvent> events;
  EXPECT_TRUE(FeedInto(parser, stream, &events).ok());
  return events;
}

std::vector<std::string> Data(const std::vector<SseEvent>& events) {
  std::vector<std::string> out;
  for (const SseEvent& event : events) out.push_back(event.data);
  return out;
}

TEST(SseParserTest, ParsesDataEvents) {
  EXPECT_THAT(Data(ParseAll("data: {\"a\":1}\n\ndata: [DONE]\n\n")),
              ElementsAre("{\"a\":1}", "[DONE]"));
}

TEST(SseParserTest, AcceptsCrLfCrAndLfLineEnds) {
  EXPECT_THAT(Data(ParseAll("data: a\r\n\r\ndata: b\r\rdata: c\n\n")),
              ElementsAre("a", "b", "c"));
}

TEST(SseParserTest, JoinsMultiLineDataWithNewlines) {
  EXPECT_THAT(Data(ParseAll("data: line1\ndata: line2\ndata:\n\n")),
              ElementsAre("line1\nline2\n"));
}

TEST(SseParserTest, SkipsCommentsAndEventsWithoutData) {
  EXPECT_THAT(Data(ParseAll(": keep-alive\n\n: ping\ndata: x\n\nevent: empty\n\n")),
              ElementsAre("x"));
}

TEST(SseParserTest, ReadsEventAndIdFieldsAndIgnoresUnknownOnes) {
  std::vector<SseEvent> events =
      ParseAll("event: message_start\nid: 7\nretry: 100\nfoo: bar\ndata: {}\n\ndata: y\n\n");
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].event, "message_start");
  EXPECT_EQ(events[0].id, "7");
  EXPECT_EQ(events[0].data, "{}");
  EXPECT_EQ(events[1].event, "");  // the event type does not carry over
}

TEST(SseParserTest, DropsOnlyOneSpaceAfterTheColon) {
  EXPECT_THAT(Data(ParseAll("data:no-space\n\ndata:  two\n\ndata\n\n")),
              ElementsAre("no-space", " two", ""));
}

TEST(SseParserTest, SameEventsWhateverTheChunkBoundary) {
  const std::string stream =
      ": comment\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"h\xc3\xa9\"}}]}\r\n\r\n"
      "event: x\rdata: one\rdata: two\r\rdata: [DONE]\n\n";
  const std::vector<SseEvent> whole = ParseAll(stream);
  ASSERT_EQ(whole.size(), 3u);
  for (size_t split = 0; split <= stream.size(); ++split) {
    for (size_t split2 = split; split2 <= stream.size(); split2 += 7) {
      SseParser parser;
      std::vector<SseEvent> events;
      ASSERT_TRUE(FeedInto(parser, std::string_view(stream).substr(0, split), &events).ok());
      const std::string_view view(stream);
      ASSERT_TRUE(FeedInto(parser, view.substr(split, split2 - split), &events).ok());
      ASSERT_TRUE(FeedInto(parser, std::string_view(stream).substr(split2), &events).ok());
      ASSERT_EQ(Data(events), Data(whole)) << "split at " << split << " and " << split2;
      EXPECT_EQ(events[1].event, "x");
      EXPECT_FALSE(parser.HasPartialEvent());
    }
  }
}

TEST(SseParserTest, ByteAtATime) {
  const std::string stream = "data: a\r\n\r\ndata: b\r\rdata: c\n\n";
  SseParser parser;
  std::vector<SseEvent> events;
  for (char c : stream) ASSERT_TRUE(FeedInto(parser, std::string_view(&c, 1), &events).ok());
  EXPECT_THAT(Data(events), ElementsAre("a", "b", "c"));
}

TEST(SseParserTest, ReportsAnUnfinishedEvent) {
  SseParser parser;
  std::vector<SseEvent> events;
  ASSERT_TRUE(FeedInto(parser, "data: complete\n\ndata: cut", &events).ok());
  EXPECT_THAT(Data(events), ElementsAre("complete"));
  EXPECT_TRUE(parser.HasPartialEvent());
  ASSERT_TRUE(FeedInto(parser, " off\n", &events).ok());
  EXPECT_TRUE(parser.HasPartialEvent());  // a data line without its blank line
  ASSERT_TRUE(FeedInto(parser, "\n", &events).ok());
  EXPECT_FALSE(parser.HasPartialEvent());
  EXPECT_THAT(Data(events), ElementsAre("complete", "cut off"));
}

TEST(SseParserTest, FailsOnAnOverlongLine) {
  SseParser parser(/*max_line_bytes=*/16);
  std::vector<SseEvent> events;
  EXPECT_TRUE(FeedInto(parser, "data: short\n\n", &events).ok());
  EXPECT_FALSE(FeedInto(parser, "data: this line never ends and keeps", &events).ok());
  EXPECT_FALSE(FeedInto(parser, "\n\n", &events).ok());  // stays failed
  EXPECT_THAT(events, ElementsAre(Field(&SseEvent::data, "short")));
}

TEST(SseParserTest, CallbackSeesEachEventInOrderAndCanStop) {
  SseParser parser;
  std::vector<std::string> seen;
  auto until_stop = [&seen](const SseEvent& event) {
    seen.push_back(event.event + "=" + event.data);
    return event.data != "stop";
  };
  ASSERT_TRUE(parser.Feed("event: a\ndata: 1\n\ndata: stop\n\ndata: never\n\n", until_stop).ok());
  EXPECT_THAT(seen, ElementsAre("a=1", "=stop"));  // the event name does not leak into the next
}

TEST(SseParserTest, ReportsEventsBeforeAnOverlongLineThenFails) {
  SseParser parser(/*max_line_bytes=*/16);
  std::vector<SseEvent> events;
  EXPECT_FALSE(FeedInto(parser, "data: ok\n\ndata: this line never ends and keeps", &events).ok());
  EXPECT_THAT(events, ElementsAre(Field(&SseEvent::data, "ok")));
}

TEST(SseParserTest, EmptyInputYieldsNothing) {
  EXPECT_THAT(ParseAll(""), IsEmpty());
  EXPECT_THAT(ParseAll("\n\n\r\n"), IsEmpty());
}

}  // namespace
}  // namespace switchyard::backends
