// The Anthropic client dialect (POST /v1/messages) on the real gateway, against mock upstreams of
// every provider kind: any client dialect reaches any target, in its own wire format both ways.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gateway/config.h"
#include "gateway/server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/mocks/mock_upstream.h"
#include "tests/support/http_client.h"

namespace switchyard::gateway {
namespace {

using ::switchyard::mocks::Behaviour;
using ::switchyard::testing::HttpGet;
using ::switchyard::testing::HttpOptions;
using ::switchyard::testing::HttpPost;
using ::switchyard::testing::HttpResult;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

struct NamedEvent {
  std::string name;
  json data;
};

// Splits an SSE body into (event name, parsed data) pairs, in order.
std::vector<NamedEvent> NamedEvents(const std::string& body) {
  std::vector<NamedEvent> events;
  NamedEvent current;
  size_t start = 0;
  while (start < body.size()) {
    size_t end = body.find('\n', start);
    if (end == std::string::npos) end = body.size();
    const std::string line = body.substr(start, end - start);
    start = end + 1;
    if (line.rfind("event: ", 0) == 0) {
      current.name = line.substr(7);
    } else if (line.rfind("data: ", 0) == 0) {
      current.data = json::parse(line.substr(6), nullptr, false);
    } else if (line.empty() && !current.name.empty()) {
      events.push_back(std::move(current));
      current = NamedEvent{};
    }
  }
  return events;
}

std::vector<std::string> Names(const std::vector<NamedEvent>& events) {
  std::vector<std::string> names;
  for (const NamedEvent& event : events) names.push_back(event.name);
  return names;
}

std::string StreamedText(const std::vector<NamedEvent>& events) {
  std::string text;
  for (const NamedEvent& event : events) {
    if (event.name == "content_block_delta") text += event.data["delta"]["text"].get<std::string>();
  }
  return text;
}

// Sends `request` on a new loopback connection; returns what comes back until the server closes.
std::string RawExchange(uint16_t port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  timeval timeout{.tv_sec = 5, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::string received;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size())) {
    char chunk[4096];
    for (ssize_t n; (n = ::recv(fd, chunk, sizeof(chunk), 0)) > 0;) {
      received.append(chunk, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  return received;
}

class MessagesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("NO_PROXY", "127.0.0.1,localhost", 1);
    setenv("no_proxy", "127.0.0.1,localhost", 1);
    auto upstream = mocks::MockUpstream::Start();
    ASSERT_TRUE(upstream.ok()) << upstream.status();
    upstream_ = *std::move(upstream);
    const std::string timeouts =
        "timeouts: { connect_seconds: 2, first_byte_seconds: 5, idle_seconds: 5, "
        "total_seconds: 10 }";
    const std::string yaml = R"(
listeners: { http: 127.0.0.1:0, grpc: 127.0.0.1:0 }
auth: { allow_unauthenticated: true }
targets:
  - { name: claude, kind: anthropic, model: claude-upstream, base_url: ")" +
                             upstream_->base_url() + R"(", )" + timeouts + R"( }
  - { name: gem, kind: gemini, model: gemini-upstream, base_url: ")" +
                             upstream_->gemini_base_url() + R"(", )" + timeouts + R"( }
  - { name: gpt, kind: openai_compatible, model: gpt-upstream, base_url: ")" +
                             upstream_->base_url() + R"(", )" + timeouts + R"( }
policy:
  default: claude
)";
    absl::StatusOr<Config> config = ParseConfig(yaml, "messages_test.yaml", "");
    ASSERT_TRUE(config.ok()) << config.status();
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(*std::move(config));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    base_ = "http://127.0.0.1:" + std::to_string(server_->http_port());
  }

  HttpResult Messages(const json& body) {
    HttpOptions options;
    options.timeout_seconds = 20;
    options.headers = {"Content-Type: application/json", "anthropic-version: 2023-06-01",
                       "x-api-key: ignored-by-the-gateway"};
    return HttpPost(base_ + "/v1/messages", body.dump(), options);
  }

  static json Body(const std::string& model, bool stream) {
    return json{{"model", model},
                {"max_tokens", 32},
                {"stream", stream},
                {"system", "Be brief."},
                {"messages", {{{"role", "user"}, {"content", "Say hello"}}}}};
  }

  std::unique_ptr<mocks::MockUpstream> upstream_;
  std::unique_ptr<Server> server_;
  std::string base_;
};

TEST_F(MessagesTest, NonStreamingAnswerHasAnthropicsShape) {
  Behaviour behaviour;
  behaviour.prompt_tokens = 12;
  behaviour.completion_tokens = 4;
  upstream_->SetBehaviour(behaviour);
  HttpResult result = Messages(Body("claude", false));
  ASSERT_EQ(result.status, 200) << result.body;
  EXPECT_EQ(result.headers["content-type"], "application/json");
  EXPECT_EQ(result.headers["x-switchyard-target"], "claude");
  json body = json::parse(result.body);
  EXPECT_THAT(body["id"].get<std::string>(), ::testing::StartsWith("msg_"));
  body.erase("id");
  EXPECT_EQ(body, json::parse(R"({
    "type": "message", "role": "assistant", "model": "claude",
    "content": [{"type": "text", "text": "Hello, world!"}],
    "stop_reason": "end_turn", "stop_sequence": null,
    "usage": {"input_tokens": 12, "output_tokens": 4}})"));
  // The upstream got the system prompt top-level, in its own wire format.
  ASSERT_EQ(upstream_->request_count(), 1u);
  const json sent = json::parse(upstream_->requests()[0].body);
  EXPECT_EQ(sent["system"], "Be brief.");
  EXPECT_EQ(sent["max_tokens"], 32);
}

TEST_F(MessagesTest, StreamFollowsTheExactEventSequence) {
  Behaviour behaviour;
  behaviour.prompt_tokens = 9;
  behaviour.finish_reason = "length";
  upstream_->SetBehaviour(behaviour);
  HttpResult result = Messages(Body("claude", true));
  ASSERT_EQ(result.status, 200) << result.body;
  EXPECT_THAT(result.headers["content-type"], HasSubstr("text/event-stream"));
  const std::vector<NamedEvent> events = NamedEvents(result.body);
  EXPECT_THAT(Names(events),
              ElementsAre("message_start", "content_block_start", "ping", "content_block_delta",
                          "content_block_delta", "content_block_delta", "content_block_delta",
                          "content_block_stop", "message_delta", "message_stop"))
      << result.body;
  for (const NamedEvent& event : events) EXPECT_EQ(event.data["type"], event.name);
  EXPECT_EQ(StreamedText(events), "Hello, world!");
  EXPECT_EQ(events[0].data["message"]["role"], "assistant");
  EXPECT_EQ(events[1].data["content_block"], json::parse(R"({"type":"text","text":""})"));
  const json& delta = events[8].data;
  EXPECT_EQ(delta["delta"]["stop_reason"], "max_tokens");
  EXPECT_EQ(delta["usage"]["input_tokens"], 9);
  EXPECT_EQ(delta["usage"]["output_tokens"], 4);
}

TEST_F(MessagesTest, AnyClientDialectReachesAnyTarget) {
  for (const std::string target : {"gem", "gpt"}) {
    HttpResult plain = Messages(Body(target, false));
    ASSERT_EQ(plain.status, 200) << target << plain.body;
    EXPECT_EQ(json::parse(plain.body)["content"][0]["text"], "Hello, world!") << target;
    HttpResult streamed = Messages(Body(target, true));
    ASSERT_EQ(streamed.status, 200) << target << streamed.body;
    const std::vector<NamedEvent> events = NamedEvents(streamed.body);
    EXPECT_EQ(StreamedText(events), "Hello, world!") << target;
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().name, "message_stop") << target;
  }
  const std::vector<mocks::RecordedRequest> sent = upstream_->requests();
  ASSERT_EQ(sent.size(), 4u);
  // Upstream calls stream exactly when the client asked for a stream.
  EXPECT_EQ(sent[0].target, "/v1beta/models/gemini-upstream:generateContent");
  EXPECT_EQ(sent[1].target, "/v1beta/models/gemini-upstream:streamGenerateContent?alt=sse");
  EXPECT_EQ(sent[2].target, "/v1/chat/completions");
  // And an OpenAI client reaches the Anthropic target.
  HttpOptions options;
  options.timeout_seconds = 20;
  HttpResult openai = HttpPost(
      base_ + "/v1/chat/completions",
      R"({"model":"claude","messages":[{"role":"user","content":"hi"}]})", options);
  ASSERT_EQ(openai.status, 200) << openai.body;
  EXPECT_EQ(json::parse(openai.body)["choices"][0]["message"]["content"], "Hello, world!");
  EXPECT_EQ(upstream_->requests().back().target, "/v1/messages");
}

TEST_F(MessagesTest, InvalidRequestsGetAnthropicErrors) {
  struct Case {
    std::string body;
    int status;
    std::string type;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"{not json", 400, "invalid_request_error", "request body is not valid JSON"},
      {R"({"model":"claude","max_tokens":1e400,"messages":[]})", 400, "invalid_request_error",
       "number overflow"},
      {R"({"model":"claude","messages":[{"role":"user","content":"x"}]})", 400,
       "invalid_request_error", "'max_tokens' is required"},
      {R"({"model":"claude","max_tokens":5,"messages":[{"role":"system","content":"x"}]})", 400,
       "invalid_request_error", "'messages[0].role' must be \"user\" or \"assistant\""},
      {R"({"model":"claude","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image"}]}]})",
       400, "invalid_request_error", "'messages[0].content[0].type' 'image' is not supported"},
      {R"({"model":"claude","max_tokens":5,"messages":[{"role":"user","content":"x"},{"role":"assistant"}]})",
       400, "invalid_request_error", "'messages[1].content' is required"},
      {R"({"model":"claude","max_tokens":5,"system":7,"messages":[{"role":"user","content":"x"}]})",
       400, "invalid_request_error", "'system' must be a string or a list of content blocks"},
      {R"({"model":"claude","max_tokens":5,"temperature":1.5,"messages":[{"role":"user","content":"x"}]})",
       400, "invalid_request_error", "'temperature' must be between 0 and 1"},
      {R"({"model":"nope","max_tokens":5,"messages":[{"role":"user","content":"x"}]})", 404,
       "not_found_error", "nope"},
  };
  for (const Case& c : cases) {
    HttpResult result = HttpPost(base_ + "/v1/messages", c.body);
    EXPECT_EQ(result.status, c.status) << c.body << " -> " << result.body;
    json body = json::parse(result.body, nullptr, false);
    ASSERT_TRUE(body.is_object()) << result.body;
    EXPECT_EQ(body["type"], "error") << result.body;
    EXPECT_EQ(body["error"]["type"], c.type) << result.body;
    EXPECT_THAT(body["error"]["message"].get<std::string>(), HasSubstr(c.message)) << c.body;
  }
  HttpResult get = HttpGet(base_ + "/v1/messages");
  EXPECT_EQ(get.status, 405);
  EXPECT_EQ(json::parse(get.body)["error"]["type"], "invalid_request_error");
  EXPECT_EQ(upstream_->request_count(), 0u);
}

// The answers given before a body is read (too large; not HTTP) are Anthropic's too.
TEST_F(MessagesTest, BodyTooLargeAndMalformedHttpGetAnthropicErrors) {
  json big = Body("claude", false);
  big["system"] = std::string(2 << 20, 'a');  // over the default limit of 1 MiB
  HttpResult too_large = Messages(big);
  EXPECT_EQ(too_large.status, 413) << too_large.error;
  json body = json::parse(too_large.body, nullptr, false);
  EXPECT_EQ(body["type"], "error") << too_large.body;
  EXPECT_EQ(body["error"]["type"], "request_too_large") << too_large.body;
  EXPECT_THAT(body["error"]["message"].get<std::string>(), HasSubstr("exceeds the limit"));

  // A chunked body whose chunk size is not a number.
  const std::string malformed = RawExchange(
      server_->http_port(),
      "POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
      "zz\r\n{}\r\n0\r\n\r\n");
  ASSERT_TRUE(malformed.starts_with("HTTP/1.1 400 Bad Request\r\n")) << malformed;
  body = json::parse(malformed.substr(malformed.find("\r\n\r\n") + 4), nullptr, false);
  EXPECT_EQ(body["type"], "error") << malformed;
  EXPECT_EQ(body["error"]["type"], "invalid_request_error") << malformed;
  EXPECT_THAT(body["error"]["message"].get<std::string>(), HasSubstr("malformed HTTP request"));

  // Elsewhere, OpenAI's shape as before.
  const std::string openai = RawExchange(
      server_->http_port(),
      "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
      "\r\nzz\r\n{}\r\n0\r\n\r\n");
  body = json::parse(openai.substr(openai.find("\r\n\r\n") + 4), nullptr, false);
  EXPECT_EQ(body["error"]["code"], "malformed_http") << openai;
  EXPECT_EQ(upstream_->request_count(), 0u);
}

TEST_F(MessagesTest, UpstreamErrorsKeepTheirMeaning) {
  Behaviour failing;
  failing.kind = Behaviour::Kind::kHttpError;
  failing.http_status = 500;
  failing.error_message = "boom";
  upstream_->SetBehaviour(failing);
  HttpResult result = Messages(Body("claude", true));
  // A failure before the first delta is a plain HTTP error, not a stream.
  EXPECT_EQ(result.status, 502) << result.body;
  json body = json::parse(result.body);
  EXPECT_EQ(body["type"], "error");
  EXPECT_EQ(body["error"]["type"], "api_error");
  EXPECT_THAT(body["error"]["message"].get<std::string>(),
              HasSubstr("upstream returned HTTP 500: api_error: boom"));
}

TEST_F(MessagesTest, StreamBrokenMidwayEndsWithAnErrorEventAndNoMessageStop) {
  Behaviour broken;
  broken.kind = Behaviour::Kind::kResetMidStream;
  broken.reset_after_tokens = 2;
  upstream_->SetBehaviour(broken);
  for (const std::string target : {"claude", "gem", "gpt"}) {
    HttpResult result = Messages(Body(target, true));
    ASSERT_EQ(result.status, 200) << target << result.body;
    const std::vector<NamedEvent> events = NamedEvents(result.body);
    ASSERT_FALSE(events.empty()) << target;
    EXPECT_EQ(events.back().name, "error") << target << result.body;
    EXPECT_EQ(events.back().data["type"], "error");
    EXPECT_EQ(events.back().data["error"]["type"], "api_error");
    EXPECT_EQ(StreamedText(events), "Hello,") << target;
    for (const NamedEvent& event : events) EXPECT_NE(event.name, "message_stop") << target;
  }
}

}  // namespace
}  // namespace switchyard::gateway
