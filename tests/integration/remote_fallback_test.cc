// Retries and fallbacks as the client sees them: the real server in front of two mock upstreams,
// over HTTP (headers, the SSE comment), gRPC (trailing metadata) and /metrics.
#include <stdio.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "gateway/config.h"
#include "gateway/server.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "switchyard/v1/switchyard.grpc.pb.h"
#include "tests/mocks/mock_upstream.h"
#include "tests/support/http_client.h"

namespace switchyard::gateway {
namespace {

using ::switchyard::mocks::Behaviour;
using ::switchyard::mocks::MockUpstream;
using ::switchyard::testing::HttpGet;
using ::switchyard::testing::HttpPost;
using ::switchyard::testing::HttpResult;
using ::switchyard::testing::SseData;
using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;

class RemoteFallbackTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    setenv("NO_PROXY", "127.0.0.1,localhost", 1);
    setenv("no_proxy", "127.0.0.1,localhost", 1);
  }

  void SetUp() override {
    for (auto* mock : {&primary_, &backup_}) {
      auto started = MockUpstream::Start();
      ASSERT_TRUE(started.ok()) << started.status();
      *mock = std::move(*started);
    }
    const std::string yaml = R"(
listeners: { http: 127.0.0.1:0, grpc: 127.0.0.1:0 }
auth: { allow_unauthenticated: true }
targets:
  - { name: primary, kind: openai_compatible, model: p-model, base_url: ")" +
                             primary_->base_url() + R"(" }
  - { name: backup, kind: openai_compatible, model: b-model, base_url: ")" +
                             backup_->base_url() + R"(" }
policy:
  default: primary
  rules:
    - name: everything
      route: [primary, backup]
)";
    absl::StatusOr<Config> config = ParseConfig(yaml, "remote_fallback_test.yaml", "");
    ASSERT_TRUE(config.ok()) << config.status();
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(*std::move(config));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    base_ = "http://127.0.0.1:" + std::to_string(server_->http_port());
  }

  static std::string Body(bool stream = false) {
    return json{{"model", "auto"},
                {"stream", stream},
                {"messages", {{{"role", "user"}, {"content", "hello"}}}}}
        .dump();
  }

  // The primary fails every attempt with 503: three attempts (two retries), then the backup.
  void FailPrimary() {
    Behaviour failing;
    failing.kind = Behaviour::Kind::kHttpError;
    failing.http_status = 503;
    failing.error_message = "primary is overloaded";
    primary_->SetBehaviour(failing);
  }

  std::string Metrics() { return HttpGet(base_ + "/metrics").body; }

  std::unique_ptr<MockUpstream> primary_;
  std::unique_ptr<MockUpstream> backup_;
  std::unique_ptr<Server> server_;
  std::string base_;
};

TEST_F(RemoteFallbackTest, FirstChoiceServesWithoutRetries) {
  HttpResult result = HttpPost(base_ + "/v1/chat/completions", Body());
  ASSERT_EQ(result.status, 200) << result.body;
  EXPECT_EQ(result.headers["x-switchyard-target"], "primary");
  EXPECT_EQ(result.headers["x-switchyard-served-by"], "primary");
  EXPECT_EQ(result.headers["x-switchyard-retries"], "0");
  EXPECT_EQ(result.headers["x-switchyard-fallbacks"], "0");
  EXPECT_EQ(backup_->request_count(), 0u);
}

TEST_F(RemoteFallbackTest, HeadersNameTheFallbackThatServedAndCountRetries) {
  FailPrimary();
  HttpResult result = HttpPost(base_ + "/v1/chat/completions", Body());
  ASSERT_EQ(result.status, 200) << result.body;
  // The policy's choice, and what actually happened.
  EXPECT_EQ(result.headers["x-switchyard-target"], "primary");
  EXPECT_EQ(result.headers["x-switchyard-served-by"], "backup");
  EXPECT_EQ(result.headers["x-switchyard-retries"], "2");
  EXPECT_EQ(result.headers["x-switchyard-fallbacks"], "1");
  EXPECT_EQ(json::parse(result.body)["model"], "backup");
  EXPECT_EQ(primary_->request_count(), 3u);
  EXPECT_EQ(backup_->request_count(), 1u);

  const std::string metrics = Metrics();
  EXPECT_THAT(metrics, HasSubstr("switchyard_upstream_retries_total{target=\"primary\"} 2\n"));
  EXPECT_THAT(metrics, HasSubstr("switchyard_upstream_retries_total{target=\"backup\"} 0\n"));
  EXPECT_THAT(metrics, HasSubstr("switchyard_upstream_errors_total{target=\"primary\","
                                 "kind=\"server_error\"} 3\n"));
  EXPECT_THAT(metrics, HasSubstr("switchyard_upstream_errors_total{target=\"backup\","
                                 "kind=\"server_error\"} 0\n"));
  EXPECT_THAT(metrics, HasSubstr("switchyard_upstream_retry_budget_exhausted_total{target="
                                 "\"primary\"} 0\n"));
}

TEST_F(RemoteFallbackTest, AStreamExplainsItselfInAnSseComment) {
  FailPrimary();
  HttpResult result = HttpPost(base_ + "/v1/chat/completions", Body(/*stream=*/true));
  ASSERT_EQ(result.status, 200) << result.body;
  // The headers went out with the first delta; the explanation follows the answer.
  EXPECT_EQ(result.headers.count("x-switchyard-served-by"), 0u);
  EXPECT_THAT(result.body,
              HasSubstr("\n\n: x-switchyard-served-by=backup x-switchyard-retries=2 "
                        "x-switchyard-fallbacks=1\n\ndata: "));
  std::vector<std::string> events = SseData(result.body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
}

TEST_F(RemoteFallbackTest, AFailureNamesTheLastTargetTried) {
  FailPrimary();
  Behaviour refused;
  refused.kind = Behaviour::Kind::kHttpError;
  refused.http_status = 401;
  refused.error_message = "Incorrect API key provided";
  backup_->SetBehaviour(refused);
  HttpResult result = HttpPost(base_ + "/v1/chat/completions", Body());
  // The gateway's credentials were refused, not the client's: a bad gateway.
  EXPECT_EQ(result.status, 502) << result.body;
  const std::string message = json::parse(result.body)["error"]["message"];
  EXPECT_THAT(message, HasSubstr("target 'backup': upstream returned HTTP 401: Incorrect API key "
                                 "provided (the upstream refused the gateway's credentials"));
  EXPECT_EQ(result.headers["x-switchyard-served-by"], "backup");
  EXPECT_EQ(result.headers["x-switchyard-retries"], "2");
  EXPECT_EQ(result.headers["x-switchyard-fallbacks"], "1");
  EXPECT_THAT(Metrics(), HasSubstr("switchyard_upstream_errors_total{target=\"backup\","
                                   "kind=\"client_error\"} 1\n"));
}

TEST_F(RemoteFallbackTest, ModelNotFoundUpstreamIsABadGateway) {
  Behaviour missing;
  missing.kind = Behaviour::Kind::kHttpError;
  missing.http_status = 404;
  missing.error_message = "The model `b-model` does not exist";
  primary_->SetBehaviour(missing);
  backup_->SetBehaviour(missing);
  HttpResult result = HttpPost(base_ + "/v1/messages",
                               json{{"model", "auto"},
                                    {"max_tokens", 5},
                                    {"messages", {{{"role", "user"}, {"content", "x"}}}}}
                                   .dump());
  EXPECT_EQ(result.status, 502) << result.body;
  EXPECT_THAT(result.body, HasSubstr("target 'backup': upstream returned HTTP 404"));
  EXPECT_THAT(result.body, HasSubstr("check its model and base_url"));
  // Not retried: the same request would be refused again.
  EXPECT_EQ(primary_->request_count(), 1u);
  EXPECT_EQ(backup_->request_count(), 1u);
}

TEST_F(RemoteFallbackTest, GrpcTrailingMetadataExplainsTheAnswer) {
  FailPrimary();
  auto stub = v1::Switchyard::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(server_->grpc_port()), grpc::InsecureChannelCredentials()));
  v1::ChatRequest request;
  v1::Message* message = request.add_messages();
  message->set_role("user");
  message->set_content("hello");
  auto trailer = [](const grpc::ClientContext& context, const std::string& key) {
    const auto& metadata = context.GetServerTrailingMetadata();
    auto it = metadata.find(key);
    return it == metadata.end() ? std::string("<none>")
                                : std::string(it->second.data(), it->second.size());
  };
  {
    grpc::ClientContext context;
    v1::ChatResponse response;
    grpc::Status status = stub->Chat(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.content(), "Hello, world!");
    EXPECT_EQ(trailer(context, "x-switchyard-served-by"), "backup");
    EXPECT_EQ(trailer(context, "x-switchyard-retries"), "2");
    EXPECT_EQ(trailer(context, "x-switchyard-fallbacks"), "1");
  }
  {
    grpc::ClientContext context;
    auto reader = stub->StreamChat(&context, request);
    v1::ChatChunk chunk;
    std::string text;
    while (reader->Read(&chunk)) text += chunk.delta();
    grpc::Status status = reader->Finish();
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(text, "Hello, world!");
    EXPECT_EQ(trailer(context, "x-switchyard-served-by"), "backup");
    EXPECT_EQ(trailer(context, "x-switchyard-retries"), "2");
    EXPECT_EQ(trailer(context, "x-switchyard-fallbacks"), "1");
  }
}

TEST_F(RemoteFallbackTest, PromtoolAcceptsTheUpstreamMetrics) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool not installed";
  }
  FailPrimary();
  ASSERT_EQ(HttpPost(base_ + "/v1/chat/completions", Body()).status, 200);
  const std::string metrics = Metrics();
  for (const char* kind :
       {"connect", "timeout", "rate_limited", "server_error", "client_error", "bad_response"}) {
    EXPECT_THAT(metrics, HasSubstr(std::string("switchyard_upstream_errors_total{target=\"backup\","
                                               "kind=\"") + kind + "\"} 0\n"));
  }
  const std::string path =
      ::testing::TempDir() + "/remote_metrics_" + std::to_string(::getpid()) + ".txt";
  {
    std::ofstream file(path);
    file << metrics;
    ASSERT_TRUE(file.good());
  }
  const std::string command = "promtool check metrics < '" + path + "' 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[256];
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  const int status = ::pclose(pipe);
  std::remove(path.c_str());
  EXPECT_EQ(status, 0) << output;
  EXPECT_THAT(output, Not(HasSubstr("upstream")));
}

// max_response_bytes is per target, from the config to the transport.
TEST(RemoteLimitsTest, ResponsesOverTheTargetsCapAreABadGateway) {
  setenv("NO_PROXY", "127.0.0.1,localhost", 1);
  setenv("no_proxy", "127.0.0.1,localhost", 1);
  auto upstream = MockUpstream::Start();
  ASSERT_TRUE(upstream.ok()) << upstream.status();
  Behaviour big;
  big.kind = Behaviour::Kind::kOversizedBody;
  big.oversized_bytes = 8192;
  (*upstream)->SetBehaviour(big);
  const std::string yaml = R"(
listeners: { http: 127.0.0.1:0, grpc: 127.0.0.1:0 }
auth: { allow_unauthenticated: true }
targets:
  - name: small
    kind: openai_compatible
    model: m
    base_url: ")" + (*upstream)->base_url() + R"("
    max_response_bytes: 4096
policy: { default: small }
)";
  absl::StatusOr<Config> config = ParseConfig(yaml, "limits.yaml", "");
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(*std::move(config));
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string url =
      "http://127.0.0.1:" + std::to_string((*server)->http_port()) + "/v1/chat/completions";
  for (bool stream : {false, true}) {
    HttpResult result = HttpPost(
        url, json{{"stream", stream}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}}.dump());
    EXPECT_EQ(result.status, 502) << result.body;
    EXPECT_THAT(result.body, HasSubstr("target 'small': upstream response body exceeds the limit "
                                       "of 4096 bytes"));
  }

  // Out of range: the error names the file, line and column.
  std::string too_small = yaml;
  too_small.replace(too_small.find("4096"), 4, "100");
  absl::StatusOr<Config> refused = ParseConfig(too_small, "limits.yaml", "");
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("limits.yaml:9:"));
  EXPECT_THAT(refused.status().message(), HasSubstr("max_response_bytes"));
}

}  // namespace
}  // namespace switchyard::gateway
