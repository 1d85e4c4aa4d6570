// Auth, tenants, budgets, cost and savings on the real gateway (HTTP and gRPC on loopback port 0)
// against mock upstreams speaking the OpenAI wire format, and the real local engine for
// downgrades.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "gateway/config.h"
#include "gateway/hash.h"
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

using ::switchyard::testing::HttpGet;
using ::switchyard::testing::HttpOptions;
using ::switchyard::testing::HttpPost;
using ::switchyard::testing::HttpResult;
using ::switchyard::testing::SseData;
using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;

constexpr char kAcmeKey[] = "sk-acme-0123456789";
constexpr char kBetaKey[] = "sk-beta-0123456789";
constexpr char kGammaKey[] = "sk-gamma-0123456789";
constexpr char kSlowKey[] = "sk-slow-0123456789";

// The value of one sample line of /metrics ("name{labels} value"); -1 when absent.
double Sample(const std::string& metrics, const std::string& series) {
  const size_t at = metrics.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(metrics.substr(at + series.size() + 2));
}

class MeteringTest : public ::testing::Test {
 protected:
  // `tenants` is spliced into the config: each test sets the limits it exercises.
  void Start(const std::string& tenants, const std::string& key_limits = "") {
    absl::StatusOr<std::unique_ptr<mocks::MockUpstream>> upstream = mocks::MockUpstream::Start();
    ASSERT_TRUE(upstream.ok()) << upstream.status();
    upstream_ = *std::move(upstream);
    // Prices are large so that one mock answer (7 prompt + 4 completion tokens) costs cents:
    // cheap 7*1000/1e6 + 4*2000/1e6 = 0.015 USD; frontier 7*10000/1e6 + 4*30000/1e6 = 0.19 USD.
    const std::string yaml = R"(
listeners: { http: 127.0.0.1:0, grpc: 127.0.0.1:0 }
models: { dirs: [")" + std::string(SWITCHYARD_SHARED_MODELS) +
                             R"("] }
auth:
  keys:
    - { name: ci-bot, tenant: acme, sha256: )" +
                             Sha256Hex(kAcmeKey) + R"( }
    - { name: beta-app, tenant: beta, sha256: )" +
                             Sha256Hex(kBetaKey) + R"( }
    - { name: gamma-app, tenant: gamma, sha256: )" +
                             Sha256Hex(kGammaKey) + R"( }
    - { name: slow-app, tenant: gamma, sha256: )" +
                             Sha256Hex(kSlowKey) + key_limits + R"( }
)" + tenants + R"(
metering: { reference_target: frontier }
targets:
  - { name: local, kind: local, model: stories260K.gguf, threads: 1, slots: 2, max_tokens: 8 }
  - name: cheap
    kind: openai_compatible
    base_url: )" + upstream_->base_url() +
                             R"(
    model: cheap-small
    price: { input_per_million: 1000, output_per_million: 2000 }
    timeouts: { connect_seconds: 2, first_byte_seconds: 5, idle_seconds: 5, total_seconds: 10 }
  - name: frontier
    kind: openai_compatible
    base_url: )" + upstream_->base_url() +
                             R"(
    model: frontier-large
    price: { input_per_million: 10000, output_per_million: 30000 }
policy:
  default: cheap
  rules:
    - name: beta-to-frontier
      when: { tenant: [beta] }
      route: frontier
)";
    absl::StatusOr<Config> config = ParseConfig(yaml, "metering_test.yaml", "");
    ASSERT_TRUE(config.ok()) << config.status();
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(*std::move(config));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    base_ = "http://127.0.0.1:" + std::to_string(server_->http_port());
  }

  static std::string Body(const std::string& text, bool stream = false, int max_tokens = 4) {
    return json{{"model", "auto"},
                {"stream", stream},
                {"max_tokens", max_tokens},
                {"messages", {{{"role", "user"}, {"content", text}}}}}
        .dump();
  }

  static HttpOptions Key(const std::string& key, bool bearer = true) {
    HttpOptions options;
    options.headers.push_back(bearer ? "Authorization: Bearer " + key : "x-api-key: " + key);
    return options;
  }

  HttpResult Chat(const std::string& key, const std::string& body) {
    return HttpPost(base_ + "/v1/chat/completions", body, Key(key));
  }

  std::string Metrics() { return HttpGet(base_ + "/metrics").body; }

  std::unique_ptr<v1::Switchyard::Stub> GrpcStub() const {
    return v1::Switchyard::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(server_->grpc_port()), grpc::InsecureChannelCredentials()));
  }

  // The gRPC twin of Body(): one user message, max_tokens 4.
  static v1::ChatRequest GrpcBody(const std::string& text) {
    v1::ChatRequest request;
    request.set_max_tokens(4);
    v1::Message* message = request.add_messages();
    message->set_role("user");
    message->set_content(text);
    return request;
  }

  std::unique_ptr<mocks::MockUpstream> upstream_;
  std::unique_ptr<Server> server_;
  std::string base_;
};

TEST_F(MeteringTest, MissingOrUnknownKeysAre401InEachDialectAndNeverReachTheUpstream) {
  Start("");
  HttpResult missing = HttpPost(base_ + "/v1/chat/completions", Body("hi"));
  EXPECT_EQ(missing.status, 401);
  EXPECT_EQ(missing.headers["www-authenticate"], "Bearer");
  json error = json::parse(missing.body)["error"];
  EXPECT_EQ(error["type"], "invalid_request_error");
  EXPECT_EQ(error["code"], "invalid_api_key");
  EXPECT_THAT(error["message"].get<std::string>(), HasSubstr("missing API key"));

  HttpResult wrong = HttpPost(base_ + "/v1/chat/completions", Body("hi"), Key("sk-nope"));
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(json::parse(wrong.body)["error"]["code"], "invalid_api_key");
  EXPECT_THAT(wrong.body, Not(HasSubstr("sk-nope")));

  const std::string messages = json{{"model", "auto"},
                                    {"max_tokens", 4},
                                    {"messages", {{{"role", "user"}, {"content", "hi"}}}}}
                                   .dump();
  HttpResult anthropic = HttpPost(base_ + "/v1/messages", messages, Key("sk-nope", false));
  EXPECT_EQ(anthropic.status, 401);
  json anthropic_error = json::parse(anthropic.body);
  EXPECT_EQ(anthropic_error["type"], "error");
  EXPECT_EQ(anthropic_error["error"]["type"], "authentication_error");
  EXPECT_EQ(HttpGet(base_ + "/v1/models").status, 401);
  EXPECT_EQ(HttpPost(base_ + "/v1/route/explain", Body("hi")).status, 401);
  // Health and metrics stay open for probes and scrapers.
  EXPECT_EQ(HttpGet(base_ + "/healthz").status, 200);
  EXPECT_EQ(upstream_->request_count(), 0u);

  // Both header forms authenticate, in both dialects.
  EXPECT_EQ(Chat(kAcmeKey, Body("hi")).status, 200);
  EXPECT_EQ(HttpPost(base_ + "/v1/chat/completions", Body("hi"), Key(kAcmeKey, false)).status, 200);
  EXPECT_EQ(HttpPost(base_ + "/v1/messages", messages, Key(kAcmeKey, false)).status, 200);
  EXPECT_EQ(HttpGet(base_ + "/v1/models", Key(kAcmeKey)).status, 200);

  const std::string metrics = Metrics();
  EXPECT_EQ(
      Sample(metrics, R"(switchyard_requests_rejected_total{rule="",outcome="unauthenticated"})"),
      5);
}

TEST_F(MeteringTest, GrpcTakesTheKeyFromMetadata) {
  Start("");
  auto stub = GrpcStub();
  const v1::ChatRequest request = GrpcBody("hello");
  {
    grpc::ClientContext context;
    v1::ChatResponse response;
    grpc::Status status = stub->Chat(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_THAT(status.error_message(), HasSubstr("missing API key"));
  }
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer sk-wrong");
    auto reader = stub->StreamChat(&context, request);
    v1::ChatChunk chunk;
    while (reader->Read(&chunk)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  EXPECT_EQ(upstream_->request_count(), 0u);
  for (const char* header : {"authorization", "x-api-key"}) {
    grpc::ClientContext context;
    context.AddMetadata(header, std::string(header) == "authorization"
                                    ? std::string("Bearer ") + kBetaKey
                                    : std::string(kBetaKey));
    v1::ChatResponse response;
    grpc::Status status = stub->Chat(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.content(), "Hello, world!");
    // The authenticated tenant (beta) is what the policy saw.
    EXPECT_EQ(response.decision().rule(), "beta-to-frontier");
  }
}

TEST_F(MeteringTest, AuthenticatedTenantOverridesCallerMetadata) {
  Start("");
  json body = json::parse(Body("hi"));
  body["metadata"] = {{"tenant", "beta"}};
  HttpResult acme = Chat(kAcmeKey, body.dump());
  ASSERT_EQ(acme.status, 200) << acme.body;
  EXPECT_EQ(acme.headers["x-switchyard-rule"], "default");
  EXPECT_EQ(acme.headers["x-switchyard-target"], "cheap");
  HttpResult beta = Chat(kBetaKey, Body("hi"));
  ASSERT_EQ(beta.status, 200) << beta.body;
  EXPECT_EQ(beta.headers["x-switchyard-rule"], "beta-to-frontier");
}

TEST_F(MeteringTest, SpendAndSavingsArePricedFromProviderUsage) {
  Start("tenants:\n  acme: { usd_per_day: 100, usd_per_month: 1000 }\n");
  for (int i = 0; i < 2; ++i) ASSERT_EQ(Chat(kAcmeKey, Body("hi")).status, 200);
  ASSERT_EQ(Chat(kBetaKey, Body("hi", /*stream=*/true)).status, 200);
  const std::string metrics = Metrics();
  // cheap: 2 x 0.015; frontier is the reference target, so beta saves nothing.
  EXPECT_NEAR(Sample(metrics, R"(switchyard_spend_usd_total{tenant="acme",target="cheap"})"), 0.03,
              1e-9);
  EXPECT_NEAR(Sample(metrics, R"(switchyard_savings_usd_total{tenant="acme",target="cheap"})"),
              2 * (0.19 - 0.015), 1e-9);
  EXPECT_NEAR(Sample(metrics, R"(switchyard_spend_usd_total{tenant="beta",target="frontier"})"),
              0.19, 1e-9);
  EXPECT_EQ(Sample(metrics, R"(switchyard_savings_usd_total{tenant="beta",target="frontier"})"), 0);
  EXPECT_EQ(
      Sample(
          metrics,
          R"(switchyard_requests_total{tenant="acme",target="cheap",rule="default",locality="remote",outcome="ok"})"),
      2);
  EXPECT_EQ(Sample(metrics, R"(switchyard_decisions_total{level="public",locality="remote"})"), 3);
  EXPECT_NEAR(Sample(metrics, R"(switchyard_budget_remaining_usd{tenant="acme",window="day"})"),
              100 - 0.03, 1e-9);
  EXPECT_NEAR(Sample(metrics, R"(switchyard_budget_remaining_usd{tenant="acme",window="month"})"),
              1000 - 0.03, 1e-9);
  EXPECT_EQ(Sample(metrics, R"(switchyard_time_to_first_token_seconds_count{target="frontier"})"),
            1);
  // cheap answered only unary requests, which have no first token to time.
  EXPECT_EQ(Sample(metrics, R"(switchyard_time_to_first_token_seconds_count{target="cheap"})"), -1);
  EXPECT_EQ(Sample(metrics, "switchyard_gateway_overhead_seconds_count"), 3);
  EXPECT_EQ(Sample(metrics, R"(switchyard_budget_exhausted_total{tenant="acme",action="reject"})"),
            0);
  // No per-key labels unless metrics.per_key_labels is set.
  EXPECT_THAT(metrics, Not(HasSubstr("ci-bot")));

  // The exposition with every new family populated passes Prometheus' own linter.
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) GTEST_SKIP() << "no promtool";
  const std::string path =
      ::testing::TempDir() + "/metering_metrics_" + std::to_string(::getpid()) + ".txt";
  std::ofstream(path) << metrics;
  const std::string command = "promtool check metrics < '" + path + "' 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[256];
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  EXPECT_EQ(::pclose(pipe), 0) << output;
  EXPECT_EQ(output, "");
}

// An upstream that reports a negative prompt count gets no budget back: the count is not believed
// (and counted), and the prompt is charged as if the upstream had not said.
TEST_F(MeteringTest, ANegativeUpstreamTokenCountIsNotBelieved) {
  Start("tenants:\n  acme: { usd_per_day: 100, usd_per_month: 1000 }\n");
  mocks::Behaviour lying;
  lying.prompt_tokens = -1'000'000'000;
  upstream_->SetBehaviour(lying);
  HttpResult result = Chat(kAcmeKey, Body("hi"));
  ASSERT_EQ(result.status, 200) << result.body;
  // The estimate for "hi": one token at four bytes each, and four for the message.
  EXPECT_EQ(json::parse(result.body)["usage"]["prompt_tokens"], 5);
  const std::string metrics = Metrics();
  // 5 prompt tokens at 1000 USD per million, the 4 reported completion tokens at 2000.
  EXPECT_NEAR(Sample(metrics, R"(switchyard_spend_usd_total{tenant="acme",target="cheap"})"),
              0.013, 1e-9);
  EXPECT_NEAR(Sample(metrics, R"(switchyard_budget_remaining_usd{tenant="acme",window="day"})"),
              100 - 0.013, 1e-9);
  EXPECT_EQ(Sample(metrics, R"(switchyard_tokens_prompt_total{target="cheap"})"), 5);
  EXPECT_EQ(Sample(metrics, R"(switchyard_upstream_implausible_usage_total{target="cheap"})"), 1);
}

// An upstream that sends no usage (an OpenAI-compatible server that ignores
// stream_options.include_usage) is charged the estimate a cancelled request is: the prompt
// estimate and the answer at four bytes per token. The client is shown the same counts.
TEST_F(MeteringTest, AnUpstreamWithoutUsageIsChargedTheEstimate) {
  Start("tenants:\n  acme: { usd_per_day: 100, usd_per_month: 1000 }\n");
  mocks::Behaviour silent;
  silent.send_usage = false;
  silent.tokens = {std::string(20, 'a'), std::string(20, 'b')};  // 40 bytes: 10 tokens
  upstream_->SetBehaviour(silent);
  HttpResult unary = Chat(kAcmeKey, Body("hi"));
  ASSERT_EQ(unary.status, 200) << unary.body;
  // "hi": one token at four bytes each, and four for the message.
  EXPECT_EQ(json::parse(unary.body)["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(json::parse(unary.body)["usage"]["completion_tokens"], 10);
  json body = json::parse(Body("hi", /*stream=*/true));
  body["stream_options"] = {{"include_usage", true}};
  HttpResult streamed = Chat(kAcmeKey, body.dump());
  ASSERT_EQ(streamed.status, 200) << streamed.body;
  std::vector<std::string> events = SseData(streamed.body);
  ASSERT_GE(events.size(), 2u);
  const json usage = json::parse(events[events.size() - 2])["usage"];
  EXPECT_EQ(usage["prompt_tokens"], 5);
  EXPECT_EQ(usage["completion_tokens"], 10);
  const std::string metrics = Metrics();
  // Each request: 5 x 1000 / 1e6 + 10 x 2000 / 1e6 = 0.025 USD.
  EXPECT_NEAR(Sample(metrics, R"(switchyard_spend_usd_total{tenant="acme",target="cheap"})"),
              0.05, 1e-9);
  EXPECT_NEAR(Sample(metrics, R"(switchyard_budget_remaining_usd{tenant="acme",window="day"})"),
              100 - 0.05, 1e-9);
  EXPECT_EQ(Sample(metrics, R"(switchyard_tokens_prompt_total{target="cheap"})"), 10);
  EXPECT_EQ(Sample(metrics, R"(switchyard_tokens_completion_total{target="cheap"})"), 20);
}

// A stream that breaks after text reached the client is charged for that text and the prompt;
// one refused before any text is charged nothing.
TEST_F(MeteringTest, AStreamThatFailsMidwayIsChargedForWhatItProduced) {
  Start("tenants:\n  acme: { usd_per_day: 100, usd_per_month: 1000 }\n");
  mocks::Behaviour broken;
  broken.kind = mocks::Behaviour::Kind::kStreamError;
  broken.tokens = {std::string(20, 'a'), std::string(20, 'b'), "never sent"};
  broken.reset_after_tokens = 2;  // 40 bytes: 10 tokens
  upstream_->SetBehaviour(broken);
  HttpResult result = Chat(kAcmeKey, Body("hi", /*stream=*/true));
  ASSERT_EQ(result.status, 200) << result.body;
  std::vector<std::string> events = SseData(result.body);
  ASSERT_FALSE(events.empty());
  EXPECT_TRUE(json::parse(events.back()).contains("error")) << events.back();
  mocks::Behaviour refused;
  refused.kind = mocks::Behaviour::Kind::kHttpError;
  refused.http_status = 400;
  upstream_->SetBehaviour(refused);
  EXPECT_EQ(Chat(kAcmeKey, Body("hi", /*stream=*/true)).status, 400);
  const std::string metrics = Metrics();
  // "hi" estimated at 5 prompt tokens: 5 x 1000 / 1e6 + 10 x 2000 / 1e6 = 0.025 USD.
  EXPECT_NEAR(Sample(metrics, R"(switchyard_spend_usd_total{tenant="acme",target="cheap"})"),
              0.025, 1e-9);
  EXPECT_NEAR(Sample(metrics, R"(switchyard_budget_remaining_usd{tenant="acme",window="day"})"),
              100 - 0.025, 1e-9);
  EXPECT_EQ(Sample(metrics, R"(switchyard_tokens_completion_total{target="cheap"})"), 10);
}

TEST_F(MeteringTest, SpentBudgetRejectsWith429NamingTenantLimitAndValues) {
  // Each request is estimated at about 0.02 USD and costs 0.015: four fit under 0.05.
  Start("tenants:\n  acme: { usd_per_day: 0.05, on_exhausted: reject }\n");
  int ok = 0;
  HttpResult refused;
  for (int i = 0; i < 10; ++i) {
    HttpResult result = Chat(kAcmeKey, Body("hi"));
    if (result.status != 200) {
      refused = result;
      break;
    }
    ++ok;
  }
  EXPECT_GE(ok, 3);
  ASSERT_EQ(refused.status, 429) << refused.body;
  json error = json::parse(refused.body)["error"];
  EXPECT_EQ(error["type"], "rate_limit_error");
  EXPECT_THAT(error["message"].get<std::string>(),
              ::testing::MatchesRegex("tenant 'acme' exhausted its usd_per_day budget: spent "
                                      "0\\.0[5-9][0-9]* USD .* of the 0\\.0500 USD limit"));
  EXPECT_EQ(upstream_->request_count(), static_cast<size_t>(ok));
  // Other tenants are unaffected.
  HttpResult beta = Chat(kBetaKey, Body("hi"));
  EXPECT_EQ(beta.status, 200) << beta.body;

  const std::string metrics = Metrics();
  EXPECT_EQ(Sample(metrics, R"(switchyard_budget_exhausted_total{tenant="acme",action="reject"})"),
            1);
  EXPECT_EQ(Sample(metrics, R"(switchyard_budget_remaining_usd{tenant="acme",window="day"})"), 0);
  EXPECT_EQ(Sample(metrics,
                   R"(switchyard_requests_rejected_total{rule="default",outcome="rate_limited"})"),
            1);
}

TEST_F(MeteringTest, SpentBudgetDowngradesToTheLocalTargetWhenConfigured) {
  Start("tenants:\n  beta: { usd_per_day: 0.1, on_exhausted: downgrade }\n");
  ASSERT_EQ(Chat(kBetaKey, Body("hi")).status, 200);  // 0.19 USD on frontier: spent
  HttpResult downgraded = Chat(kBetaKey, Body("Once upon a time"));
  ASSERT_EQ(downgraded.status, 200) << downgraded.body;
  EXPECT_EQ(downgraded.headers["x-switchyard-target"], "local");
  EXPECT_THAT(downgraded.headers["x-switchyard-budget"],
              HasSubstr("downgraded; tenant 'beta' exhausted its usd_per_day budget"));
  EXPECT_EQ(upstream_->request_count(), 1u);

  // The gRPC decision says so too.
  auto stub = GrpcStub();
  const v1::ChatRequest request = GrpcBody("Once upon a time");
  grpc::ClientContext context;
  context.AddMetadata("x-api-key", kBetaKey);
  v1::ChatResponse response;
  ASSERT_TRUE(stub->Chat(&context, request, &response).ok());
  EXPECT_EQ(response.decision().target(), "local");
  EXPECT_EQ(response.decision().locality(), "local");
  EXPECT_THAT(response.decision().reason(), HasSubstr("downgraded to 'local'"));
  EXPECT_EQ(upstream_->request_count(), 1u);

  const std::string metrics = Metrics();
  EXPECT_EQ(
      Sample(metrics, R"(switchyard_budget_exhausted_total{tenant="beta",action="downgrade"})"), 2);
  EXPECT_EQ(
      Sample(
          metrics,
          R"(switchyard_requests_total{tenant="beta",target="local",rule="beta-to-frontier",locality="local",outcome="ok"})"),
      2);
}

TEST_F(MeteringTest, RequestsPerMinuteIs429WithRetryAfter) {
  Start("tenants:\n  gamma: { requests_per_minute: 2 }\n");
  // A minute boundary may fall between requests: the limit must bite within a few.
  std::vector<long> statuses;
  HttpResult limited;
  for (int i = 0; i < 6 && limited.status != 429; ++i) {
    HttpResult result = Chat(kGammaKey, Body("hi"));
    statuses.push_back(result.status);
    if (result.status == 429) limited = result;
  }
  ASSERT_EQ(limited.status, 429);
  EXPECT_GE(statuses.size(), 3u);
  const int retry_after = std::stoi(limited.headers["retry-after"]);
  EXPECT_GE(retry_after, 1);
  EXPECT_LE(retry_after, 60);
  json error = json::parse(limited.body)["error"];
  EXPECT_EQ(error["type"], "rate_limit_error");
  EXPECT_THAT(error["message"].get<std::string>(),
              HasSubstr("tenant 'gamma' reached its requests_per_minute limit: 2 of 2"));
  // In the Anthropic dialect too.
  const std::string messages = json{{"model", "auto"},
                                    {"max_tokens", 4},
                                    {"messages", {{{"role", "user"}, {"content", "hi"}}}}}
                                   .dump();
  HttpResult anthropic = HttpPost(base_ + "/v1/messages", messages, Key(kGammaKey, false));
  if (anthropic.status == 429) {
    EXPECT_EQ(json::parse(anthropic.body)["error"]["type"], "rate_limit_error");
    EXPECT_FALSE(anthropic.headers["retry-after"].empty());
  }
}

TEST_F(MeteringTest, MaxConcurrentPerKeyIs429WhileTheFirstRuns) {
  Start("", ", limits: { max_concurrent: 1 }");
  mocks::Behaviour slow;
  slow.delay = std::chrono::milliseconds(1500);
  upstream_->SetBehaviour(slow);
  std::thread first([&] { EXPECT_EQ(Chat(kSlowKey, Body("hi")).status, 200); });
  for (int i = 0; i < 200 && upstream_->request_count() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(upstream_->request_count(), 1u);
  HttpResult second = Chat(kSlowKey, Body("hi"));
  EXPECT_EQ(second.status, 429);
  EXPECT_EQ(second.headers["retry-after"], "1");
  EXPECT_THAT(second.body,
              HasSubstr("key 'slow-app' of tenant 'gamma' reached its max_concurrent"));
  // gRPC callers get RESOURCE_EXHAUSTED with the same hint as trailing metadata, unary and
  // streamed.
  auto stub = GrpcStub();
  const v1::ChatRequest request = GrpcBody("hi");
  auto retry_after = [](const grpc::ClientContext& context) {
    auto it = context.GetServerTrailingMetadata().find("retry-after");
    if (it == context.GetServerTrailingMetadata().end()) return std::string("(none)");
    return std::string(it->second.data(), it->second.size());
  };
  {
    grpc::ClientContext context;
    context.AddMetadata("x-api-key", kSlowKey);
    v1::ChatResponse response;
    grpc::Status status = stub->Chat(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_THAT(status.error_message(), HasSubstr("reached its max_concurrent"));
    EXPECT_EQ(retry_after(context), "1");
  }
  {
    grpc::ClientContext context;
    context.AddMetadata("x-api-key", kSlowKey);
    auto reader = stub->StreamChat(&context, request);
    v1::ChatChunk chunk;
    while (reader->Read(&chunk)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_EQ(retry_after(context), "1");
  }
  // The same tenant's other key is not limited.
  EXPECT_EQ(Chat(kGammaKey, Body("hi")).status, 200);
  first.join();
  EXPECT_EQ(Chat(kSlowKey, Body("hi")).status, 200);
}

TEST_F(MeteringTest, ConcurrentRequestsOvershootTheBudgetByAtMostOneEstimate) {
  Start("tenants:\n  acme: { usd_per_day: 0.1 }\n");
  mocks::Behaviour slow;
  slow.delay = std::chrono::milliseconds(300);
  upstream_->SetBehaviour(slow);
  // What the policy estimates for one request on `cheap` (the reservation). With max_tokens 8 it
  // is above the actual cost, as a max_tokens bound makes it in practice.
  const std::string body = Body("hi", /*stream=*/false, /*max_tokens=*/8);
  HttpResult explain = HttpPost(base_ + "/v1/route/explain", body, Key(kAcmeKey));
  ASSERT_EQ(explain.status, 200) << explain.body;
  const double estimate = json::parse(explain.body)["cost"]["estimated_usd"].get<double>();
  ASSERT_GT(estimate, 0.015);

  std::atomic<int> ok{0}, limited{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < 24; ++i) {
    clients.emplace_back([&] {
      HttpResult result = Chat(kAcmeKey, body);
      if (result.status == 200) ok.fetch_add(1);
      if (result.status == 429) limited.fetch_add(1);
    });
  }
  for (std::thread& client : clients) client.join();
  EXPECT_EQ(ok.load() + limited.load(), 24);
  EXPECT_GT(limited.load(), 0);
  const double spent =
      Sample(Metrics(), R"(switchyard_spend_usd_total{tenant="acme",target="cheap"})");
  EXPECT_NEAR(spent, ok.load() * 0.015, 1e-9);
  // Admitted while spent + reserved < 0.1: what was reserved past the limit is under one
  // estimate, and the actual spend stays below the limit plus one estimate.
  EXPECT_LT(ok.load() * estimate, 0.1 + estimate + 1e-9);
  EXPECT_LT(spent, 0.1 + estimate);
}

TEST_F(MeteringTest, AStreamThatReachesTheBudgetEndsWithAnErrorEvent) {
  Start("tenants:\n  acme: { usd_per_day: 0.02 }\n");
  mocks::Behaviour long_answer;
  long_answer.tokens = std::vector<std::string>(60, "word ");
  long_answer.token_delay = std::chrono::milliseconds(10);
  upstream_->SetBehaviour(long_answer);
  // Admitted with nothing spent; at 2000 USD per million output tokens (4 bytes each) the running
  // cost passes 0.02 USD a few tokens in, long before the 60-token answer ends.
  HttpResult result = Chat(kAcmeKey, Body("hi", /*stream=*/true, /*max_tokens=*/200));
  ASSERT_EQ(result.status, 200) << result.body;
  std::vector<std::string> events = SseData(result.body);
  ASSERT_FALSE(events.empty());
  EXPECT_NE(events.back(), "[DONE]");
  json error = json::parse(events.back());
  EXPECT_EQ(error["error"]["type"], "rate_limit_error");
  EXPECT_THAT(error["error"]["message"].get<std::string>(),
              HasSubstr("budget exhausted mid-stream for tenant 'acme'"));
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    json chunk = json::parse(events[i]);
    if (chunk["choices"][0]["delta"].contains("content")) {
      text += chunk["choices"][0]["delta"]["content"].get<std::string>();
    }
  }
  EXPECT_GT(text.size(), 0u);
  EXPECT_LT(text.size(), 60u * 5);
  // The budget is now spent: the next request is refused.
  EXPECT_EQ(Chat(kAcmeKey, Body("hi")).status, 429);
  const std::string metrics = Metrics();
  EXPECT_EQ(
      Sample(
          metrics,
          R"(switchyard_requests_total{tenant="acme",target="cheap",rule="default",locality="remote",outcome="rate_limited"})"),
      1);
}

}  // namespace
}  // namespace switchyard::gateway
