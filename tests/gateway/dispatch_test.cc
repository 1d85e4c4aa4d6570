// The dispatcher's own sovereignty check: whatever a decision says, a request is never sent to a
// target that may not receive its sensitivity level.
#include <memory>

#include "absl/synchronization/notification.h"
#include "gateway/config.h"
#include "gateway/gateway.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/fake_backend.h"
#include "tests/support/recording_sink.h"

namespace switchyard::gateway {
namespace {

constexpr char kConfig[] = R"EOF(
targets:
  - { name: local, kind: local, model: m.gguf }
  - { name: cloud, kind: openai_compatible, base_url: "http://127.0.0.1:9/v1", model: x }
policy:
  default: local
  clearance: { cloud: public }
)EOF";

using ::switchyard::testing::RecordingSink;

class DispatchTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(kConfig, "hello"); }

  // Builds the gateway over the two fake backends and sets the request's one message.
  void Start(const char* yaml, const char* message) {
    absl::StatusOr<Config> config = ParseConfig(yaml, "dispatch.yaml", "");
    ASSERT_TRUE(config.ok()) << config.status();
    auto factory = [this](const TargetConfig& target,
                          const Config&) -> absl::StatusOr<std::shared_ptr<backends::Backend>> {
      return std::shared_ptr<backends::Backend>(target.name == "cloud" ? cloud_ : local_);
    };
    absl::StatusOr<std::unique_ptr<Gateway>> gateway = Gateway::Create(*std::move(config), factory);
    ASSERT_TRUE(gateway.ok()) << gateway.status();
    gateway_ = *std::move(gateway);
    request_.chat.messages = {{"user", message}};
  }

  std::shared_ptr<testing::FakeBackend> local_ = std::make_shared<testing::FakeBackend>();
  std::shared_ptr<testing::FakeBackend> cloud_ = std::make_shared<testing::FakeBackend>();
  std::unique_ptr<Gateway> gateway_;
  InboundRequest request_;
};

TEST_F(DispatchTest, RoutedRequestRuns) {
  Routed routed;
  ASSERT_TRUE(gateway_->Route(request_, routed).ok());
  auto sink = std::make_shared<RecordingSink>();
  auto call = gateway_->Dispatch(routed, request_, sink);
  ASSERT_TRUE(sink->done_.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(sink->status_.ok());
  EXPECT_EQ(sink->text_, "Hello, world");
  EXPECT_EQ(local_->started(), 1);
}

TEST_F(DispatchTest, ForgedDecisionAboveClearanceIsRefusedAtSendTime) {
  Routed routed;
  ASSERT_TRUE(gateway_->Route(request_, routed).ok());
  // A decision that claims the remote target for a confidential request (as a classifier bug
  // or a stale decision would): the dispatcher refuses on its own.
  routed.decision.target = "cloud";
  routed.decision.locality = policies::Locality::kRemote;
  routed.decision.level = "confidential";
  routed.decision.level_rank = 2;
  auto sink = std::make_shared<RecordingSink>();
  auto call = gateway_->Dispatch(routed, request_, sink);
  ASSERT_TRUE(sink->done_.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(sink->status_.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(cloud_->started(), 0);

  // The same with the level the target is cleared for goes through.
  routed.decision.level = "public";
  routed.decision.level_rank = 0;
  auto ok_sink = std::make_shared<RecordingSink>();
  auto ok_call = gateway_->Dispatch(routed, request_, ok_sink);
  ASSERT_TRUE(ok_sink->done_.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(ok_sink->status_.ok());
  EXPECT_EQ(cloud_->started(), 1);
}

TEST_F(DispatchTest, DecisionNamingAnUnknownTargetIsRefused) {
  Routed routed;
  ASSERT_TRUE(gateway_->Route(request_, routed).ok());
  routed.decision.target = "elsewhere";
  auto sink = std::make_shared<RecordingSink>();
  auto call = gateway_->Dispatch(routed, request_, sink);
  ASSERT_TRUE(sink->done_.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(sink->status_.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(local_->started() + cloud_->started(), 0);
}

constexpr char kFallbackConfig[] = R"EOF(
targets:
  - { name: local, kind: local, model: m.gguf }
  - { name: cloud, kind: openai_compatible, base_url: "http://127.0.0.1:9/v1", model: x }
policy:
  default: local
  rules:
    - { name: frontier-first, when: { keywords: [frontier] }, route: [cloud, local] }
)EOF";

class FallbackTest : public DispatchTest {
 protected:
  void SetUp() override { Start(kFallbackConfig, "ask the frontier model"); }

  absl::Status Run(std::string* text) {
    Routed routed;
    absl::Status status = gateway_->Route(request_, routed);
    if (!status.ok()) return status;
    EXPECT_EQ(routed.decision.target, "cloud");
    auto sink = std::make_shared<RecordingSink>();
    auto call = gateway_->Dispatch(routed, request_, sink);
    EXPECT_TRUE(sink->done_.WaitForNotificationWithTimeout(absl::Seconds(10)));
    *text = sink->text_;
    return sink->status_;
  }
};

TEST_F(FallbackTest, FailureBeforeTheFirstTokenMovesToTheNextTarget) {
  cloud_->set_script(testing::Script({}, {}, absl::UnavailableError("upstream returned 503")));
  std::string text;
  EXPECT_TRUE(Run(&text).ok());
  EXPECT_EQ(text, "Hello, world");
  EXPECT_EQ(cloud_->started(), 1);
  EXPECT_EQ(local_->started(), 1);
  EXPECT_THAT(gateway_->metrics().Render(),
              ::testing::HasSubstr("switchyard_fallbacks_total{from=\"cloud\",to=\"local\"} 1"));
}

TEST_F(FallbackTest, FailureAfterTheFirstTokenIsFinal) {
  cloud_->set_script(testing::Script({"partial"}, {}, absl::UnavailableError("reset midway")));
  std::string text;
  absl::Status status = Run(&text);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(text, "partial");
  EXPECT_EQ(local_->started(), 0);
}

TEST_F(FallbackTest, InvalidRequestsAreNotRetriedElsewhere) {
  cloud_->set_script(testing::Script({}, {}, absl::InvalidArgumentError("prompt too long")));
  std::string text;
  EXPECT_EQ(Run(&text).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(local_->started(), 0);
}

TEST_F(FallbackTest, LastTargetsErrorIsReportedWhenAllFail) {
  cloud_->set_script(testing::Script({}, {}, absl::UnavailableError("cloud down")));
  local_->set_script(testing::Script({}, {}, absl::ResourceExhaustedError("queue full")));
  std::string text;
  absl::Status status = Run(&text);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(cloud_->started() + local_->started(), 2);
}

}  // namespace
}  // namespace switchyard::gateway
