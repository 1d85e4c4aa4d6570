#include "tests/mocks/mock_upstream.h"

#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

#include "nlohmann/json.hpp"

namespace switchyard::mocks {
namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;
using TlsStream = ssl::stream<tcp::socket&>;
using Json = nlohmann::ordered_json;

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 529: return "Site Overloaded";
    default: return "Status";
  }
}

std::string OpenAiErrorType(int status) {
  if (status == 429) return "rate_limit_exceeded";
  if (status == 401) return "invalid_api_key";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

std::vector<std::pair<std::string, std::string>> RetryAfterHeader(const Behaviour& b) {
  std::vector<std::pair<std::string, std::string>> headers;
  if (b.retry_after_seconds.has_value()) {
    headers.emplace_back("Retry-After", std::to_string(*b.retry_after_seconds));
  }
  return headers;
}

int64_t CompletionTokens(const Behaviour& b) {
  return b.completion_tokens >= 0 ? b.completion_tokens : static_cast<int64_t>(b.tokens.size());
}

// The OpenAI Chat Completions dialect.
void ServeOpenAi(const RecordedRequest& request, const Behaviour& b, Responder& out) {
  if (b.delay.count() > 0 && !out.Wait(b.delay)) return;
  if (b.kind == Behaviour::Kind::kNeverAnswer) {
    out.WaitForClose();
    return;
  }
  if (b.kind == Behaviour::Kind::kHttpError) {
    Json error = {{"error",
                   {{"message", b.error_message},
                    {"type", OpenAiErrorType(b.http_status)},
                    {"param", nullptr},
                    {"code", nullptr}}}};
    out.Send(b.http_status, "application/json", error.dump(), RetryAfterHeader(b));
    return;
  }

  Json body = Json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (!body.is_object()) {
    Json error = {{"error", {{"message", "request body is not JSON"},
                             {"type", "invalid_request_error"}}}};
    out.Send(400, "application/json", error.dump());
    return;
  }
  const std::string model = body.value("model", std::string("mock-model"));
  const bool stream = body.value("stream", false) && !b.ignore_stream;
  const int64_t completion_tokens = CompletionTokens(b);
  Json usage = {{"prompt_tokens", b.prompt_tokens},
                {"completion_tokens", completion_tokens},
                {"total_tokens", b.prompt_tokens + completion_tokens}};

  if (!stream && b.kind == Behaviour::Kind::kMalformedSse && !b.malformed_data.empty()) {
    out.Send(200, "application/json", b.malformed_data);
    return;
  }
  if (!stream) {
    std::string text;
    for (const std::string& token : b.tokens) text += token;
    Json completion = {
        {"id", "chatcmpl-mock"},
        {"object", "chat.completion"},
        {"created", 1700000000},
        {"model", model},
        {"choices",
         Json::array({{{"index", 0},
                       {"message", {{"role", "assistant"}, {"content", text}}},
                       {"finish_reason", b.finish_reason}}})}};
    if (b.send_usage) completion["usage"] = usage;
    out.Send(200, "application/json", completion.dump());
    return;
  }

  auto chunk = [&](Json delta, Json finish_reason) {
    Json event = {{"id", "chatcmpl-mock"},
                  {"object", "chat.completion.chunk"},
                  {"created", 1700000000},
                  {"model", model},
                  {"choices", Json::array({{{"index", 0},
                                            {"delta", std::move(delta)},
                                            {"finish_reason", std::move(finish_reason)}}})}};
    return "data: " + event.dump() + "\n\n";
  };
  if (!out.StartStream(200, "text/event-stream")) return;
  if (!out.Write(chunk({{"role", "assistant"}, {"content", ""}}, nullptr))) return;
  int sent = 0;
  for (const std::string& token : b.tokens) {
    if (b.kind == Behaviour::Kind::kResetMidStream && sent == b.reset_after_tokens) {
      out.Reset();
      return;
    }
    if (b.kind == Behaviour::Kind::kStreamError && sent == b.reset_after_tokens) {
      Json error = {{"error", {{"message", b.error_message}, {"type", "server_error"}}}};
      if (out.Write("data: " + error.dump() + "\n\n")) out.End();
      return;
    }
    if (b.kind == Behaviour::Kind::kMalformedSse && sent == 1) {
      const std::string data = b.malformed_data.empty()
                                   ? "{\"choices\": [{\"delta\": {\"content\": \"broken"
                                   : b.malformed_data;
      if (!out.Write("data: " + data + "\n\n")) return;
    }
    if (b.token_delay.count() > 0 && !out.Wait(b.token_delay)) return;
    if (!out.Write(chunk({{"content", token}}, nullptr))) return;
    ++sent;
  }
  if (b.kind == Behaviour::Kind::kResetMidStream) {
    out.Reset();
    return;
  }
  if (!out.Write(chunk(Json::object(), b.finish_reason))) return;
  const bool include_usage = b.send_usage && body.contains("stream_options") &&
                             body["stream_options"].is_object() &&
                             body["stream_options"].value("include_usage", false);
  if (include_usage) {
    Json last = {{"id", "chatcmpl-mock"},
                 {"object", "chat.completion.chunk"},
                 {"created", 1700000000},
                 {"model", model},
                 {"choices", Json::array()},
                 {"usage", usage}};
    if (!out.Write("data: " + last.dump() + "\n\n")) return;
  }
  if (!out.Write("data: [DONE]\n\n")) return;
  out.End();
}

std::string AnthropicErrorType(int status) {
  switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 529: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
  }
}

Json AnthropicError(std::string_view type, std::string_view message) {
  return {{"type", "error"}, {"error", {{"type", type}, {"message", message}}}};
}

std::string AnthropicStopReason(const std::string& finish_reason) {
  if (finish_reason == "stop") return "end_turn";
  if (finish_reason == "length") return "max_tokens";
  return finish_reason;
}

// The Anthropic Messages dialect: POST /v1/messages, named SSE events when "stream": true.
void ServeAnthropic(const RecordedRequest& request, const Behaviour& b, Responder& out) {
  if (b.delay.count() > 0 && !out.Wait(b.delay)) return;
  if (b.kind == Behaviour::Kind::kNeverAnswer) {
    out.WaitForClose();
    return;
  }
  if (b.kind == Behaviour::Kind::kHttpError) {
    out.Send(b.http_status, "application/json",
             AnthropicError(AnthropicErrorType(b.http_status), b.error_message).dump(),
             RetryAfterHeader(b));
    return;
  }
  Json body = Json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (!body.is_object()) {
    out.Send(400, "application/json",
             AnthropicError("invalid_request_error", "request body is not JSON").dump());
    return;
  }
  if (!body.contains("max_tokens")) {
    out.Send(400, "application/json",
             AnthropicError("invalid_request_error", "max_tokens: Field required").dump());
    return;
  }
  const std::string model = body.value("model", std::string("mock-model"));
  const bool stream = body.value("stream", false) && !b.ignore_stream;
  const int64_t output_tokens = CompletionTokens(b);
  const std::string stop_reason = AnthropicStopReason(b.finish_reason);

  if (!stream) {
    std::string text;
    for (const std::string& token : b.tokens) text += token;
    Json message = {{"id", "msg_mock"},
                    {"type", "message"},
                    {"role", "assistant"},
                    {"model", model},
                    {"content", Json::array({{{"type", "text"}, {"text", text}}})},
                    {"stop_reason", stop_reason},
                    {"stop_sequence", nullptr}};
    if (b.send_usage) {
      message["usage"] = {{"input_tokens", b.prompt_tokens}, {"output_tokens", output_tokens}};
    }
    out.Send(200, "application/json", message.dump());
    return;
  }

  auto event = [](std::string_view name, const Json& data) {
    return "event: " + std::string(name) + "\ndata: " + data.dump() + "\n\n";
  };
  if (!out.StartStream(200, "text/event-stream; charset=utf-8")) return;
  Json start = {{"type", "message_start"},
                {"message",
                 {{"id", "msg_mock"},
                  {"type", "message"},
                  {"role", "assistant"},
                  {"model", model},
                  {"content", Json::array()},
                  {"stop_reason", nullptr},
                  {"stop_sequence", nullptr}}}};
  if (b.send_usage) {
    start["message"]["usage"] = {{"input_tokens", b.prompt_tokens}, {"output_tokens", 1}};
  }
  if (!out.Write(event("message_start", start))) return;
  if (!out.Write(event("content_block_start",
                       {{"type", "content_block_start"},
                        {"index", 0},
                        {"content_block", {{"type", "text"}, {"text", ""}}}}))) {
    return;
  }
  if (!out.Write(event("ping", {{"type", "ping"}}))) return;
  int sent = 0;
  for (const std::string& token : b.tokens) {
    if (b.kind == Behaviour::Kind::kResetMidStream && sent == b.reset_after_tokens) {
      out.Reset();
      return;
    }
    if (b.kind == Behaviour::Kind::kStreamError && sent == b.reset_after_tokens) {
      if (out.Write(event("error", AnthropicError("overloaded_error", b.error_message)))) out.End();
      return;
    }
    if (b.kind == Behaviour::Kind::kMalformedSse && sent == 1) {
      const std::string data = b.malformed_data.empty()
                                   ? "{\"type\": \"content_block_delta\", \"index"
                                   : b.malformed_data;
      if (!out.Write("event: content_block_delta\ndata: " + data + "\n\n")) return;
    }
    if (b.unknown_event && sent == 1) {
      if (!out.Write(event("future_event", {{"type", "future_event"}, {"detail", "x"}}))) return;
    }
    if (b.token_delay.count() > 0 && !out.Wait(b.token_delay)) return;
    if (!out.Write(event("content_block_delta",
                         {{"type", "content_block_delta"},
                          {"index", 0},
                          {"delta", {{"type", "text_delta"}, {"text", token}}}}))) {
      return;
    }
    ++sent;
  }
  if (b.kind == Behaviour::Kind::kResetMidStream) {
    out.Reset();
    return;
  }
  if (!out.Write(event("content_block_stop", {{"type", "content_block_stop"}, {"index", 0}}))) {
    return;
  }
  Json delta = {{"type", "message_delta"},
                {"delta", {{"stop_reason", stop_reason}, {"stop_sequence", nullptr}}}};
  if (b.send_usage) delta["usage"] = {{"output_tokens", output_tokens}};
  if (!out.Write(event("message_delta", delta))) return;
  if (!out.Write(event("message_stop", {{"type", "message_stop"}}))) return;
  out.End();
}

std::string GeminiStatus(int status) {
  switch (status) {
    case 400: return "INVALID_ARGUMENT";
    case 401: return "UNAUTHENTICATED";
    case 403: return "PERMISSION_DENIED";
    case 404: return "NOT_FOUND";
    case 429: return "RESOURCE_EXHAUSTED";
    case 503: return "UNAVAILABLE";
    case 504: return "DEADLINE_EXCEEDED";
    default: return status >= 500 ? "INTERNAL" : "FAILED_PRECONDITION";
  }
}

Json GeminiError(int status, std::string_view message) {
  return {{"error", {{"code", status}, {"message", message}, {"status", GeminiStatus(status)}}}};
}

std::string GeminiFinishReason(const std::string& finish_reason) {
  if (finish_reason == "stop") return "STOP";
  if (finish_reason == "length") return "MAX_TOKENS";
  return Lower(finish_reason) == finish_reason ? "OTHER" : finish_reason;
}

// The Gemini dialect: POST /v1beta/models/{model}:generateContent, and
// :streamGenerateContent (SSE with ?alt=sse, else one JSON array of chunks).
void ServeGemini(const RecordedRequest& request, const Behaviour& b, Responder& out) {
  if (b.delay.count() > 0 && !out.Wait(b.delay)) return;
  if (b.kind == Behaviour::Kind::kNeverAnswer) {
    out.WaitForClose();
    return;
  }
  if (b.kind == Behaviour::Kind::kHttpError) {
    out.Send(b.http_status, "application/json", GeminiError(b.http_status, b.error_message).dump(),
             RetryAfterHeader(b));
    return;
  }
  const std::string path = request.target.substr(0, request.target.find('?'));
  const size_t colon = path.rfind(':');
  const std::string method = colon == std::string::npos ? "" : path.substr(colon + 1);
  const bool sse = request.target.find("alt=sse") != std::string::npos;
  Json body = Json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (method != "generateContent" && method != "streamGenerateContent") {
    out.Send(404, "application/json", GeminiError(404, "method not found").dump());
    return;
  }
  if (!body.is_object() || !body.contains("contents") || !body["contents"].is_array() ||
      body["contents"].empty()) {
    out.Send(400, "application/json",
             GeminiError(400, "* GenerateContentRequest.contents: contents is not specified")
                 .dump());
    return;
  }
  const std::string model_version = path.substr(path.rfind('/') + 1, colon - path.rfind('/') - 1);
  const int64_t candidates_tokens = CompletionTokens(b);
  auto usage = [&](int64_t candidates) {
    return Json{{"promptTokenCount", b.prompt_tokens},
                {"candidatesTokenCount", candidates},
                {"totalTokenCount", b.prompt_tokens + candidates}};
  };
  auto response = [&](Json parts, const std::string* finish, int64_t candidates) {
    Json candidate = {{"content", {{"parts", std::move(parts)}, {"role", "model"}}}};
    if (finish != nullptr) candidate["finishReason"] = *finish;
    candidate["index"] = 0;
    Json chunk = {{"candidates", Json::array({std::move(candidate)})},
                  {"modelVersion", model_version}};
    if (b.send_usage) chunk["usageMetadata"] = usage(candidates);
    return chunk;
  };
  const std::string finish = GeminiFinishReason(b.finish_reason);

  if (method == "generateContent" || b.ignore_stream) {
    std::string text;
    for (const std::string& token : b.tokens) text += token;
    out.Send(200, "application/json",
             response(Json::array({{{"text", text}}}), &finish, candidates_tokens).dump());
    return;
  }
  if (!sse) {
    Json chunks = Json::array();
    for (size_t i = 0; i < b.tokens.size(); ++i) {
      const bool last = i + 1 == b.tokens.size();
      chunks.push_back(response(Json::array({{{"text", b.tokens[i]}}}), last ? &finish : nullptr,
                                static_cast<int64_t>(i + 1)));
    }
    out.Send(200, "application/json", chunks.dump());
    return;
  }
  if (!out.StartStream(200, "text/event-stream")) return;
  int sent = 0;
  for (size_t i = 0; i < b.tokens.size(); ++i) {
    if (b.kind == Behaviour::Kind::kResetMidStream && sent == b.reset_after_tokens) {
      out.Reset();
      return;
    }
    if (b.kind == Behaviour::Kind::kStreamError && sent == b.reset_after_tokens) {
      if (out.Write("data: " + GeminiError(503, b.error_message).dump() + "\r\n\r\n")) out.End();
      return;
    }
    if (b.kind == Behaviour::Kind::kMalformedSse && sent == 1) {
      const std::string data =
          b.malformed_data.empty() ? "{\"candidates\": [{\"content" : b.malformed_data;
      if (!out.Write("data: " + data + "\r\n\r\n")) return;
    }
    if (b.unknown_event && sent == 1) {
      Json parts = Json::array({{{"executableCode", {{"language", "PYTHON"}, {"code", "1"}}}}});
      if (!out.Write("data: " + response(std::move(parts), nullptr, sent).dump() + "\r\n\r\n")) {
        return;
      }
    }
    if (b.token_delay.count() > 0 && !out.Wait(b.token_delay)) return;
    // The last token's chunk carries the finish reason and the final usage, as Gemini's does.
    const bool last = i + 1 == b.tokens.size() && b.kind != Behaviour::Kind::kResetMidStream;
    const int64_t candidates = last ? candidates_tokens : static_cast<int64_t>(i + 1);
    if (!out.Write("data: " +
                   response(Json::array({{{"text", b.tokens[i]}}}), last ? &finish : nullptr,
                            candidates)
                       .dump() +
                   "\r\n\r\n")) {
      return;
    }
    ++sent;
  }
  if (b.kind == Behaviour::Kind::kResetMidStream) {
    out.Reset();
    return;
  }
  out.End();
}

}  // namespace

std::string RecordedRequest::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return value;
  }
  return {};
}

struct MockUpstream::State {
  net::io_context io;
  tcp::acceptor acceptor{io};
  uint16_t port = 0;
  std::thread accept_thread;
  std::atomic<bool> stopping{false};

  mutable std::mutex mu;
  mutable std::condition_variable changed;
  Behaviour default_behaviour;
  std::deque<Behaviour> queued;
  std::map<std::string, Handler> handlers;
  std::vector<RecordedRequest> requests;
  size_t aborted = 0;
  size_t accepted = 0;
  // Open connection sockets, so Stop() can wake their threads.
  std::set<int> open_fds;
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::list<Worker> workers;  // guarded by mu
  // TLS mode only.
  std::unique_ptr<ssl::context> tls;
  std::vector<std::string> alpn_offered;  // guarded by mu
  size_t tls_failures = 0;                // guarded by mu

  void AcceptLoop();
  void Serve(tcp::socket socket);
  static int SelectAlpn(SSL* ssl, const unsigned char** out, unsigned char* outlen,
                        const unsigned char* in, unsigned int inlen, void* arg);
  void NoteAborted() {
    if (stopping.load()) return;
    std::lock_guard<std::mutex> lock(mu);
    ++aborted;
    changed.notify_all();
  }
};

namespace {

class SocketResponder : public Responder {
 public:
  SocketResponder(tcp::socket& socket, TlsStream* tls, const std::atomic<bool>& stopping,
                  std::function<void()> note_aborted, bool keep_alive, const Behaviour& behaviour)
      : socket_(socket),
        tls_(tls),
        stopping_(stopping),
        note_aborted_(std::move(note_aborted)),
        keep_alive_(keep_alive),
        drip_interval_(behaviour.drip_interval),
        drip_bytes_(std::max<size_t>(1, behaviour.drip_bytes)),
        one_write_(behaviour.one_write) {}

  bool closed() const { return closed_; }
  bool reset() const { return reset_; }

  bool Wait(std::chrono::milliseconds duration) override {
    if (closed_) return false;
    const auto deadline = std::chrono::steady_clock::now() + duration;
    while (true) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return true;
      pollfd pfd{socket_.native_handle(), POLLIN, 0};
      int ready = ::poll(&pfd, 1, static_cast<int>(left.count()));
      if (ready <= 0) continue;
      char byte;
      ssize_t n = ::recv(socket_.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n <= 0 || stopping_.load()) return Closed();
      // The client sent more bytes (a pipelined request): nothing to learn, sleep in small steps.
      std::this_thread::sleep_for(std::min(left, std::chrono::milliseconds(5)));
    }
  }

  void WaitForClose() override {
    while (Wait(std::chrono::hours(1))) {
    }
  }

  bool Send(int status, std::string_view content_type, std::string_view body,
            const std::vector<std::pair<std::string, std::string>>& extra_headers) override {
    std::string response = Head(status, content_type);
    for (const auto& [name, value] : extra_headers) response += name + ": " + value + "\r\n";
    response += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
    response.append(body);
    return WriteAll(response);
  }

  bool StartStream(int status, std::string_view content_type) override {
    holding_ = one_write_;
    return WriteAll(Head(status, content_type) +
                    "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n");
  }

  bool Write(std::string_view data) override {
    char size[32];
    std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
    std::string chunk = size;
    chunk.append(data);
    chunk += "\r\n";
    return WriteAll(chunk);
  }

  bool End() override {
    if (!holding_) return WriteAll("0\r\n\r\n");
    holding_ = false;
    held_ += "0\r\n\r\n";
    return WriteAll(std::exchange(held_, std::string()));
  }

  void Reset() override {
    if (closed_) return;
    closed_ = reset_ = true;
    boost::system::error_code ec;
    // Linger zero turns close() into a RST instead of an orderly FIN.
    socket_.set_option(net::socket_base::linger(true, 0), ec);
  }

 private:
  std::string Head(int status, std::string_view content_type) const {
    std::string head = "HTTP/1.1 " + std::to_string(status) + " " +
                       std::string(ReasonPhrase(status)) + "\r\n";
    head += "Content-Type: " + std::string(content_type) + "\r\n";
    if (!keep_alive_) head += "Connection: close\r\n";
    return head;
  }

  bool WriteAll(std::string_view data) {
    if (closed_) return false;
    if (holding_) {
      held_.append(data);
      return true;
    }
    if (drip_interval_.count() > 0) {
      while (!data.empty()) {
        const size_t n = std::min(drip_bytes_, data.size());
        if (!Wait(drip_interval_) || !WriteNow(data.substr(0, n))) return false;
        data.remove_prefix(n);
      }
      return true;
    }
    return WriteNow(data);
  }

  bool WriteNow(std::string_view data) {
    if (tls_ != nullptr) {
      boost::system::error_code ec;
      net::write(*tls_, net::buffer(data.data(), data.size()), ec);
      return ec ? Closed() : true;
    }
    while (!data.empty()) {
      // MSG_NOSIGNAL: a client that went away must fail this write, not kill the process.
      ssize_t n = ::send(socket_.native_handle(), data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return Closed();
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  bool Closed() {
    if (!closed_) {
      closed_ = true;
      note_aborted_();
    }
    return false;
  }

  tcp::socket& socket_;
  TlsStream* const tls_;  // null: plain TCP
  const std::atomic<bool>& stopping_;
  const std::function<void()> note_aborted_;
  const bool keep_alive_;
  const std::chrono::milliseconds drip_interval_;
  const size_t drip_bytes_;
  const bool one_write_;
  bool holding_ = false;  // a one-write stream is open: its bytes wait in held_ for End()
  std::string held_;
  bool closed_ = false;
  bool reset_ = false;
};

}  // namespace

void MockUpstream::State::AcceptLoop() {
  while (!stopping.load()) {
    boost::system::error_code ec;
    tcp::socket socket(io);
    acceptor.accept(socket, ec);
    if (ec || stopping.load()) break;
    socket.set_option(tcp::no_delay(true), ec);
    std::lock_guard<std::mutex> lock(mu);
    ++accepted;
    // Join workers whose connections ended, so a long load test does not pile up threads.
    for (auto it = workers.begin(); it != workers.end();) {
      if (it->done->load()) {
        it->thread.join();
        it = workers.erase(it);
      } else {
        ++it;
      }
    }
    open_fds.insert(socket.native_handle());
    auto done = std::make_shared<std::atomic<bool>>(false);
    workers.push_back(Worker{std::thread([this, s = std::move(socket), done]() mutable {
                               Serve(std::move(s));
                               done->store(true);
                             }),
                             done});
  }
}

void MockUpstream::State::Serve(tcp::socket socket) {
  const int fd = socket.native_handle();
  boost::beast::flat_buffer buffer;
  std::optional<TlsStream> tls_stream;
  bool serving = true;
  if (tls != nullptr) {
    tls_stream.emplace(socket, *tls);
    boost::system::error_code ec;
    tls_stream->handshake(ssl::stream_base::server, ec);
    if (ec) {
      std::lock_guard<std::mutex> lock(mu);
      ++tls_failures;
      changed.notify_all();
      serving = false;
    }
  }
  while (serving && !stopping.load()) {
    http::request<http::string_body> request;
    boost::system::error_code ec;
    if (tls_stream.has_value()) {
      http::read(*tls_stream, buffer, request, ec);
    } else {
      http::read(socket, buffer, request, ec);
    }
    if (ec) break;
    RecordedRequest recorded;
    recorded.method = std::string(request.method_string());
    recorded.target = std::string(request.target());
    for (const auto& field : request) {
      recorded.headers.emplace_back(Lower(std::string(field.name_string())),
                                    std::string(field.value()));
    }
    recorded.body = request.body();
    const std::string path = recorded.target.substr(0, recorded.target.find('?'));

    Behaviour behaviour;
    Handler handler;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!queued.empty()) {
        behaviour = std::move(queued.front());
        queued.pop_front();
      } else {
        behaviour = default_behaviour;
      }
      size_t best = 0;
      for (const auto& [prefix, candidate] : handlers) {
        if (path.compare(0, prefix.size(), prefix) == 0 && prefix.size() >= best) {
          best = prefix.size();
          handler = candidate;
        }
      }
      requests.push_back(recorded);
      changed.notify_all();
    }

    SocketResponder responder(socket, tls_stream.has_value() ? &*tls_stream : nullptr, stopping,
                              [this] { NoteAborted(); }, request.keep_alive(), behaviour);
    if (behaviour.hold_until_requests > 0) {
      std::unique_lock<std::mutex> lock(mu);
      changed.wait(lock, [&] {
        return stopping.load() || requests.size() >= behaviour.hold_until_requests;
      });
    }
    if (behaviour.kind == Behaviour::Kind::kOversizedBody) {
      behaviour.kind = Behaviour::Kind::kOk;
      behaviour.tokens = {std::string(behaviour.oversized_bytes, 'a')};
    }
    if (behaviour.kind == Behaviour::Kind::kWrongContentType) {
      responder.Send(200, "text/html; charset=utf-8",
                     "<!doctype html><html><body><h1>Sign in to continue</h1></body></html>", {});
    } else if (handler) {
      handler(recorded, behaviour, responder);
    } else {
      responder.Send(404, "application/json",
                     R"({"error":{"message":"no mock handler for this path"}})", {});
    }
    if (responder.closed() || !request.keep_alive()) break;
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    open_fds.erase(fd);
  }
  boost::system::error_code ec;
  socket.close(ec);
}

// Records the client's ALPN offer and picks http/1.1 when offered (the mock speaks nothing else).
int MockUpstream::State::SelectAlpn(SSL*, const unsigned char** out, unsigned char* outlen,
                                    const unsigned char* in, unsigned int inlen, void* arg) {
  auto* state = static_cast<State*>(arg);
  std::vector<std::string> offered;
  for (unsigned int i = 0; i < inlen;) {
    const unsigned int len = in[i];
    if (i + 1 + len > inlen) break;
    offered.emplace_back(reinterpret_cast<const char*>(in + i + 1), len);
    i += 1 + len;
  }
  bool has_http11 = false;
  unsigned int offset = 0;
  for (const std::string& protocol : offered) {
    if (protocol == "http/1.1") {
      has_http11 = true;
      *out = in + offset + 1;
      *outlen = static_cast<unsigned char>(protocol.size());
    }
    offset += 1 + static_cast<unsigned int>(protocol.size());
  }
  {
    std::lock_guard<std::mutex> lock(state->mu);
    state->alpn_offered = std::move(offered);
  }
  return has_http11 ? SSL_TLSEXT_ERR_OK : SSL_TLSEXT_ERR_NOACK;
}

absl::StatusOr<std::unique_ptr<MockUpstream>> MockUpstream::Start(uint16_t port,
                                                                  const std::optional<TlsFiles>& tls) {
  auto state = std::make_unique<State>();
  boost::system::error_code ec;
  if (tls.has_value()) {
    state->tls = std::make_unique<ssl::context>(ssl::context::tls_server);
    state->tls->use_certificate_chain_file(tls->cert_chain, ec);
    if (!ec) state->tls->use_private_key_file(tls->private_key, ssl::context::pem, ec);
    if (ec) return absl::InvalidArgumentError("mock upstream TLS setup: " + ec.message());
    SSL_CTX_set_alpn_select_cb(state->tls->native_handle(), &State::SelectAlpn, state.get());
  }
  tcp::endpoint endpoint(net::ip::make_address("127.0.0.1"), port);
  state->acceptor.open(endpoint.protocol(), ec);
  if (!ec) state->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) state->acceptor.bind(endpoint, ec);
  if (!ec) state->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError("mock upstream cannot listen on 127.0.0.1:" +
                                  std::to_string(port) + ": " + ec.message());
  }
  state->port = state->acceptor.local_endpoint().port();
  state->handlers["/v1/chat/completions"] = HandlerFor(Dialect::kOpenAi);
  state->handlers["/v1/messages"] = HandlerFor(Dialect::kAnthropic);
  state->handlers["/v1beta/models/"] = HandlerFor(Dialect::kGemini);
  State* raw = state.get();
  state->accept_thread = std::thread([raw] { raw->AcceptLoop(); });
  return std::unique_ptr<MockUpstream>(new MockUpstream(std::move(state)));
}

MockUpstream::MockUpstream(std::unique_ptr<State> state) : state_(std::move(state)) {}

MockUpstream::~MockUpstream() {
  state_->stopping.store(true);
  {
    // Wakes workers holding an answer (hold_until_requests).
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->changed.notify_all();
  }
  // shutdown() wakes a thread blocked in accept() or recv(); close() alone would not.
  ::shutdown(state_->acceptor.native_handle(), SHUT_RDWR);
  state_->accept_thread.join();
  std::list<State::Worker> workers;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    for (int fd : state_->open_fds) ::shutdown(fd, SHUT_RDWR);
    workers.swap(state_->workers);
  }
  for (State::Worker& worker : workers) worker.thread.join();
}

uint16_t MockUpstream::port() const { return state_->port; }

std::string MockUpstream::base_url() const {
  return std::string(state_->tls != nullptr ? "https" : "http") + "://127.0.0.1:" +
         std::to_string(state_->port) + "/v1";
}

std::string MockUpstream::gemini_base_url() const {
  return std::string(state_->tls != nullptr ? "https" : "http") + "://127.0.0.1:" +
         std::to_string(state_->port) + "/v1beta";
}

void MockUpstream::SetBehaviour(Behaviour behaviour) {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->default_behaviour = std::move(behaviour);
}

void MockUpstream::EnqueueBehaviour(Behaviour behaviour) {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->queued.push_back(std::move(behaviour));
}

void MockUpstream::AddHandler(std::string path_prefix, Handler handler) {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->handlers[std::move(path_prefix)] = std::move(handler);
}

MockUpstream::Handler MockUpstream::HandlerFor(Dialect dialect) {
  switch (dialect) {
    case Dialect::kOpenAi:
      return &ServeOpenAi;
    case Dialect::kAnthropic:
      return &ServeAnthropic;
    case Dialect::kGemini:
      return &ServeGemini;
  }
  return &ServeOpenAi;
}

std::vector<RecordedRequest> MockUpstream::requests() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->requests;
}

size_t MockUpstream::request_count() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->requests.size();
}

bool MockUpstream::WaitForRequests(size_t count, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(state_->mu);
  return state_->changed.wait_for(lock, timeout,
                                  [&] { return state_->requests.size() >= count; });
}

size_t MockUpstream::aborted_responses() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->aborted;
}

bool MockUpstream::WaitForAbortedResponses(size_t count, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(state_->mu);
  return state_->changed.wait_for(lock, timeout, [&] { return state_->aborted >= count; });
}

size_t MockUpstream::connections_accepted() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->accepted;
}

std::vector<std::string> MockUpstream::alpn_offered() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->alpn_offered;
}

size_t MockUpstream::tls_handshake_failures() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->tls_failures;
}

absl::StatusOr<TlsFiles> MakeTestCertificates(const std::string& dir) {
  TlsFiles files{dir + "/ca.pem", dir + "/server.pem", dir + "/server.key"};
  const std::string ext = dir + "/server.ext";
  {
    std::ofstream out(ext);
    out << "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
           "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n";
    if (!out.good()) return absl::InternalError("cannot write " + ext);
  }
  const std::string ec_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  const std::vector<std::string> commands = {
      "openssl req -x509 " + ec_key + " -keyout '" + dir + "/ca.key' -out '" + files.ca_cert +
          "' -days 1 -subj '/CN=Switchyard throwaway test CA' -addext "
          "'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign'",
      "openssl req " + ec_key + " -keyout '" + files.private_key + "' -out '" + dir +
          "/server.csr' -subj '/CN=127.0.0.1'",
      "openssl x509 -req -in '" + dir + "/server.csr' -CA '" + files.ca_cert + "' -CAkey '" + dir +
          "/ca.key' -CAcreateserial -out '" + files.cert_chain + "' -days 1 -extfile '" + ext +
          "'",
  };
  for (const std::string& command : commands) {
    FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
    if (pipe == nullptr) return absl::InternalError("cannot run openssl");
    std::string output;
    char buffer[256];
    while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
    if (::pclose(pipe) != 0) {
      return absl::FailedPreconditionError("`" + command + "` failed: " + output);
    }
  }
  return files;
}

}  // namespace switchyard::mocks
