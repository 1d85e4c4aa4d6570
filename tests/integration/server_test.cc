// The real gateway (HTTP + gRPC servers, config, policy, metrics) on loopback port 0, with
// scripted backends standing in for the engine and the providers.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gateway/config.h"
#include "gateway/server.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "switchyard/v1/switchyard.grpc.pb.h"
#include "tests/support/fake_backend.h"
#include "tests/support/http_client.h"
#include "tests/support/subprocess.h"

namespace switchyard::gateway {
namespace {

using ::switchyard::testing::FakeBackend;
using ::switchyard::testing::FakeScript;
using ::switchyard::testing::Script;
using ::switchyard::testing::HttpGet;
using ::switchyard::testing::HttpOptions;
using ::switchyard::testing::HttpPost;
using ::switchyard::testing::HttpResult;
using ::switchyard::testing::SseData;
using ::testing::HasSubstr;
using json = nlohmann::json;

constexpr char kConfig[] = R"EOF(
listeners:
  http: 127.0.0.1:0
  grpc: 127.0.0.1:0
auth:
  allow_unauthenticated: true
limits:
  max_body_bytes: 4096
  drain_timeout_seconds: 10
targets:
  - name: local
    kind: local
    model: stories260K.gguf
  - name: cloud
    kind: openai_compatible
    base_url: http://127.0.0.1:9/v1
    model: gpt-test
policy:
  default: cloud
  rules:
    - name: keep-sensitive-local
      description: Confidential material stays on this host
      when:
        keywords: [confidential]
      route: local
    - name: block-forbidden
      when:
        keywords: [forbidden]
      deny: "forbidden topics are refused"
)EOF";

// Polls `done` every 5 ms until it holds or `timeout` passes; the caller asserts what it needs.
void WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

class ServerTest : public ::testing::Test {
 protected:
  virtual std::string ConfigText() const { return kConfig; }

  void SetUp() override {
    absl::StatusOr<Config> config = ParseConfig(ConfigText(), "test.yaml", "");
    ASSERT_TRUE(config.ok()) << config.status();
    local_ = std::make_shared<FakeBackend>(Script({"Once", " upon", " a time"}));
    cloud_ = std::make_shared<FakeBackend>(Script({"Hello", ", ", "world"}));
    ServerOptions options;
    options.backend_factory = [this](const TargetConfig& target, const Config&)
        -> absl::StatusOr<std::shared_ptr<backends::Backend>> {
      if (target.name == "local") return std::shared_ptr<backends::Backend>(local_);
      return std::shared_ptr<backends::Backend>(cloud_);
    };
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(*std::move(config), options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    base_ = "http://127.0.0.1:" + std::to_string(server_->http_port());
  }

  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  HttpResult Chat(const std::string& body, HttpOptions options = {}) {
    return HttpPost(base_ + "/v1/chat/completions", body, options);
  }

  std::unique_ptr<v1::Switchyard::Stub> Stub() {
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->grpc_port()),
                                       grpc::InsecureChannelCredentials());
    return v1::Switchyard::NewStub(channel);
  }

  // Runs StreamChat with one user message; returns every chunk and sets `status`.
  std::vector<v1::ChatChunk> StreamChat(const std::string& content, grpc::Status& status) {
    auto stub = Stub();
    v1::ChatRequest request;
    request.add_messages()->set_content(content);
    request.mutable_messages(0)->set_role("user");
    grpc::ClientContext context;
    auto reader = stub->StreamChat(&context, request);
    std::vector<v1::ChatChunk> chunks;
    v1::ChatChunk chunk;
    while (reader->Read(&chunk)) chunks.push_back(chunk);
    status = reader->Finish();
    return chunks;
  }

  static std::string UserMessage(const std::string& text, const std::string& extra = "") {
    return json{{"model", "auto"}, {"messages", {{{"role", "user"}, {"content", text}}}}}
               .dump()
               .insert(1, extra);
  }

  std::shared_ptr<FakeBackend> local_;
  std::shared_ptr<FakeBackend> cloud_;
  std::unique_ptr<Server> server_;
  std::string base_;
};

TEST_F(ServerTest, ListeningLineNamesBothPorts) {
  EXPECT_EQ(server_->ListeningLine(),
            "listening http=127.0.0.1:" + std::to_string(server_->http_port()) +
                " grpc=127.0.0.1:" + std::to_string(server_->grpc_port()));
  EXPECT_NE(server_->http_port(), 0);
  EXPECT_NE(server_->grpc_port(), 0);
}

TEST_F(ServerTest, HealthzAndModels) {
  HttpResult health = HttpGet(base_ + "/healthz");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(json::parse(health.body)["status"], "ok");

  HttpResult models = HttpGet(base_ + "/v1/models");
  ASSERT_EQ(models.status, 200);
  json body = json::parse(models.body);
  EXPECT_EQ(body["object"], "list");
  ASSERT_EQ(body["data"].size(), 3u);
  EXPECT_EQ(body["data"][0]["id"], "auto");
  EXPECT_EQ(body["data"][1]["id"], "local");
  EXPECT_EQ(body["data"][1]["locality"], "local");
  EXPECT_EQ(body["data"][2]["id"], "cloud");
  EXPECT_EQ(body["data"][2]["locality"], "remote");
}

TEST_F(ServerTest, NonStreamingChatGoesToDefaultTarget) {
  HttpResult result = Chat(UserMessage("Say hello", R"("max_tokens":7,"temperature":0,)"));
  ASSERT_EQ(result.status, 200) << result.body;
  EXPECT_EQ(result.headers["x-switchyard-target"], "cloud");
  EXPECT_EQ(result.headers["x-switchyard-rule"], "default");
  EXPECT_THAT(result.headers["x-switchyard-policy-version"], HasSubstr("sha256:"));
  EXPECT_THAT(result.headers["content-type"], HasSubstr("application/json"));
  json body = json::parse(result.body);
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_THAT(body["id"].get<std::string>(), ::testing::StartsWith("chatcmpl-"));
  EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(body["choices"][0]["message"]["content"], "Hello, world");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(body["usage"]["completion_tokens"], 3);
  EXPECT_EQ(body["usage"]["total_tokens"], 6);

  ASSERT_EQ(cloud_->requests().size(), 1u);
  const backends::ChatRequest& sent = cloud_->requests()[0];
  EXPECT_EQ(sent.max_tokens, 7);
  EXPECT_EQ(sent.temperature, 0.0f);
  ASSERT_EQ(sent.messages.size(), 1u);
  EXPECT_EQ(sent.messages[0].content, "Say hello");
  EXPECT_EQ(local_->started(), 0);
}

TEST_F(ServerTest, SensitiveRequestStaysLocal) {
  HttpResult result = Chat(UserMessage("This is CONFIDENTIAL: the merger plan"));
  ASSERT_EQ(result.status, 200) << result.body;
  EXPECT_EQ(result.headers["x-switchyard-target"], "local");
  EXPECT_EQ(result.headers["x-switchyard-rule"], "keep-sensitive-local");
  EXPECT_EQ(json::parse(result.body)["choices"][0]["message"]["content"], "Once upon a time");
  EXPECT_EQ(cloud_->started(), 0);
  EXPECT_EQ(local_->started(), 1);
}

TEST_F(ServerTest, SensitiveRequestStaysLocalEvenWhenRemoteTargetNamed) {
  std::string body = json{{"model", "cloud"},
                          {"messages", {{{"role", "user"}, {"content", "confidential numbers"}}}}}
                         .dump();
  HttpResult result = Chat(body);
  ASSERT_EQ(result.status, 200) << result.body;
  EXPECT_EQ(result.headers["x-switchyard-target"], "local");
  EXPECT_EQ(cloud_->started(), 0);
}

TEST_F(ServerTest, NamedTargetIsUsedWhenPolicyAllows) {
  std::string body = json{{"model", "local"},
                          {"messages", {{{"role", "user"}, {"content", "a story please"}}}}}
                         .dump();
  HttpResult result = Chat(body);
  ASSERT_EQ(result.status, 200) << result.body;
  EXPECT_EQ(result.headers["x-switchyard-target"], "local");
}

TEST_F(ServerTest, DeniedRequestIs403WithPolicyMessage) {
  HttpResult result = Chat(UserMessage("tell me about forbidden things"));
  EXPECT_EQ(result.status, 403);
  EXPECT_EQ(result.headers["x-switchyard-rule"], "block-forbidden");
  json body = json::parse(result.body);
  EXPECT_EQ(body["error"]["type"], "permission_error");
  EXPECT_THAT(body["error"]["message"].get<std::string>(),
              HasSubstr("forbidden topics are refused"));
  EXPECT_EQ(cloud_->started() + local_->started(), 0);
}

TEST_F(ServerTest, StreamingChatIsOpenAiSse) {
  HttpResult result = Chat(UserMessage("Say hello", R"("stream":true,)"));
  ASSERT_EQ(result.status, 200) << result.body;
  EXPECT_THAT(result.headers["content-type"], HasSubstr("text/event-stream"));
  EXPECT_EQ(result.headers["x-switchyard-target"], "cloud");
  std::vector<std::string> events = SseData(result.body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  json first = json::parse(events.front());
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    json chunk = json::parse(events[i]);
    EXPECT_EQ(chunk["id"], first["id"]);
    if (chunk["choices"][0]["delta"].contains("content")) {
      text += chunk["choices"][0]["delta"]["content"].get<std::string>();
    }
  }
  EXPECT_EQ(text, "Hello, world");
  json last = json::parse(events[events.size() - 2]);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  // Usage comes only when asked for (stream_options.include_usage).
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    EXPECT_FALSE(json::parse(events[i]).contains("usage")) << events[i];
  }
}

// A burst of deltas from a backend faster than the client: the sink hands events to the
// connection in batches, and every token still arrives as its own SSE event, in order, before
// the final chunk and [DONE].
TEST_F(ServerTest, StreamingBurstKeepsEveryEventInOrder) {
  constexpr int kDeltas = 2000;
  std::vector<std::string> deltas;
  for (int i = 0; i < kDeltas; ++i) deltas.push_back(absl::StrCat(i, " "));
  cloud_->set_script(Script(deltas));
  HttpResult result = Chat(UserMessage("Say hello", R"("stream":true,)"));
  ASSERT_EQ(result.status, 200) << result.body;
  std::vector<std::string> events = SseData(result.body);
  // One per delta (the first also carries the role), the finish chunk, [DONE].
  ASSERT_EQ(events.size(), static_cast<size_t>(kDeltas) + 2) << result.body.substr(0, 500);
  EXPECT_EQ(events.back(), "[DONE]");
  for (int i = 0; i < kDeltas; ++i) {
    json chunk = json::parse(events[static_cast<size_t>(i)]);
    ASSERT_EQ(chunk["choices"][0]["delta"]["content"], deltas[static_cast<size_t>(i)]) << i;
  }
  EXPECT_EQ(json::parse(events[events.size() - 2])["choices"][0]["finish_reason"], "stop");
}

// As OpenAI does: the usage is in the last chunk (with no choices) and in no other, so a
// client that adds up every usage it sees (LangChain does) counts the tokens once.
TEST_F(ServerTest, StreamingWithIncludeUsageSendsUsageChunk) {
  HttpResult result =
      Chat(UserMessage("hi", R"("stream":true,"stream_options":{"include_usage":true},)"));
  ASSERT_EQ(result.status, 200);
  std::vector<std::string> events = SseData(result.body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  json usage_chunk = json::parse(events[events.size() - 2]);
  EXPECT_TRUE(usage_chunk["choices"].empty());
  EXPECT_EQ(usage_chunk["usage"]["total_tokens"], 6);
  EXPECT_EQ(json::parse(events[events.size() - 3])["choices"][0]["finish_reason"], "stop");
  int64_t total_tokens = 0;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json chunk = json::parse(events[i]);
    if (chunk.contains("usage") && !chunk["usage"].is_null()) {
      total_tokens += chunk["usage"]["total_tokens"].get<int64_t>();
    }
  }
  EXPECT_EQ(total_tokens, 6);
}

TEST_F(ServerTest, BadRequestsGetPreciseErrors) {
  struct Case {
    std::string body;
    long status;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"{not json", 400, "not valid JSON"},
      {"[1,2]", 400, "must be a JSON object"},
      {R"({"model":"auto"})", 400, "'messages' is required"},
      {R"({"messages":"hi"})", 400, "'messages' must be a list"},
      {R"({"messages":[]})", 400, "at least one message"},
      {R"({"messages":[{"role":"robot","content":"x"}]})", 400, "messages[0].role"},
      {R"({"messages":[{"role":"user","content":5}]})", 400, "messages[0].content"},
      {R"({"messages":[{"role":"user","content":"x"}],"max_tokens":"ten"})", 400,
       "'max_tokens' must be an integer"},
      {R"({"messages":[{"role":"user","content":"x"}],"temperature":9})", 400,
       "'temperature' must be between 0 and 2"},
      {R"({"messages":[{"role":"user","content":"x"}],"stream":"yes"})", 400, "'stream'"},
      // Reporting this one's position used to throw out of the handler and end the process.
      {R"({"messages":[{"role":"user","content":"x"}],"temperature":1e400})", 400,
       "number overflow"},
      {R"({"messages":[{"role":"user","content":"x"}],"model":"gpt-9"})", 404,
       "model 'gpt-9' does not exist"},
      {"{\"messages\":[{\"role\":\"user\",\"content\":\"bad \xff\xfe utf8\"}]}", 400,
       "not valid JSON"},
  };
  for (const Case& c : cases) {
    HttpResult result = Chat(c.body);
    EXPECT_EQ(result.status, c.status) << c.body;
    json body = json::parse(result.body, nullptr, false);
    ASSERT_FALSE(body.is_discarded()) << result.body;
    EXPECT_THAT(body["error"]["message"].get<std::string>(), HasSubstr(c.message)) << c.body;
  }
  EXPECT_EQ(cloud_->started() + local_->started(), 0);
}

TEST_F(ServerTest, OversizedBodyIs413) {
  std::string big = UserMessage(std::string(8192, 'a'));
  HttpResult result = Chat(big);
  EXPECT_EQ(result.status, 413);
  EXPECT_THAT(result.body, HasSubstr("exceeds the limit of 4096 bytes"));
}

// An unknown path is 404 whatever the method; 405 is for a path that exists.
TEST_F(ServerTest, UnknownPathAndMethod) {
  EXPECT_EQ(HttpGet(base_ + "/v2/nothing").status, 404);
  HttpResult post = HttpPost(base_ + "/v1/embeddings", R"({"input":"hi"})");
  EXPECT_EQ(post.status, 404);
  EXPECT_EQ(post.headers.count("allow"), 0u);
  EXPECT_EQ(json::parse(post.body)["error"]["code"], "not_found");
  EXPECT_EQ(HttpGet(base_ + "/v1/chat/completions").status, 405);
  EXPECT_EQ(HttpPost(base_ + "/healthz", "{}").status, 405);
}

TEST_F(ServerTest, UpstreamErrorsMapTo502And504) {
  cloud_->set_script(Script({}, {}, absl::UnavailableError("upstream returned HTTP 500")));
  HttpResult bad_gateway = Chat(UserMessage("hi"));
  EXPECT_EQ(bad_gateway.status, 502);
  EXPECT_EQ(json::parse(bad_gateway.body)["error"]["type"], "upstream_error");

  cloud_->set_script(Script({}, {}, absl::DeadlineExceededError("upstream timed out")));
  HttpResult timeout = Chat(UserMessage("hi"));
  EXPECT_EQ(timeout.status, 504);
}

TEST_F(ServerTest, StreamBrokenMidwayEndsWithErrorEventNotDone) {
  cloud_->set_script(Script({"partial"}, {}, absl::UnavailableError("connection reset")));
  HttpResult result = Chat(UserMessage("hi", R"("stream":true,)"));
  ASSERT_EQ(result.status, 200);
  std::vector<std::string> events = SseData(result.body);
  ASSERT_FALSE(events.empty());
  EXPECT_NE(events.back(), "[DONE]");
  json last = json::parse(events.back());
  EXPECT_THAT(last["error"]["message"].get<std::string>(), HasSubstr("connection reset"));
}

TEST_F(ServerTest, ClientDisconnectCancelsBackendWork) {
  cloud_->set_script(Script(std::vector<std::string>(200, "tok"), std::chrono::milliseconds(20)));
  HttpOptions options;
  int pieces = 0;
  options.on_data = [&pieces](const std::string&) { return ++pieces < 3; };
  HttpResult result = Chat(UserMessage("long story", R"("stream":true,)"), options);
  EXPECT_EQ(result.status, 0);  // we aborted
  WaitUntil([&] { return cloud_->cancelled() != 0; }, std::chrono::milliseconds(2000));
  EXPECT_EQ(cloud_->cancelled(), 1);
}

TEST_F(ServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  // libcurl reuses connections per easy handle only; several requests in a row must all work
  // whether or not they share a connection, and the server must not mix responses.
  for (int i = 0; i < 5; ++i) {
    HttpResult result = Chat(UserMessage("hi " + std::to_string(i)));
    ASSERT_EQ(result.status, 200);
  }
  EXPECT_EQ(cloud_->started(), 5);
}

// A plain loopback connection to the HTTP port, for what an HTTP client library hides:
// requests sent back to back, or while an answer is still being made, and hanging up mid-request.
class RawConnection {
 public:
  // A `receive_buffer` (bytes) is set before connecting, so the window the server sees is small;
  // a `send_buffer` keeps a large send from fitting in the kernel before the server reads it.
  explicit RawConnection(uint16_t port, int receive_buffer = 0, int send_buffer = 0)
      : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    if (receive_buffer > 0) {
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer));
    }
    if (send_buffer > 0) {
      ::setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &send_buffer, sizeof(send_buffer));
    }
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(port);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
    timeval timeout{.tv_sec = 5, .tv_usec = 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  }
  ~RawConnection() { Close(); }

  bool connected() const { return connected_; }
  // Whether a read found the connection closed by the server (end of stream or reset).
  bool peer_closed() const { return peer_closed_; }
  bool Send(const std::string& bytes) {
    return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(bytes.size());
  }
  // What arrives until `done` says enough, the server closes, or 5 s pass without a byte.
  std::string ReadUntil(const std::function<bool(const std::string&)>& done) {
    std::string received;
    char chunk[4096];
    while (!done(received)) {
      const ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) peer_closed_ = true;
      if (n <= 0) break;
      received.append(chunk, static_cast<size_t>(n));
    }
    return received;
  }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
  bool connected_ = false;
  bool peer_closed_ = false;
};

std::string ChatRequestBytes(const std::string& body) {
  return absl::StrCat("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                      "Content-Type: application/json\r\nContent-Length: ", body.size(),
                      "\r\n\r\n", body);
}

size_t Count(const std::string& text, const std::string& what) {
  size_t count = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++count;
  return count;
}

// A client that writes its whole oversized body before it reads (Python's urllib and httpx do)
// gets the 413 every time: the gateway drains what it did not read before it closes. A close
// with input unread resets the connection, and the client's write fails (EPIPE) or the answer is
// lost.
TEST_F(ServerTest, OversizedBodyWrittenWholeBeforeReadingStillGets413) {
  const std::string request =
      absl::StrCat("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                   "Content-Type: application/json\r\nContent-Length: ", 2 << 20, "\r\n\r\n",
                   std::string(2 << 20, 'a'));
  const auto whole_answer = [](const std::string& bytes) {
    const size_t end = bytes.find("\r\n\r\n");
    const size_t at = bytes.find("Content-Length: ");
    return end != std::string::npos && at != std::string::npos && at < end &&
           bytes.size() >= end + 4 + std::stoul(bytes.substr(at + 16));
  };
  for (int i = 0; i < 20; ++i) {
    // With a 64 KiB send buffer most of the body is still to send when the 413 is written.
    RawConnection connection(server_->http_port(), 0, 64 * 1024);
    ASSERT_TRUE(connection.connected());
    EXPECT_TRUE(connection.Send(request)) << "try " << i << ": " << std::strerror(errno);
    const std::string answer = connection.ReadUntil(whole_answer);
    EXPECT_TRUE(answer.starts_with("HTTP/1.1 413 ")) << "try " << i << ": " << answer;
    EXPECT_THAT(answer, HasSubstr("exceeds the limit of 4096 bytes")) << "try " << i;
  }
}

// Requests written back to back in one send, and one written while the first is being answered
// (the connection is watched then): each gets its own answer on the same connection.
TEST_F(ServerTest, PipelinedRequestsAreEachAnswered) {
  RawConnection connection(server_->http_port());
  ASSERT_TRUE(connection.connected());
  ASSERT_TRUE(connection.Send(ChatRequestBytes(UserMessage("one")) +
                              ChatRequestBytes(UserMessage("two"))));
  const auto two_answers = [](const std::string& received) {
    return Count(received, "\"Hello, world\"") >= 2;
  };
  std::string received = connection.ReadUntil(two_answers);
  EXPECT_EQ(Count(received, "HTTP/1.1 200 OK"), 2u) << received;
  EXPECT_EQ(cloud_->started(), 2);

  cloud_->set_script(Script({"Hello", ", ", "world"}, std::chrono::milliseconds(100)));
  ASSERT_TRUE(connection.Send(ChatRequestBytes(UserMessage("three"))));
  WaitUntil([&] { return cloud_->started() >= 3; }, std::chrono::milliseconds(1000));
  ASSERT_EQ(cloud_->started(), 3);
  ASSERT_TRUE(connection.Send(ChatRequestBytes(UserMessage("four"))));
  received = connection.ReadUntil(two_answers);
  EXPECT_EQ(Count(received, "HTTP/1.1 200 OK"), 2u) << received;
  EXPECT_EQ(cloud_->started(), 4);
  EXPECT_EQ(cloud_->cancelled(), 0);
}

// Response heads byte for byte, for what a client library normalises away: the status line, the
// field names' spelling, Content-Length or chunked, and Connection as HTTP/1.0 and 1.1 need it.
TEST_F(ServerTest, ResponseHeadsOnTheWire) {
  // One exchange on a new connection: the head, and whether the server then closed.
  struct Exchange {
    std::string head;
    std::string body;
    bool closed = false;
  };
  const auto exchange = [&](const std::string& version, const std::string& fields,
                            const std::string& path, const std::string& body) {
    RawConnection connection(server_->http_port());
    EXPECT_TRUE(connection.connected());
    const std::string method = body.empty() ? "GET " : "POST ";
    EXPECT_TRUE(connection.Send(absl::StrCat(
        method, path, " HTTP/", version, "\r\nHost: 127.0.0.1\r\n", fields,
        body.empty() ? "" : absl::StrCat("Content-Type: application/json\r\nContent-Length: ",
                                         body.size(), "\r\n"),
        "\r\n", body)));
    // Everything until the answer is complete (by Content-Length, or the last chunk).
    const std::string received = connection.ReadUntil([](const std::string& bytes) {
      const size_t end = bytes.find("\r\n\r\n");
      if (end == std::string::npos) return false;
      if (const size_t at = bytes.find("Content-Length: "); at != std::string::npos && at < end) {
        return bytes.size() >= end + 4 + std::stoul(bytes.substr(at + 16));
      }
      return bytes.ends_with("0\r\n\r\n");
    });
    Exchange result;
    const size_t end = received.find("\r\n\r\n");
    EXPECT_NE(end, std::string::npos) << received;
    result.head = received.substr(0, end + 4);
    result.body = received.substr(end + 4);
    // A kept connection answers a second request; a closed one reads end-of-stream at once.
    connection.Send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    result.closed = connection
                        .ReadUntil([](const std::string& bytes) {
                          return bytes.find("\r\n\r\n") != std::string::npos;
                        })
                        .empty();
    return result;
  };

  const std::string chat = UserMessage("hi");
  Exchange kept = exchange("1.1", "", "/v1/chat/completions", chat);
  EXPECT_TRUE(kept.head.starts_with("HTTP/1.1 200 OK\r\n")) << kept.head;
  EXPECT_THAT(kept.head, HasSubstr("\r\nServer: switchyard\r\n"));
  EXPECT_THAT(kept.head, HasSubstr("\r\nContent-Type: application/json\r\n"));
  EXPECT_THAT(kept.head, HasSubstr("\r\nx-switchyard-target: cloud\r\n"));
  EXPECT_THAT(kept.head, HasSubstr("\r\nx-switchyard-served-by: cloud\r\n"));
  EXPECT_THAT(kept.head, HasSubstr(absl::StrCat("\r\nContent-Length: ", kept.body.size(), "\r\n")));
  EXPECT_THAT(kept.head, ::testing::Not(HasSubstr("Connection")));
  EXPECT_EQ(json::parse(kept.body)["choices"][0]["message"]["content"], "Hello, world");
  EXPECT_FALSE(kept.closed);

  Exchange closing = exchange("1.1", "Connection: close\r\n", "/v1/chat/completions", chat);
  EXPECT_THAT(closing.head, HasSubstr("\r\nConnection: close\r\n"));
  EXPECT_TRUE(closing.closed);

  Exchange old = exchange("1.0", "", "/v1/chat/completions", chat);
  EXPECT_TRUE(old.head.starts_with("HTTP/1.0 200 OK\r\n")) << old.head;
  EXPECT_THAT(old.head, ::testing::Not(HasSubstr("Connection")));
  EXPECT_TRUE(old.closed);

  Exchange old_kept = exchange("1.0", "Connection: keep-alive\r\n", "/v1/chat/completions", chat);
  EXPECT_THAT(old_kept.head, HasSubstr("\r\nConnection: keep-alive\r\n"));
  EXPECT_FALSE(old_kept.closed);

  Exchange stream = exchange("1.1", "", "/v1/chat/completions",
                             UserMessage("hi", R"("stream":true,)"));
  EXPECT_TRUE(stream.head.starts_with("HTTP/1.1 200 OK\r\n")) << stream.head;
  EXPECT_THAT(stream.head, HasSubstr("\r\nContent-Type: text/event-stream\r\n"));
  EXPECT_THAT(stream.head, HasSubstr("\r\nCache-Control: no-cache\r\n"));
  EXPECT_THAT(stream.head, HasSubstr("\r\nTransfer-Encoding: chunked\r\n"));
  EXPECT_THAT(stream.head, HasSubstr("\r\nx-switchyard-target: cloud\r\n"));
  EXPECT_THAT(stream.head, ::testing::Not(HasSubstr("Content-Length")));
  EXPECT_THAT(stream.body, HasSubstr("data: [DONE]"));

  // No chunks for HTTP/1.0, which has none (RFC 9112, section 6.1): the stream is the body as
  // it is, and the connection's end is the stream's, whatever the client asked.
  Exchange old_stream = exchange("1.0", "Connection: keep-alive\r\n", "/v1/chat/completions",
                                 UserMessage("hi", R"("stream":true,)"));
  EXPECT_TRUE(old_stream.head.starts_with("HTTP/1.0 200 OK\r\n")) << old_stream.head;
  EXPECT_THAT(old_stream.head, HasSubstr("\r\nContent-Type: text/event-stream\r\n"));
  EXPECT_THAT(old_stream.head, ::testing::Not(HasSubstr("Transfer-Encoding")));
  EXPECT_THAT(old_stream.head, ::testing::Not(HasSubstr("Connection")));
  EXPECT_TRUE(old_stream.body.starts_with("data: {")) << old_stream.body;
  EXPECT_TRUE(old_stream.body.ends_with("data: [DONE]\n\n")) << old_stream.body;
  EXPECT_TRUE(old_stream.closed);

  Exchange missing = exchange("1.1", "", "/nowhere", "");
  EXPECT_TRUE(missing.head.starts_with("HTTP/1.1 404 Not Found\r\n")) << missing.head;
  EXPECT_THAT(missing.head,
              HasSubstr(absl::StrCat("\r\nContent-Length: ", missing.body.size(), "\r\n")));
}

// A client that sent `Expect: 100-continue` waits for the interim answer before it sends its
// body (curl for 1 s, others longer): it comes as soon as the head is read. A request that came
// whole gets no interim answer, and one whose body is too large gets the 413 instead.
TEST_F(ServerTest, ExpectContinueIsAnsweredBeforeTheBody) {
  const std::string body = UserMessage("hi");
  const std::string head = absl::StrCat(
      "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n",
      "Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: ");
  const auto whole_answer = [](const std::string& bytes) {
    const size_t end = bytes.find("\r\n\r\n");
    const size_t at = bytes.find("Content-Length: ");
    return end != std::string::npos && at != std::string::npos && at < end &&
           bytes.size() >= end + 4 + std::stoul(bytes.substr(at + 16));
  };
  RawConnection connection(server_->http_port());
  ASSERT_TRUE(connection.connected());
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(connection.Send(absl::StrCat(head, body.size(), "\r\n\r\n")));
  const std::string interim = connection.ReadUntil([](const std::string& bytes) {
    return bytes.find("\r\n\r\n") != std::string::npos;
  });
  EXPECT_EQ(interim, "HTTP/1.1 100 Continue\r\n\r\n");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
  ASSERT_TRUE(connection.Send(body));
  std::string answer = connection.ReadUntil(whole_answer);
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 200 OK\r\n")) << answer;
  EXPECT_THAT(answer, HasSubstr("\"Hello, world\""));

  ASSERT_TRUE(connection.Send(absl::StrCat(head, body.size(), "\r\n\r\n", body)));
  answer = connection.ReadUntil(whole_answer);
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 200 OK\r\n")) << answer;

  ASSERT_TRUE(connection.Send(absl::StrCat(head, "100000\r\n\r\n")));
  answer = connection.ReadUntil(whole_answer);
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 413 ")) << answer;
  EXPECT_EQ(cloud_->started(), 2);
}

// HEAD answers as GET does without the body, and a wrong method's 405 says which are allowed.
TEST_F(ServerTest, HeadHasNoBodyAndMethodNotAllowedSaysWhatIs) {
  RawConnection connection(server_->http_port());
  ASSERT_TRUE(connection.connected());
  // The HEAD's answer, then at once the GET's on the same connection: had the HEAD's body been
  // sent, it would stand between the two heads.
  ASSERT_TRUE(connection.Send("HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                              "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  const std::string body = R"({"status":"ok"})";
  const std::string both = connection.ReadUntil([&](const std::string& bytes) {
    return bytes.ends_with("\r\n\r\n" + body);
  });
  const size_t first_end = both.find("\r\n\r\n");
  ASSERT_NE(first_end, std::string::npos) << both;
  const std::string head = both.substr(0, first_end + 4);
  EXPECT_TRUE(head.starts_with("HTTP/1.1 200 OK\r\n")) << head;
  EXPECT_THAT(head, HasSubstr(absl::StrCat("\r\nContent-Length: ", body.size(), "\r\n")));
  EXPECT_TRUE(both.substr(first_end + 4).starts_with("HTTP/1.1 200 OK\r\n")) << both;
  EXPECT_EQ(Count(both, body), 1u) << both;

  for (const auto& [request, allow] : std::vector<std::pair<std::string, std::string>>{
           {"DELETE /healthz", "GET, HEAD"},
           {"GET /v1/chat/completions", "POST"},
           {"PUT /v1/messages", "POST"},
           {"GET /v1/route/explain", "POST"}}) {
    ASSERT_TRUE(connection.Send(request + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    const std::string answer = connection.ReadUntil([](const std::string& bytes) {
      const size_t end = bytes.find("\r\n\r\n");
      const size_t at = bytes.find("Content-Length: ");
      return end != std::string::npos && at != std::string::npos &&
             bytes.size() >= end + 4 + std::stoul(bytes.substr(at + 16));
    });
    EXPECT_TRUE(answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n")) << answer;
    EXPECT_THAT(answer, HasSubstr("\r\nAllow: " + allow + "\r\n")) << request;
  }

  // A request that cannot be read, after a HEAD: its error still has a body.
  ASSERT_TRUE(connection.Send("HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                              "GET /healthz HTTP/1.1\r\nNo colon here\r\n\r\n"));
  const std::string last = connection.ReadUntil([](const std::string& bytes) {
    return bytes.find("malformed HTTP request") != std::string::npos;
  });
  EXPECT_THAT(last, HasSubstr("HTTP/1.1 400 Bad Request\r\n"));
  EXPECT_THAT(last, HasSubstr("malformed HTTP request")) << last;
}

// On a kept connection, an answer carries only its own exchange's headers: a request after a
// chat request shows neither that request's decision nor its id (a proxy may pool one
// connection for many users). And a request that cannot be read is answered in HTTP/1.1, not in
// the version of the request before it.
TEST_F(ServerTest, AnAnswerCarriesOnlyItsOwnExchangesHeaders) {
  RawConnection connection(server_->http_port());
  ASSERT_TRUE(connection.connected());
  const auto one_answer = [](const std::string& bytes) {
    const size_t end = bytes.find("\r\n\r\n");
    const size_t at = bytes.find("Content-Length: ");
    return end != std::string::npos && at != std::string::npos && at < end &&
           bytes.size() >= end + 4 + std::stoul(bytes.substr(at + 16));
  };
  ASSERT_TRUE(connection.Send(ChatRequestBytes(UserMessage("hi"))));
  const std::string chat = connection.ReadUntil(one_answer);
  ASSERT_THAT(chat, HasSubstr("\r\nx-switchyard-target: cloud\r\n"));
  ASSERT_THAT(chat, HasSubstr("\r\nx-request-id: "));

  for (const std::string& request :
       {std::string("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
        std::string("GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
        ChatRequestBytes("{not json")}) {
    ASSERT_TRUE(connection.Send(request));
    const std::string answer = connection.ReadUntil(one_answer);
    EXPECT_THAT(answer, ::testing::Not(HasSubstr("x-switchyard"))) << answer;
    EXPECT_THAT(answer, ::testing::Not(HasSubstr("x-request-id"))) << answer;
  }

  RawConnection old(server_->http_port());
  ASSERT_TRUE(old.connected());
  ASSERT_TRUE(old.Send("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
  EXPECT_TRUE(old.ReadUntil(one_answer).starts_with("HTTP/1.0 200 OK\r\n"));
  ASSERT_TRUE(old.Send("GET /healthz HTTP/1.0\r\nNo colon here\r\n\r\n"));
  const std::string broken = old.ReadUntil(one_answer);
  EXPECT_TRUE(broken.starts_with("HTTP/1.1 400 Bad Request\r\n")) << broken;
}

// A client that hangs up while its (non-streamed) answer is being made: the backend's work stops.
TEST_F(ServerTest, ClientHangingUpMidRequestCancelsBackendWork) {
  cloud_->set_script(Script(std::vector<std::string>(200, "tok"), std::chrono::milliseconds(20)));
  RawConnection connection(server_->http_port());
  ASSERT_TRUE(connection.connected());
  ASSERT_TRUE(connection.Send(ChatRequestBytes(UserMessage("long story"))));
  WaitUntil([&] { return cloud_->started() != 0; }, std::chrono::milliseconds(1000));
  ASSERT_EQ(cloud_->started(), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  connection.Close();
  WaitUntil([&] { return cloud_->cancelled() != 0; }, std::chrono::milliseconds(2000));
  EXPECT_EQ(cloud_->cancelled(), 1) << "the backend ran on for a client that was gone";
}

TEST_F(ServerTest, GrpcChatStreamExplainAndList) {
  auto stub = Stub();
  v1::ChatRequest request;
  request.add_messages()->set_content("hello there");
  request.mutable_messages(0)->set_role("user");

  {
    grpc::ClientContext context;
    v1::ChatResponse response;
    grpc::Status status = stub->Chat(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.content(), "Hello, world");
    EXPECT_EQ(response.finish_reason(), "stop");
    EXPECT_EQ(response.usage().total_tokens(), 6);
    EXPECT_EQ(response.decision().target(), "cloud");
    EXPECT_EQ(response.decision().rule(), "default");
    EXPECT_EQ(response.decision().locality(), "remote");
    EXPECT_THAT(response.id(), ::testing::StartsWith("chatcmpl-"));
  }
  {
    grpc::ClientContext context;
    auto reader = stub->StreamChat(&context, request);
    v1::ChatChunk chunk;
    std::string text;
    std::vector<v1::ChatChunk> chunks;
    while (reader->Read(&chunk)) chunks.push_back(chunk);
    ASSERT_TRUE(reader->Finish().ok());
    ASSERT_GE(chunks.size(), 2u);
    EXPECT_TRUE(chunks.front().has_decision());
    EXPECT_EQ(chunks.front().decision().target(), "cloud");
    for (const v1::ChatChunk& c : chunks) text += c.delta();
    EXPECT_EQ(text, "Hello, world");
    EXPECT_EQ(chunks.back().finish_reason(), "stop");
    EXPECT_EQ(chunks.back().usage().completion_tokens(), 3);
  }
  {
    v1::ChatRequest sensitive = request;
    sensitive.mutable_messages(0)->set_content("confidential roadmap");
    grpc::ClientContext context;
    v1::ExplainResponse response;
    ASSERT_TRUE(stub->Explain(&context, sensitive, &response).ok());
    EXPECT_EQ(response.decision().target(), "local");
    EXPECT_EQ(response.decision().rule(), "keep-sensitive-local");
    EXPECT_EQ(local_->started(), 0);  // Explain does not execute
  }
  {
    v1::ChatRequest denied = request;
    denied.mutable_messages(0)->set_content("forbidden");
    grpc::ClientContext context;
    v1::ExplainResponse response;
    ASSERT_TRUE(stub->Explain(&context, denied, &response).ok());
    EXPECT_TRUE(response.decision().denied());
    EXPECT_EQ(response.decision().rule(), "block-forbidden");
  }
  {
    grpc::ClientContext context;
    v1::ListModelsResponse response;
    ASSERT_TRUE(stub->ListModels(&context, v1::ListModelsRequest(), &response).ok());
    ASSERT_EQ(response.models_size(), 3);
    EXPECT_EQ(response.models(1).id(), "local");
    EXPECT_EQ(response.models(2).model(), "gpt-test");
  }
}

// A backend faster than the stream's writes: deltas that arrive while a write is in flight go
// out together, so the client gets every byte in order in fewer messages than deltas, and the
// last message still carries finish_reason and usage.
TEST_F(ServerTest, GrpcStreamMergesDeltasThatArriveDuringAWrite) {
  constexpr int kDeltas = 2000;
  std::vector<std::string> deltas;
  std::string expected;
  for (int i = 0; i < kDeltas; ++i) {
    deltas.push_back(absl::StrCat(i, " "));
    expected += deltas.back();
  }
  cloud_->set_script(Script(deltas));
  grpc::Status status;
  std::vector<v1::ChatChunk> chunks = StreamChat("hello there", status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_GE(chunks.size(), 2u);
  EXPECT_TRUE(chunks.front().has_decision());
  EXPECT_EQ(chunks.front().delta(), "");
  std::string text;
  for (size_t i = 0; i < chunks.size(); ++i) {
    text += chunks[i].delta();
    if (i + 1 < chunks.size()) {
      EXPECT_EQ(chunks[i].finish_reason(), "") << "chunk " << i;
    }
  }
  EXPECT_EQ(text, expected);
  EXPECT_LT(chunks.size(), static_cast<size_t>(kDeltas)) << chunks.size() << " chunks";
  EXPECT_EQ(chunks.back().finish_reason(), "stop");
  EXPECT_EQ(chunks.back().usage().completion_tokens(), 3);  // the script's usage
}

// Deltas that arrived together (a burst, as from one network read) go out as one chunk.
TEST_F(ServerTest, GrpcStreamSendsABurstAsOneChunk) {
  FakeScript script = Script({"Once", " upon", " a", " time"});
  script.burst = true;
  cloud_->set_script(script);
  grpc::Status status;
  std::vector<v1::ChatChunk> chunks = StreamChat("hello there", status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  int with_text = 0;
  for (const v1::ChatChunk& c : chunks) {
    if (c.delta().empty()) continue;
    ++with_text;
    EXPECT_EQ(c.delta(), "Once upon a time");
  }
  EXPECT_EQ(with_text, 1);
  EXPECT_EQ(chunks.back().finish_reason(), "stop");
}

TEST_F(ServerTest, GrpcErrorsUseCanonicalCodes) {
  auto stub = Stub();
  {
    grpc::ClientContext context;
    v1::ChatResponse response;
    grpc::Status status = stub->Chat(&context, v1::ChatRequest(), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("messages"));
  }
  {
    v1::ChatRequest request;
    request.set_model("nope");
    request.add_messages()->set_role("user");
    grpc::ClientContext context;
    v1::ChatResponse response;
    EXPECT_EQ(stub->Chat(&context, request, &response).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    v1::ChatRequest request;
    auto* message = request.add_messages();
    message->set_role("user");
    message->set_content("forbidden");
    grpc::ClientContext context;
    auto reader = stub->StreamChat(&context, request);
    v1::ChatChunk chunk;
    while (reader->Read(&chunk)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    cloud_->set_script(Script({}, {}, absl::UnavailableError("upstream down")));
    v1::ChatRequest request;
    auto* message = request.add_messages();
    message->set_role("user");
    message->set_content("hi");
    grpc::ClientContext context;
    v1::ChatResponse response;
    EXPECT_EQ(stub->Chat(&context, request, &response).error_code(),
              grpc::StatusCode::UNAVAILABLE);
  }
}

TEST_F(ServerTest, GrpcCancelCancelsBackendWork) {
  cloud_->set_script(Script(std::vector<std::string>(500, "x"), std::chrono::milliseconds(10)));
  auto stub = Stub();
  v1::ChatRequest request;
  auto* message = request.add_messages();
  message->set_role("user");
  message->set_content("long");
  grpc::ClientContext context;
  auto reader = stub->StreamChat(&context, request);
  v1::ChatChunk chunk;
  ASSERT_TRUE(reader->Read(&chunk));  // the decision
  ASSERT_TRUE(reader->Read(&chunk));  // a first delta
  context.TryCancel();
  while (reader->Read(&chunk)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  WaitUntil([&] { return cloud_->cancelled() != 0; }, std::chrono::milliseconds(2000));
  EXPECT_EQ(cloud_->cancelled(), 1);
}

TEST_F(ServerTest, GrpcHealthServiceIsServing) {
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->grpc_port()),
                                     grpc::InsecureChannelCredentials());
  grpc::ClientContext context;
  grpc::ByteBuffer response;
  // grpc.health.v1.Health/Check with an empty HealthCheckRequest; SERVING is field 1 = 1.
  grpc::GenericStub generic(channel);
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1);  // an empty HealthCheckRequest (service "")
  grpc::Status status;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  generic.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                    &response, [&](grpc::Status s) {
                      std::lock_guard<std::mutex> lock(mu);
                      status = s;
                      done = true;
                      cv.notify_one();
                    });
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return done; }));
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));
}

TEST_F(ServerTest, MetricsCountRequestsAndPassPromtool) {
  ASSERT_EQ(Chat(UserMessage("hi")).status, 200);
  ASSERT_EQ(Chat(UserMessage("confidential")).status, 200);
  ASSERT_EQ(Chat(UserMessage("forbidden")).status, 403);
  ASSERT_EQ(Chat("{broken").status, 400);

  HttpResult metrics = HttpGet(base_ + "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_THAT(metrics.headers["content-type"], HasSubstr("text/plain; version=0.0.4"));
  const std::string& text = metrics.body;
  EXPECT_THAT(text, HasSubstr("switchyard_requests_total{tenant=\"anonymous\",target=\"cloud\","
                              "rule=\"default\",locality=\"remote\",outcome=\"ok\"} 1"));
  EXPECT_THAT(text, HasSubstr("switchyard_requests_total{tenant=\"anonymous\",target=\"local\","
                              "rule=\"keep-sensitive-local\",locality=\"local\",outcome=\"ok\"} 1"));
  EXPECT_THAT(text, HasSubstr("switchyard_requests_rejected_total{rule=\"block-forbidden\","
                              "outcome=\"denied\"} 1"));
  EXPECT_THAT(text, HasSubstr("switchyard_requests_rejected_total{rule=\"\","
                              "outcome=\"invalid_request\"} 1"));
  EXPECT_THAT(text, HasSubstr("switchyard_tokens_prompt_total{target=\"cloud\"} 3"));
  EXPECT_THAT(text, HasSubstr("switchyard_tokens_completion_total{target=\"local\"} 3"));
  EXPECT_THAT(text, HasSubstr("switchyard_request_duration_seconds_count{target=\"cloud\","
                              "outcome=\"ok\"} 1"));
  EXPECT_THAT(text, HasSubstr("switchyard_build_info{version="));

  if (access("/usr/bin/promtool", X_OK) != 0) GTEST_SKIP() << "promtool not installed";
  testing::RunResult check = testing::RunCommand({"/usr/bin/promtool", "check", "metrics"}, text);
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

TEST_F(ServerTest, ExplainEndpointDecidesWithoutRunning) {
  HttpResult result = HttpPost(base_ + "/v1/route/explain",
                               UserMessage("CONFIDENTIAL: write to bob@acmecorp.io"));
  ASSERT_EQ(result.status, 200) << result.body;
  json decision = json::parse(result.body);
  EXPECT_EQ(decision["target"], "local");
  EXPECT_EQ(decision["rule"], "keep-sensitive-local");
  EXPECT_EQ(decision["locality"], "local");
  EXPECT_EQ(decision["denied"], false);
  EXPECT_THAT(decision["policy_version"].get<std::string>(), ::testing::StartsWith("sha256:"));
  ASSERT_EQ(decision["sensitivity"]["findings"].size(), 1u);
  const json& finding = decision["sensitivity"]["findings"][0];
  EXPECT_EQ(finding["type"], "email");
  EXPECT_EQ(finding["start"], 23);
  EXPECT_EQ(finding["end"], 38);
  EXPECT_EQ(decision["sensitivity"]["level"], "internal");
  EXPECT_THAT(result.body, ::testing::Not(HasSubstr("bob@acmecorp.io")));

  HttpResult denied = HttpPost(base_ + "/v1/route/explain", UserMessage("forbidden"));
  ASSERT_EQ(denied.status, 200);
  EXPECT_EQ(json::parse(denied.body)["denied"], true);
  EXPECT_EQ(local_->started() + cloud_->started(), 0);
}

TEST_F(ServerTest, ResponsesNameSensitivityAndFindingTypes) {
  HttpResult result = Chat(UserMessage("call +1 415 555 0100 or mail a@b.io"));
  ASSERT_EQ(result.status, 200);
  EXPECT_EQ(result.headers["x-switchyard-sensitivity"], "internal");
  EXPECT_EQ(result.headers["x-switchyard-findings"], "email,phone");
}

TEST_F(ServerTest, ReloadSwapsPolicyAtomicallyAndRefusesBadFiles) {
  const std::string path = ::testing::TempDir() + "/reload_test.yaml";
  std::string changed = kConfig;
  changed.replace(changed.find("keywords: [confidential]"), 24, "keywords: [classified]");
  std::ofstream(path) << changed;

  // A slow request in flight keeps the runtime it started with.
  cloud_->set_script(Script({"slow"}, std::chrono::milliseconds(300)));
  HttpResult slow;
  std::thread client([&] { slow = Chat(UserMessage("hello")); });
  WaitUntil([&] { return cloud_->started() != 0; }, std::chrono::milliseconds(1000));
  const std::string before = server_->gateway().runtime()->config.version;
  ASSERT_TRUE(server_->ReloadFromFile(path).ok());
  EXPECT_NE(server_->gateway().runtime()->config.version, before);
  client.join();
  EXPECT_EQ(slow.status, 200);
  EXPECT_EQ(slow.headers["x-switchyard-policy-version"], before);

  HttpResult now = Chat(UserMessage("classified memo"));
  EXPECT_EQ(now.headers["x-switchyard-target"], "local");
  EXPECT_NE(now.headers["x-switchyard-policy-version"], before);
  HttpResult old_keyword = Chat(UserMessage("confidential memo"));
  EXPECT_EQ(old_keyword.headers["x-switchyard-target"], "cloud");

  // A broken file is refused; the reloaded config keeps serving.
  std::ofstream(path) << "targets: [\n";
  const std::string good = server_->gateway().runtime()->config.version;
  absl::Status refused = server_->ReloadFromFile(path);
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.message()), HasSubstr(path + ":"));
  EXPECT_EQ(server_->gateway().runtime()->config.version, good);
  EXPECT_EQ(Chat(UserMessage("classified")).headers["x-switchyard-target"], "local");

  const std::string metrics = HttpGet(base_ + "/metrics").body;
  EXPECT_THAT(metrics, HasSubstr("switchyard_config_reloads_total{outcome=\"ok\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("switchyard_config_reloads_total{outcome=\"error\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("switchyard_policy_info{policy_version=\"" + good + "\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("switchyard_policy_info{policy_version=\"" + before + "\"} 0"));
  // The backends of unchanged targets were kept, not rebuilt.
  EXPECT_EQ(server_->gateway().runtime()->backends.at("cloud").get(), cloud_.get());
}

TEST_F(ServerTest, ShutdownDrainsInFlightRequests) {
  cloud_->set_script(Script({"slow", " answer"}, std::chrono::milliseconds(300)));
  HttpResult result;
  std::thread client([&] { result = Chat(UserMessage("take your time")); });
  WaitUntil([&] { return cloud_->started() != 0; }, std::chrono::milliseconds(1000));
  server_->Shutdown();
  client.join();
  EXPECT_EQ(result.status, 200) << result.error;
  EXPECT_EQ(json::parse(result.body)["choices"][0]["message"]["content"], "slow answer");
  server_.reset();
}

// With no thread count given, one HTTP thread per CPU the process may use.
TEST_F(ServerTest, OneHttpThreadPerUsableCpu) {
  cpu_set_t usable;
  ASSERT_EQ(sched_getaffinity(0, sizeof(usable), &usable), 0);
  EXPECT_EQ(server_->http_threads(), CPU_COUNT(&usable));
}

// The same server, started from a thread pinned to one CPU (as under taskset): its threads
// inherit that affinity, and it runs one HTTP thread.
class PinnedServerTest : public ServerTest {
 protected:
  void SetUp() override {
    cpu_set_t saved;
    ASSERT_EQ(pthread_getaffinity_np(pthread_self(), sizeof(saved), &saved), 0);
    cpu_set_t one;
    CPU_ZERO(&one);
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &saved)) {
        CPU_SET(cpu, &one);
        break;
      }
    }
    ASSERT_EQ(pthread_setaffinity_np(pthread_self(), sizeof(one), &one), 0);
    ServerTest::SetUp();
    ASSERT_EQ(pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved), 0);
  }
};

TEST_F(PinnedServerTest, RunsOneHttpThreadAndServes) {
  EXPECT_EQ(server_->http_threads(), 1);
  HttpResult result = Chat(UserMessage("hi"));
  EXPECT_EQ(result.status, 200) << result.error;
}

// The same server with its HTTP threads polling 2 ms for the next event before they sleep.
class BusyPollServerTest : public ServerTest {
 protected:
  std::string ConfigText() const override {
    std::string text = kConfig;
    const std::string grpc = "  grpc: 127.0.0.1:0\n";
    return text.insert(text.find(grpc) + grpc.size(), "  busy_poll_microseconds: 2000\n");
  }
};

double ProcessCpuSeconds() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

// Requests and streams are served as without polling; once idle the threads sleep again (a
// thread that kept polling would burn a whole core here); shutdown stops them.
TEST_F(BusyPollServerTest, ServesThenSleepsWhenIdleAndShutsDown) {
  for (int i = 0; i < 10; ++i) {
    HttpResult result = Chat(UserMessage("hi " + std::to_string(i)));
    ASSERT_EQ(result.status, 200) << result.error;
    EXPECT_EQ(json::parse(result.body)["choices"][0]["message"]["content"], "Hello, world");
  }
  HttpResult stream = Chat(UserMessage("hi", R"("stream":true,)"));
  ASSERT_EQ(stream.status, 200) << stream.error;
  EXPECT_THAT(stream.body, HasSubstr("data: [DONE]"));
  EXPECT_EQ(cloud_->started(), 11);

  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // past every thread's last poll
  const double before = ProcessCpuSeconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_LT(ProcessCpuSeconds() - before, 0.15) << "an idle server kept polling";

  const auto started = std::chrono::steady_clock::now();
  server_->Shutdown();
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
  server_.reset();
}

// The same server with other limits for clients that stop reading a stream.
class SlowReaderServerTest : public ServerTest {
 protected:
  virtual std::string LimitLines() const = 0;

  std::string ConfigText() const override {
    std::string text = kConfig;
    const std::string limits = "limits:\n";
    return text.insert(text.find(limits) + limits.size(), LimitLines());
  }

  // Asks for a stream of 64 KiB events, one every 10 ms for 4 s (far more than the socket
  // buffers between the gateway and its client hold), from a client with a 4 KiB receive buffer
  // that never reads: the gateway must cancel the backend well before the stream would end,
  // meter the request as cancelled, close the connection, and leave nothing for a drain to wait
  // on.
  void ExpectClientThatStopsReadingIsDropped() {
    cloud_->set_script(Script(std::vector<std::string>(400, std::string(64 * 1024, 'x')),
                              std::chrono::milliseconds(10)));
    RawConnection connection(server_->http_port(), 4096);
    ASSERT_TRUE(connection.connected());
    const auto start = std::chrono::steady_clock::now();
    ASSERT_TRUE(connection.Send(ChatRequestBytes(UserMessage("long story", R"("stream":true,)"))));
    WaitUntil([&] { return cloud_->cancelled() != 0; }, std::chrono::milliseconds(3500));
    ASSERT_EQ(cloud_->cancelled(), 1) << "the backend ran on for a client that stopped reading";
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(3500));

    // What the gateway had written still arrives, then the end of the connection, without the
    // stream's last chunk.
    const std::string received = connection.ReadUntil([](const std::string&) { return false; });
    EXPECT_TRUE(connection.peer_closed());
    EXPECT_TRUE(received.starts_with("HTTP/1.1 200 OK\r\n")) << received.substr(0, 200);
    EXPECT_FALSE(received.ends_with("0\r\n\r\n"));
    const std::string cancelled =
        "switchyard_requests_total{tenant=\"anonymous\",target=\"cloud\",rule=\"default\","
        "locality=\"remote\",outcome=\"cancelled\"} 1";
    WaitUntil([&] { return HttpGet(base_ + "/metrics").body.find(cancelled) != std::string::npos; },
              std::chrono::milliseconds(2000));
    EXPECT_THAT(HttpGet(base_ + "/metrics").body, HasSubstr(cancelled));
    const auto drain_start = std::chrono::steady_clock::now();
    server_->Shutdown();  // its timeout is 10 s
    EXPECT_LT(std::chrono::steady_clock::now() - drain_start, std::chrono::seconds(2));
  }
};

// A write may go 1 s without progress; the stream buffer is too large to matter here.
class WriteTimeoutServerTest : public SlowReaderServerTest {
 protected:
  std::string LimitLines() const override {
    return "  write_timeout_seconds: 1\n  max_stream_buffer_bytes: 67108864\n";
  }
};

TEST_F(WriteTimeoutServerTest, ClientThatStopsReadingIsDroppedWhenAWriteStalls) {
  ExpectClientThatStopsReadingIsDropped();
}

// 256 KiB of a stream may wait for the client; the write timeout is the default 120 s.
class StreamBufferServerTest : public SlowReaderServerTest {
 protected:
  std::string LimitLines() const override { return "  max_stream_buffer_bytes: 262144\n"; }
};

TEST_F(StreamBufferServerTest, ClientThatStopsReadingIsDroppedWhenTheStreamBufferIsFull) {
  ExpectClientThatStopsReadingIsDropped();
}

}  // namespace
}  // namespace switchyard::gateway
