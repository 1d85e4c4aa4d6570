// SinkGuard: the Call contract for a sink (nothing after Done or Cancel), burst hints included.
#include "backends/sink_guard.h"

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace switchyard::backends {
namespace {

using ::testing::ElementsAre;

// Writes every call down as one word.
class LogSink : public ChatSink {
 public:
  void OnDelta(std::string_view text) override { log.push_back("delta:" + std::string(text)); }
  void OnDone(const absl::Status& status, const Completion&) override {
    log.push_back(status.ok() ? "done" : "failed");
  }
  void BeginBurst() override { log.push_back("begin"); }
  void EndBurst() override { log.push_back("end"); }

  std::vector<std::string> log;
};

TEST(SinkGuardTest, ForwardsBurstsAroundTheirDeltas) {
  auto sink = std::make_shared<LogSink>();
  SinkGuard guard(sink);
  guard.BeginBurst();
  EXPECT_TRUE(guard.Delta("a"));
  EXPECT_TRUE(guard.Delta("b"));
  guard.EndBurst();
  EXPECT_TRUE(guard.Delta("c"));
  guard.Done(absl::OkStatus(), Completion());
  EXPECT_THAT(sink->log, ElementsAre("begin", "delta:a", "delta:b", "end", "delta:c", "done"));
}

TEST(SinkGuardTest, NothingReachesTheSinkAfterDone) {
  auto sink = std::make_shared<LogSink>();
  SinkGuard guard(sink);
  guard.BeginBurst();
  EXPECT_TRUE(guard.Delta("a"));
  guard.Done(absl::OkStatus(), Completion());  // a burst may end with Done
  guard.EndBurst();
  EXPECT_FALSE(guard.Delta("b"));
  guard.BeginBurst();
  guard.Done(absl::InternalError("again"), Completion());
  EXPECT_THAT(sink->log, ElementsAre("begin", "delta:a", "done"));
  EXPECT_TRUE(guard.finished());
}

TEST(SinkGuardTest, NothingReachesTheSinkAfterCancel) {
  auto sink = std::make_shared<LogSink>();
  SinkGuard guard(sink);
  guard.BeginBurst();
  guard.Cancel();
  guard.EndBurst();
  EXPECT_FALSE(guard.Delta("a"));
  guard.Done(absl::OkStatus(), Completion());
  EXPECT_THAT(sink->log, ElementsAre("begin"));
}

// A sink may cancel its own request from inside a burst hint, as from a delta.
TEST(SinkGuardTest, ASinkMayCancelFromInsideABurstHint) {
  struct CancellingSink : LogSink {
    SinkGuard* guard = nullptr;
    void BeginBurst() override {
      LogSink::BeginBurst();
      guard->Cancel();
    }
  };
  auto sink = std::make_shared<CancellingSink>();
  SinkGuard guard(sink);
  sink->guard = &guard;
  guard.BeginBurst();
  EXPECT_FALSE(guard.Delta("a"));
  EXPECT_THAT(sink->log, ElementsAre("begin"));
}

}  // namespace
}  // namespace switchyard::backends
