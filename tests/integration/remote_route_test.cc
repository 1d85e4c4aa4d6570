// The real backends end to end: the llama.cpp engine on stories260K.gguf and the libcurl
// OpenAI-compatible client against an in-repo mock upstream, behind the real HTTP server.
// Proves that a request the policy keeps local never reaches the remote upstream.
#include <cstdlib>
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

using ::switchyard::testing::HttpPost;
using ::switchyard::testing::HttpResult;
using ::switchyard::testing::SseData;
using ::testing::HasSubstr;
using json = nlohmann::json;

class RemoteRouteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<mocks::MockUpstream>> upstream = mocks::MockUpstream::Start();
    ASSERT_TRUE(upstream.ok()) << upstream.status();
    upstream_ = *std::move(upstream);
    setenv("SWITCHYARD_TEST_UPSTREAM_KEY", "sk-test-secret-key-123", 1);
    const std::string yaml = R"(
listeners: { http: 127.0.0.1:0, grpc: 127.0.0.1:0 }
auth: { allow_unauthenticated: true }
models: { dirs: [")" + std::string(SWITCHYARD_SHARED_MODELS) + R"("] }
targets:
  - { name: local, kind: local, model: stories260K.gguf, threads: 1, slots: 2, max_tokens: 16 }
  - name: frontier
    kind: openai_compatible
    base_url: )" + upstream_->base_url() + R"(
    model: frontier-large
    api_key_env: SWITCHYARD_TEST_UPSTREAM_KEY
    timeouts: { connect_seconds: 2, first_byte_seconds: 5, idle_seconds: 5, total_seconds: 10 }
  - name: eager
    kind: openai_compatible
    base_url: )" + upstream_->base_url() + R"(
    model: frontier-eager
    stream: always
  - name: plain
    kind: openai_compatible
    base_url: )" + upstream_->base_url() + R"(
    model: frontier-plain
    stream: never
policy:
  default: frontier
  rules:
    - name: keep-sensitive-local
      when:
        keywords: [confidential, password]
        patterns: ['\b\d{3}-\d{2}-\d{4}\b']
      route: local
    - name: eager
      when: { model: eager }
      route: eager
    - name: plain
      when: { model: plain }
      route: plain
)";
    absl::StatusOr<Config> config = ParseConfig(yaml, "remote_route_test.yaml", "");
    ASSERT_TRUE(config.ok()) << config.status();
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(*std::move(config));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    url_ = "http://127.0.0.1:" + std::to_string(server_->http_port()) + "/v1/chat/completions";
  }

  static std::string Body(const std::string& text, bool stream = false) {
    return json{{"model", "auto"},
                {"stream", stream},
                {"temperature", 0},
                {"max_tokens", 12},
                {"messages", {{{"role", "user"}, {"content", text}}}}}
        .dump();
  }

  std::unique_ptr<mocks::MockUpstream> upstream_;
  std::unique_ptr<Server> server_;
  std::string url_;
};

TEST_F(RemoteRouteTest, RoutineRequestGoesToTheUpstreamWithTheRightWireFormat) {
  HttpResult result = HttpPost(url_, Body("Summarise the plot of Hamlet"));
  ASSERT_EQ(result.status, 200) << result.body;
  EXPECT_EQ(result.headers["x-switchyard-target"], "frontier");
  json body = json::parse(result.body);
  EXPECT_EQ(body["choices"][0]["message"]["content"], "Hello, world!");
  EXPECT_EQ(body["usage"]["prompt_tokens"], 7);

  ASSERT_EQ(upstream_->request_count(), 1u);
  const mocks::RecordedRequest request = upstream_->requests()[0];
  EXPECT_EQ(request.method, "POST");
  EXPECT_EQ(request.target, "/v1/chat/completions");
  EXPECT_EQ(request.Header("authorization"), "Bearer sk-test-secret-key-123");
  json sent = json::parse(request.body);
  EXPECT_EQ(sent["model"], "frontier-large");
  EXPECT_EQ(sent["max_tokens"], 12);
  EXPECT_EQ(sent["messages"][0]["content"], "Summarise the plot of Hamlet");
}

TEST_F(RemoteRouteTest, StreamingRequestRelaysUpstreamDeltas) {
  HttpResult result = HttpPost(url_, Body("Tell me a joke", /*stream=*/true));
  ASSERT_EQ(result.status, 200) << result.body;
  std::vector<std::string> events = SseData(result.body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    json chunk = json::parse(events[i]);
    if (chunk["choices"][0]["delta"].contains("content")) {
      text += chunk["choices"][0]["delta"]["content"].get<std::string>();
    }
  }
  EXPECT_EQ(text, "Hello, world!");
}

// The upstream is asked for an event stream exactly when the client reads one, over HTTP and
// gRPC: a unary answer comes in one body, which costs both sides less. A target with
// `stream: always` streams every request.
TEST_F(RemoteRouteTest, UpstreamStreamsExactlyWhenTheClientDoes) {
  HttpResult unary = HttpPost(url_, Body("one"));
  ASSERT_EQ(unary.status, 200) << unary.body;
  EXPECT_EQ(json::parse(unary.body)["choices"][0]["message"]["content"], "Hello, world!");
  ASSERT_EQ(HttpPost(url_, Body("two", /*stream=*/true)).status, 200);

  auto stub = v1::Switchyard::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(server_->grpc_port()), grpc::InsecureChannelCredentials()));
  v1::ChatRequest request;
  v1::Message* message = request.add_messages();
  message->set_role("user");
  message->set_content("three");
  {
    grpc::ClientContext context;
    v1::ChatResponse response;
    ASSERT_TRUE(stub->Chat(&context, request, &response).ok());
    EXPECT_EQ(response.content(), "Hello, world!");
  }
  {
    grpc::ClientContext context;
    auto reader = stub->StreamChat(&context, request);
    std::string text;
    for (v1::ChatChunk chunk; reader->Read(&chunk);) text += chunk.delta();
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(text, "Hello, world!");
  }
  json eager = json::parse(Body("four"));
  eager["model"] = "eager";
  HttpResult always = HttpPost(url_, eager.dump());
  ASSERT_EQ(always.status, 200) << always.body;
  EXPECT_EQ(always.headers["x-switchyard-target"], "eager");
  EXPECT_EQ(json::parse(always.body)["choices"][0]["message"]["content"], "Hello, world!");

  const std::vector<mocks::RecordedRequest> sent = upstream_->requests();
  ASSERT_EQ(sent.size(), 5u);
  const std::vector<bool> want = {false, true, false, true, true};
  for (size_t i = 0; i < sent.size(); ++i) {
    SCOPED_TRACE(i);
    json body = json::parse(sent[i].body);
    EXPECT_EQ(body["stream"], want[i]);
    // Usage comes with a body anyway; a stream has to ask for it.
    EXPECT_EQ(body.contains("stream_options"), want[i]);
    EXPECT_EQ(sent[i].Header("accept"), want[i] ? "text/event-stream" : "application/json");
  }
  EXPECT_EQ(json::parse(sent[4].body)["model"], "frontier-eager");
}

// A `stream: never` target answers a streaming client from one upstream body: the client still
// gets a well-formed event stream, the whole text in one delta.
TEST_F(RemoteRouteTest, NeverStreamingTargetStillServesAStreamingClient) {
  json body = json::parse(Body("five", /*stream=*/true));
  body["model"] = "plain";
  HttpResult result = HttpPost(url_, body.dump());
  ASSERT_EQ(result.status, 200) << result.body;
  EXPECT_EQ(result.headers["x-switchyard-target"], "plain");
  EXPECT_THAT(result.headers["content-type"], HasSubstr("text/event-stream"));
  const std::vector<std::string> events = SseData(result.body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  std::vector<std::string> deltas;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    json chunk = json::parse(events[i]);
    if (chunk["choices"][0]["delta"].contains("content")) {
      deltas.push_back(chunk["choices"][0]["delta"]["content"].get<std::string>());
    }
  }
  EXPECT_THAT(deltas, ::testing::ElementsAre("Hello, world!"));
  ASSERT_EQ(upstream_->request_count(), 1u);
  const mocks::RecordedRequest sent = upstream_->requests()[0];
  EXPECT_EQ(json::parse(sent.body)["stream"], false);
  EXPECT_EQ(sent.Header("accept"), "application/json");
}

TEST_F(RemoteRouteTest, SensitiveRequestsNeverReachTheUpstream) {
  for (const std::string text : {"This is CONFIDENTIAL: Q3 numbers", "my password is hunter2",
                                 "SSN 123-45-6789 please check"}) {
    for (bool stream : {false, true}) {
      HttpResult result = HttpPost(url_, Body(text, stream));
      ASSERT_EQ(result.status, 200) << result.body;
      EXPECT_EQ(result.headers["x-switchyard-target"], "local") << text;
      EXPECT_EQ(result.headers["x-switchyard-rule"], "keep-sensitive-local") << text;
    }
  }
  // Naming the remote target does not let sensitive text out either.
  json named = json::parse(Body("confidential memo"));
  named["model"] = "frontier";
  HttpResult result = HttpPost(url_, named.dump());
  ASSERT_EQ(result.status, 200);
  EXPECT_EQ(result.headers["x-switchyard-target"], "local");
  EXPECT_EQ(upstream_->request_count(), 0u);
}

TEST_F(RemoteRouteTest, UpstreamFailureIs502AndKeyNeverLeaks) {
  mocks::Behaviour failing;
  failing.kind = mocks::Behaviour::Kind::kHttpError;
  failing.http_status = 500;
  failing.error_message = "backend exploded (key sk-test-secret-key-123)";
  upstream_->SetBehaviour(failing);
  HttpResult result = HttpPost(url_, Body("hello"));
  EXPECT_EQ(result.status, 502);
  EXPECT_THAT(result.body, HasSubstr("500"));
  EXPECT_THAT(result.body, ::testing::Not(HasSubstr("sk-test-secret-key-123")));

  // The breaker state of every remote target is exported (closed: one failure is not enough).
  const std::string metrics =
      testing::HttpGet("http://127.0.0.1:" + std::to_string(server_->http_port()) + "/metrics").body;
  EXPECT_THAT(metrics, HasSubstr("switchyard_upstream_breaker_state{target=\"frontier\"} 0"));
  EXPECT_THAT(metrics, ::testing::Not(HasSubstr("switchyard_upstream_breaker_state{target=\"local\"}")));
  EXPECT_THAT(metrics, ::testing::Not(HasSubstr("sk-test-secret-key-123")));
}

// An upstream 429 that ends the request hands its Retry-After on, as the gateway's own limits do:
// the HTTP header (unary, and a stream refused before its first byte) and gRPC's trailing
// metadata `retry-after`. 30 s is past the retry budget, so the first answer ends the request.
TEST_F(RemoteRouteTest, AnUpstreamsRetryAfterReachesTheClient) {
  mocks::Behaviour limited;
  limited.kind = mocks::Behaviour::Kind::kHttpError;
  limited.http_status = 429;
  limited.retry_after_seconds = 30;
  limited.error_message = "slow down (key sk-test-secret-key-123)";
  upstream_->SetBehaviour(limited);
  for (bool stream : {false, true}) {
    HttpResult result = HttpPost(url_, Body("hello", stream));
    EXPECT_EQ(result.status, 429) << result.body;
    EXPECT_EQ(result.headers["retry-after"], "30");
    EXPECT_THAT(result.body, ::testing::Not(HasSubstr("sk-test-secret-key-123")));
  }
  auto stub = v1::Switchyard::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(server_->grpc_port()), grpc::InsecureChannelCredentials()));
  v1::ChatRequest request;
  v1::Message* message = request.add_messages();
  message->set_role("user");
  message->set_content("hello");
  auto retry_after = [](const grpc::ClientContext& context) {
    auto it = context.GetServerTrailingMetadata().find("retry-after");
    if (it == context.GetServerTrailingMetadata().end()) return std::string("(none)");
    return std::string(it->second.data(), it->second.size());
  };
  {
    grpc::ClientContext context;
    v1::ChatResponse response;
    grpc::Status status = stub->Chat(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_EQ(retry_after(context), "30");
  }
  {
    grpc::ClientContext context;
    auto reader = stub->StreamChat(&context, request);
    v1::ChatChunk chunk;
    while (reader->Read(&chunk)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_EQ(retry_after(context), "30");
  }
  // An overloaded upstream's 503 is a 502 here, with its hint; a 500's Retry-After is not passed.
  limited.http_status = 503;
  upstream_->SetBehaviour(limited);
  HttpResult unavailable = HttpPost(url_, Body("hello"));
  EXPECT_EQ(unavailable.status, 502);
  EXPECT_EQ(unavailable.headers["retry-after"], "30");
  limited.http_status = 500;
  upstream_->SetBehaviour(limited);
  HttpResult failed = HttpPost(url_, Body("hello"));
  EXPECT_EQ(failed.status, 502);
  EXPECT_EQ(failed.headers.count("retry-after"), 0u);
}

// An answer the provider's content filter ended is reported as such in every client dialect,
// never as a normal stop: OpenAI "content_filter", Anthropic "refusal", gRPC "content_filter".
TEST_F(RemoteRouteTest, AContentFilterFinishReachesEveryDialect) {
  mocks::Behaviour filtered;
  filtered.finish_reason = "content_filter";
  upstream_->SetBehaviour(filtered);
  HttpResult unary = HttpPost(url_, Body("hello"));
  ASSERT_EQ(unary.status, 200) << unary.body;
  EXPECT_EQ(json::parse(unary.body)["choices"][0]["finish_reason"], "content_filter");
  HttpResult streamed = HttpPost(url_, Body("hello", /*stream=*/true));
  ASSERT_EQ(streamed.status, 200) << streamed.body;
  std::vector<std::string> events = SseData(streamed.body);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(json::parse(events[events.size() - 2])["choices"][0]["finish_reason"],
            "content_filter");
  const std::string messages_url =
      "http://127.0.0.1:" + std::to_string(server_->http_port()) + "/v1/messages";
  const std::string messages = json{{"model", "auto"},
                                    {"max_tokens", 12},
                                    {"messages", {{{"role", "user"}, {"content", "hello"}}}}}
                                   .dump();
  HttpResult anthropic = HttpPost(messages_url, messages);
  ASSERT_EQ(anthropic.status, 200) << anthropic.body;
  EXPECT_EQ(json::parse(anthropic.body)["stop_reason"], "refusal");
  auto stub = v1::Switchyard::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(server_->grpc_port()), grpc::InsecureChannelCredentials()));
  v1::ChatRequest request;
  v1::Message* message = request.add_messages();
  message->set_role("user");
  message->set_content("hello");
  grpc::ClientContext context;
  v1::ChatResponse response;
  ASSERT_TRUE(stub->Chat(&context, request, &response).ok());
  EXPECT_EQ(response.finish_reason(), "content_filter");
}

}  // namespace
}  // namespace switchyard::gateway
