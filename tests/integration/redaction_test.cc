// The `redact` action end to end, on the built `switchyard` binary against mock upstreams that
// record what they receive: a remote target gets typed placeholders instead of the findings and
// never an original value, and the client gets the original values back, in both client
// dialects and over gRPC, streamed (placeholders split across SSE events) or not.
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "switchyard/v1/switchyard.grpc.pb.h"
#include "tests/mocks/mock_upstream.h"
#include "tests/support/http_client.h"
#include "tests/support/subprocess.h"

namespace switchyard::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;

const std::string kBinary = SWITCHYARD_BINARY;
const std::string kModels = SWITCHYARD_SHARED_MODELS;

constexpr char kEmail[] = "bob.jones@acmecorp.com";
constexpr char kCard[] = "4111 1111 1111 1111";
constexpr char kSecret[] = "AKIAQ3EGRTNDVB2YOBXR";
// The prompt every case sends: three findings, one of them twice.
const std::string kPrompt = std::string("Email ") + kEmail + " the card " + kCard +
                            " and the key " + kSecret + "; cc " + kEmail + ".";
// What the mock answers, token by token: placeholders split across events.
const std::vector<std::string> kTokens = {"Done: wrote to <EMA", "IL_1", "> (card <", "CREDIT_CA",
                                          "RD_1>), key <SECRET_AWS_ACCESS_KEY_1>", "."};
const std::string kRestored = std::string("Done: wrote to ") + kEmail + " (card " + kCard +
                              "), key " + kSecret + ".";

class RedactionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("NO_PROXY", "127.0.0.1,localhost", 1);
    setenv("no_proxy", "127.0.0.1,localhost", 1);
    auto upstream = mocks::MockUpstream::Start();
    ASSERT_TRUE(upstream.ok()) << upstream.status();
    upstream_ = *std::move(upstream);
    mocks::Behaviour behaviour;
    behaviour.tokens = kTokens;
    upstream_->SetBehaviour(behaviour);
    const std::string timeouts =
        "timeouts: { connect_seconds: 2, first_byte_seconds: 5, idle_seconds: 5, "
        "total_seconds: 10 }";
    // gpt and claude may only receive public data; the rule redacts every finding for them.
    const std::string yaml = R"(
listeners: { http: 127.0.0.1:0, grpc: 127.0.0.1:0 }
auth: { allow_unauthenticated: true }
targets:
  - { name: gpt, kind: openai_compatible, model: gpt-upstream, base_url: ")" +
                             upstream_->base_url() + R"(", )" + timeouts + R"( }
  - { name: claude, kind: anthropic, model: claude-upstream, base_url: ")" +
                             upstream_->base_url() + R"(", )" + timeouts + R"( }
policy:
  default: gpt
  clearance: { gpt: public, claude: public }
  rules:
    - name: claude-redacted
      when: { keywords: [claude] }
      route: claude
      redact: true
    - name: redact-for-cloud
      when: { findings: [email, credit_card, secret] }
      route: gpt
      redact: true
)";
    config_ = std::filesystem::temp_directory_path() /
              ("switchyard_redaction_test_" + std::to_string(getpid()) + ".yaml");
    std::ofstream(config_) << yaml;
    child_ = std::make_unique<ChildProcess>(std::vector<std::string>{kBinary, "serve", "--config",
                                                                     config_.string()},
                                            std::vector<std::string>{"SWITCHYARD_MODELS=" +
                                                                     kModels});
    std::optional<std::string> line = child_->WaitForLine("listening", 60);
    ASSERT_TRUE(line.has_value()) << child_->err();
    std::smatch match;
    ASSERT_TRUE(std::regex_search(
        *line, match, std::regex("http=127\\.0\\.0\\.1:(\\d+) grpc=127\\.0\\.0\\.1:(\\d+)")))
        << *line;
    http_ = "http://127.0.0.1:" + match[1].str();
    grpc_ = "127.0.0.1:" + match[2].str();
  }

  void TearDown() override {
    if (child_ != nullptr) {
      child_->Signal(SIGTERM);
      child_->Wait(30);
    }
    std::filesystem::remove(config_);
  }

  // The last request the mock received: placeholders in, originals never.
  void ExpectRedactedUpstreamRequest(size_t count) {
    ASSERT_EQ(upstream_->request_count(), count);
    const std::string body = upstream_->requests().back().body;
    EXPECT_THAT(body, HasSubstr("Email <EMAIL_1> the card <CREDIT_CARD_1> and the key "
                                "<SECRET_AWS_ACCESS_KEY_1>; cc <EMAIL_1>."));
    for (const char* value : {kEmail, kCard, kSecret, "4111", "AKIA", "acmecorp"}) {
      EXPECT_THAT(body, Not(HasSubstr(value))) << body;
    }
  }

  static std::string OpenAiBody(bool stream, const std::string& text = kPrompt) {
    return json{{"model", "auto"},
                {"stream", stream},
                {"messages", {{{"role", "user"}, {"content", text}}}}}
        .dump();
  }

  std::unique_ptr<mocks::MockUpstream> upstream_;
  std::filesystem::path config_;
  std::unique_ptr<ChildProcess> child_;
  std::string http_;
  std::string grpc_;
};

TEST_F(RedactionTest, OpenAiDialectNonStreaming) {
  HttpResult result = HttpPost(http_ + "/v1/chat/completions", OpenAiBody(false));
  ASSERT_EQ(result.status, 200) << result.body;
  EXPECT_EQ(result.headers["x-switchyard-target"], "gpt");
  EXPECT_EQ(json::parse(result.body)["choices"][0]["message"]["content"], kRestored);
  ExpectRedactedUpstreamRequest(1);
}

TEST_F(RedactionTest, OpenAiDialectStreaming) {
  HttpResult result = HttpPost(http_ + "/v1/chat/completions", OpenAiBody(true));
  ASSERT_EQ(result.status, 200) << result.body;
  std::string joined;
  for (const std::string& data : SseData(result.body)) {
    if (data == "[DONE]") continue;
    const json chunk = json::parse(data);
    if (chunk["choices"].empty()) continue;
    const json& delta = chunk["choices"][0]["delta"];
    if (!delta.contains("content")) continue;
    const std::string piece = delta["content"];
    // No delta shows a placeholder or a piece of one.
    EXPECT_THAT(piece, Not(HasSubstr("<"))) << piece;
    joined += piece;
  }
  EXPECT_EQ(joined, kRestored);
  ExpectRedactedUpstreamRequest(1);
}

TEST_F(RedactionTest, AnthropicDialectBothWaysToAnAnthropicUpstream) {
  HttpOptions options;
  options.headers = {"Content-Type: application/json", "anthropic-version: 2023-06-01"};
  for (bool stream : {false, true}) {
    const json body = {{"model", "auto"},
                       {"max_tokens", 64},
                       {"stream", stream},
                       {"messages", {{{"role", "user"}, {"content", "claude: " + kPrompt}}}}};
    HttpResult result = HttpPost(http_ + "/v1/messages", body.dump(), options);
    ASSERT_EQ(result.status, 200) << result.body;
    EXPECT_EQ(result.headers["x-switchyard-target"], "claude");
    std::string text;
    if (!stream) {
      text = json::parse(result.body)["content"][0]["text"];
    } else {
      for (const std::string& data : SseData(result.body)) {
        const json event = json::parse(data);
        if (event["type"] == "content_block_delta") {
          const std::string piece = event["delta"]["text"];
          EXPECT_THAT(piece, Not(HasSubstr("<"))) << piece;
          text += piece;
        }
      }
    }
    EXPECT_EQ(text, kRestored);
    ASSERT_EQ(upstream_->request_count(), stream ? 2u : 1u);
    const mocks::RecordedRequest request = upstream_->requests().back();
    EXPECT_EQ(request.target, "/v1/messages");
    EXPECT_THAT(request.body, HasSubstr("claude: Email <EMAIL_1> the card <CREDIT_CARD_1>"));
    for (const char* value : {kEmail, kCard, kSecret}) {
      EXPECT_THAT(request.body, Not(HasSubstr(value)));
    }
  }
}

TEST_F(RedactionTest, GrpcChatAndStreamChat) {
  auto stub = v1::Switchyard::NewStub(
      grpc::CreateChannel(grpc_, grpc::InsecureChannelCredentials()));
  v1::ChatRequest request;
  v1::Message* message = request.add_messages();
  message->set_role("user");
  message->set_content(kPrompt);
  {
    grpc::ClientContext context;
    v1::ChatResponse response;
    grpc::Status status = stub->Chat(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.content(), kRestored);
    EXPECT_TRUE(response.decision().redact());
    EXPECT_EQ(response.decision().level(), "restricted");
    EXPECT_EQ(response.decision().redacted_level(), "public");
    ExpectRedactedUpstreamRequest(1);
  }
  {
    grpc::ClientContext context;
    auto reader = stub->StreamChat(&context, request);
    v1::ChatChunk chunk;
    std::string text;
    while (reader->Read(&chunk)) {
      EXPECT_THAT(chunk.delta(), Not(HasSubstr("<")));
      text += chunk.delta();
    }
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(text, kRestored);
    ExpectRedactedUpstreamRequest(2);
  }
}

TEST_F(RedactionTest, ExplainMarksRedactedFindingsAndTheLevelSent) {
  HttpResult result = HttpPost(http_ + "/v1/route/explain", OpenAiBody(false));
  ASSERT_EQ(result.status, 200) << result.body;
  const json decision = json::parse(result.body);
  EXPECT_EQ(decision["target"], "gpt");
  EXPECT_EQ(decision["redact"], true);
  EXPECT_EQ(decision["sensitivity"]["level"], "restricted");
  EXPECT_EQ(decision["sensitivity"]["redacted_level"], "public");
  ASSERT_EQ(decision["sensitivity"]["findings"].size(), 4u);
  for (const json& finding : decision["sensitivity"]["findings"]) {
    EXPECT_EQ(finding["redacted"], true) << finding;
  }
  EXPECT_THAT(result.body, Not(HasSubstr(kEmail)));
  EXPECT_EQ(upstream_->request_count(), 0u);

  // Text without findings is not rewritten (and the rule does not fire).
  HttpResult plain = HttpPost(http_ + "/v1/chat/completions", OpenAiBody(false, "just hello"));
  ASSERT_EQ(plain.status, 200) << plain.body;
  ASSERT_EQ(upstream_->request_count(), 1u);
  EXPECT_THAT(upstream_->requests().back().body, HasSubstr("just hello"));
}

}  // namespace
}  // namespace switchyard::testing
