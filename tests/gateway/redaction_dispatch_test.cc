// Dispatch of a redacting decision over fake backends: remote attempts get placeholders and their
// answers restored, a fallback to the local target gets the original text, and the send-time
// clearance check uses the level each target receives.
#include <memory>
#include <string>

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
  rules:
    - { name: mail, when: { findings: [email] }, route: [cloud, local], redact: true }
)EOF";

constexpr char kMessage[] = "write to bob@initech.com today";

using ::switchyard::testing::RecordingSink;

class RedactionDispatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<Config> config = ParseConfig(kConfig, "redaction.yaml", "");
    ASSERT_TRUE(config.ok()) << config.status();
    auto factory = [this](const TargetConfig& target,
                          const Config&) -> absl::StatusOr<std::shared_ptr<backends::Backend>> {
      return std::shared_ptr<backends::Backend>(target.name == "cloud" ? cloud_ : local_);
    };
    absl::StatusOr<std::unique_ptr<Gateway>> gateway = Gateway::Create(*std::move(config), factory);
    ASSERT_TRUE(gateway.ok()) << gateway.status();
    gateway_ = *std::move(gateway);
    request_.chat.messages = {{"user", kMessage}};
    ASSERT_TRUE(gateway_->Route(request_, routed_).ok());
    ASSERT_TRUE(routed_.decision.redact);
  }

  std::shared_ptr<RecordingSink> Run(const Routed& routed) {
    auto sink = std::make_shared<RecordingSink>();
    auto call = gateway_->Dispatch(routed, request_, sink);
    EXPECT_TRUE(sink->done_.WaitForNotificationWithTimeout(absl::Seconds(10)));
    return sink;
  }

  std::shared_ptr<testing::FakeBackend> local_ = std::make_shared<testing::FakeBackend>();
  std::shared_ptr<testing::FakeBackend> cloud_ = std::make_shared<testing::FakeBackend>();
  std::unique_ptr<Gateway> gateway_;
  InboundRequest request_;
  Routed routed_;
};

TEST_F(RedactionDispatchTest, RemoteGetsPlaceholdersAndTheAnswerIsRestored) {
  cloud_->set_script(testing::Script({"Sent to <", "EMAIL_", "1>", "."}));
  std::shared_ptr<RecordingSink> sink = Run(routed_);
  EXPECT_TRUE(sink->status_.ok()) << sink->status_;
  EXPECT_EQ(sink->text_, "Sent to bob@initech.com.");
  ASSERT_EQ(cloud_->requests().size(), 1u);
  EXPECT_EQ(cloud_->requests()[0].messages[0].content, "write to <EMAIL_1> today");
  EXPECT_EQ(local_->started(), 0);
}

TEST_F(RedactionDispatchTest, FallbackToLocalSendsTheOriginal) {
  // The remote fails after a delta that is only the start of a placeholder: nothing reached the
  // client, so the run may still fall back.
  cloud_->set_script(testing::Script({"<EMA"}, std::chrono::milliseconds(0),
                                     absl::UnavailableError("upstream down")));
  local_->set_script(testing::Script({"local ", "answer"}));
  std::shared_ptr<RecordingSink> sink = Run(routed_);
  EXPECT_TRUE(sink->status_.ok()) << sink->status_;
  EXPECT_EQ(sink->text_, "local answer");
  ASSERT_EQ(cloud_->requests().size(), 1u);
  EXPECT_EQ(cloud_->requests()[0].messages[0].content, "write to <EMAIL_1> today");
  ASSERT_EQ(local_->requests().size(), 1u);
  EXPECT_EQ(local_->requests()[0].messages[0].content, kMessage);
}

TEST_F(RedactionDispatchTest, SendTimeCheckUsesTheLevelEachTargetReceives) {
  // Without redaction the cloud may not have this internal request: the dispatcher refuses.
  Routed forged = routed_;
  forged.decision.redact = false;
  std::shared_ptr<RecordingSink> refused = Run(forged);
  EXPECT_EQ(refused->status_.code(), absl::StatusCode::kPermissionDenied);
  // Nor with a level after redaction above its clearance.
  forged = routed_;
  forged.decision.redacted_level_rank = 1;
  refused = Run(forged);
  EXPECT_EQ(refused->status_.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(cloud_->started(), 0);
}

}  // namespace
}  // namespace switchyard::gateway
