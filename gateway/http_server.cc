#include "gateway/http_server.h"

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "policies/absl_compat.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "boost/asio/dispatch.hpp"
#include "boost/asio/post.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "gateway/anthropic_codec.h"
#include "gateway/decision_json.h"
#include "gateway/log.h"
#include "gateway/openai_codec.h"
#include "gateway/readiness.h"
#include "gateway/status_map.h"

namespace switchyard::gateway {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr auto kIdleTimeout = std::chrono::seconds(120);
// How long a failed accept waits before the next try.
constexpr auto kAcceptRetry = std::chrono::milliseconds(50);
constexpr size_t kHeaderLimit = 16 * 1024;
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
// Bytes a client may pipeline while its previous request is being answered.
constexpr size_t kMaxPipelined = 64 * 1024;
// How long, and for how many bytes, a connection closed on a request it did not read (413, 400)
// drains what the client still sends (LingeringClose).
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr size_t kLingerBytes = 4 << 20;

int64_t UnixSeconds() { return absl::ToUnixSeconds(absl::Now()); }

// The wire format a client speaks on this exchange; answers and errors use the same one.
enum class ClientDialect { kOpenAi, kAnthropic };

// The edge a request of this dialect is metered and logged under.
std::string_view EdgeName(ClientDialect dialect) {
  return dialect == ClientDialect::kAnthropic ? "anthropic" : "openai";
}

// A response head written straight as wire bytes: the status line, then one "Name: value" line
// per Set. Beast's fields allocate an element per field and its writer walks them once more; a
// head is built once and sent at once, so text does (BENCHMARKS.md, "Session 13").
class ResponseHead {
 public:
  ResponseHead(http::status status, unsigned version) {
    text_.reserve(384);
    const beast::string_view reason = http::obsolete_reason(status);
    absl::StrAppend(&text_, "HTTP/", version / 10, ".", version % 10, " ",
                    static_cast<unsigned>(status), " ");
    text_.append(reason.data(), reason.size());
    text_ += "\r\n";
  }

  ResponseHead& Set(std::string_view name, std::string_view value) {
    text_.append(name);
    text_ += ": ";
    text_.append(value);
    text_ += "\r\n";
    return *this;
  }

  // The head's bytes, ending with the blank line.
  std::string Finish() && {
    text_ += "\r\n";
    return std::move(text_);
  }

 private:
  std::string text_;
};

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(tcp::socket&& socket, std::shared_ptr<HttpShared> shared)
      : stream_(std::move(socket)), shared_(std::move(shared)), gateway_(*shared_->gateway) {
    // Only Write's first try is synchronous: it must return would_block, not wait.
    beast::error_code ignored;
    stream_.socket().non_blocking(true, ignored);
  }

  void Start() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->DoRead(); });
  }

  // Called by the chat sink, on the session's thread.
  void OnDelta(std::string event);
  void OnChatDone(absl::Status status, backends::Completion completion, std::string text);

 private:
  void DoRead();
  void OnReadHeader(beast::error_code ec, size_t bytes);
  void OnRead(beast::error_code ec, size_t bytes);
  void Handle();
  void HandleChat(ClientDialect dialect);
  void HandleExplain();
  // Resolves the request's API key; answers 401 in the client's dialect and returns nullopt when
  // it is missing or unknown.
  std::optional<Principal> Authenticate();

  void SendJson(http::status status, std::string body);
  // 405 with the Allow field RFC 9110 asks for.
  void SendMethodNotAllowed(std::string_view allow, std::string body);
  void SendError(const absl::Status& status);
  // A head with what every answer carries: the status line, Server, Content-Type and the
  // decision headers.
  ResponseHead Head(http::status status, std::string_view content_type) const;
  // Connection as the client's HTTP version needs it to keep the connection or not.
  void SetConnection(ResponseHead& head) const;
  // Writes the head (completed with Connection and Content-Length) and the body as one buffer.
  void SendResponse(ResponseHead head, std::string body);
  void SetDecisionHeaders(ResponseHead& head) const;
  void ExchangeDone();
  void Close();
  // Closes a connection whose client may still be sending: our side first, then what arrives is
  // read and dropped for a bounded time and size. Closing with input unread would make the
  // kernel reset the connection, and a client still writing its body would get EPIPE or
  // ECONNRESET instead of the answer (RFC 9112, section 9.6).
  void LingeringClose();
  void Discard();

  // Sends out_, then calls OnWritten. `last`: the exchange's answer is complete with it.
  void Write(bool last);
  void WriteRest();
  void OnWriteSome(beast::error_code ec, size_t bytes);
  void OnWritten(beast::error_code ec);
  // Ends the exchange for a client that stopped reading or is gone: its backend call is
  // cancelled (metered as such) and the connection closed.
  void DropClient();

  void QueueStreamBytes(std::string bytes, bool last);
  void FlushStream();

  void WatchClient();
  void OnWatch(beast::error_code ec, size_t bytes);

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::shared_ptr<HttpShared> shared_;
  Gateway& gateway_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> request_;

  // The exchange in progress.
  bool keep_alive_ = false;
  bool exchange_done_ = false;
  bool watching_ = false;
  bool client_gone_ = false;
  // The request was not read to its end (an error answer); close lingeringly after the answer.
  bool unread_input_ = false;
  size_t linger_left_ = 0;
  ClientDialect dialect_ = ClientDialect::kOpenAi;
  InboundRequest inbound_;
  Routed routed_;
  std::unique_ptr<backends::Call> call_;
  int64_t created_ = 0;
  // Which target answered, after how many retries and fallbacks; set when the backend is done.
  std::optional<backends::Completion> explained_;
  std::chrono::steady_clock::time_point received_{};

  // Streaming (SSE) state.
  bool stream_started_ = false;
  bool stream_last_queued_ = false;
  // HTTP/1.1 frames a stream in chunks; HTTP/1.0 has none, and its stream ends with the
  // connection.
  bool stream_chunked_ = true;
  bool write_in_flight_ = false;
  // The response head until it is written; it goes out with the first chunk, in one send.
  std::string stream_head_;
  // Events that came while a write was in progress; they go out together with the next one.
  std::string stream_pending_;

  // The bytes being written (a whole answer, or a stream's head and chunks), how many of them
  // the socket took, and whether they end the exchange's answer.
  std::string out_;
  size_t out_sent_ = 0;
  bool out_last_ = false;
};

// For a stream, whose headers went out before the answer was complete: the served-by, retries and
// fallbacks explanation as an SSE comment line, which every SSE client ignores.
std::string ExplainComment(const backends::Completion& completion) {
  return absl::StrCat(": x-switchyard-served-by=", completion.served_by,
                      " x-switchyard-retries=", completion.retries,
                      " x-switchyard-fallbacks=", completion.fallbacks, "\n\n");
}

// Feeds a backend's output to a session in the client's dialect, hopping onto its thread.
// Streamed events wait in `pending_` while a hop is outstanding and go with it, so a burst of
// tokens from upstream costs one hop and one write rather than one per token.
class HttpChatSink : public backends::ChatSink,
                     public std::enable_shared_from_this<HttpChatSink> {
 public:
  HttpChatSink(std::shared_ptr<HttpSession> session, asio::any_io_executor executor,
               const InboundRequest& request, ClientDialect dialect, std::string id,
               std::string model, int64_t created)
      : session_(std::move(session)),
        executor_(std::move(executor)),
        stream_(request.stream),
        include_usage_(request.include_usage),
        dialect_(dialect),
        id_(std::move(id)),
        model_(std::move(model)),
        created_(created) {}

  void OnDelta(std::string_view text) override {
    if (!stream_) {
      text_.append(text);
      return;
    }
    if (text.empty() && !first_) return;
    std::string event;
    if (dialect_ == ClientDialect::kAnthropic) {
      if (first_) event = MessageStartEvents(MessageId(id_), model_);
      if (!text.empty()) event += MessageDeltaEvent(text);
    } else {
      event = Chunks().Event(text, first_, nullptr);
    }
    first_ = false;
    {
      absl::MutexLock lock(&mu_);
      // The first event of a burst becomes the pending text; later ones are appended to it.
      if (pending_.empty()) {
        pending_.swap(event);
      } else {
        pending_ += event;
      }
      if (posted_) return;
      posted_ = true;
    }
    asio::post(executor_, [self = shared_from_this()] { self->Flush(); });
  }

  void OnDone(const absl::Status& status, const backends::Completion& completion) override {
    std::string tail;
    if (stream_ && status.ok()) tail = ExplainComment(completion);
    if (stream_ && status.ok() && dialect_ == ClientDialect::kAnthropic) {
      if (first_) tail += MessageStartEvents(MessageId(id_), model_);
      tail += MessageEndEvents(completion);
    } else if (stream_ && status.ok()) {
      if (first_) tail += Chunks().Event("", true, nullptr);
      tail += Chunks().Event("", false, &completion);
      if (include_usage_) tail += ChatUsageEvent(id_, model_, created_, completion.usage);
      tail += "data: [DONE]\n\n";
    } else if (!stream_) {
      tail = std::move(text_);
    }
    // Posted after any pending flush, which the session's thread runs first.
    asio::post(executor_, [session = session_, status, completion, tail = std::move(tail)]() mutable {
      session->OnChatDone(status, completion, std::move(tail));
    });
  }

 private:
  // Made at the first OpenAI event; calls on a sink never overlap.
  const ChatChunkWriter& Chunks() {
    if (!chunks_.has_value()) chunks_.emplace(id_, model_, created_);
    return *chunks_;
  }

  // On the session's thread.
  void Flush() {
    std::string events;
    {
      absl::MutexLock lock(&mu_);
      events.swap(pending_);
      posted_ = false;
    }
    session_->OnDelta(std::move(events));
  }

  std::shared_ptr<HttpSession> session_;
  asio::any_io_executor executor_;
  const bool stream_;
  const bool include_usage_;
  const ClientDialect dialect_;
  const std::string id_;
  const std::string model_;
  const int64_t created_;
  std::optional<ChatChunkWriter> chunks_;
  bool first_ = true;
  std::string text_;
  absl::Mutex mu_;
  std::string pending_ ABSL_GUARDED_BY(mu_);  // streamed events not yet handed to the session
  bool posted_ ABSL_GUARDED_BY(mu_) = false;  // a Flush is on its way to the session
};

void HttpSession::DoRead() {
  explained_.reset();
  parser_.emplace();
  parser_->body_limit(static_cast<uint64_t>(shared_->limits.max_body_bytes));
  parser_->header_limit(kHeaderLimit);
  stream_.expires_after(kIdleTimeout);
  // The head alone first: a client that sent `Expect: 100-continue` sends its body only when
  // told to (RFC 9110, section 10.1.1).
  http::async_read_header(stream_, buffer_, *parser_,
                          beast::bind_front_handler(&HttpSession::OnReadHeader,
                                                    shared_from_this()));
}

void HttpSession::OnReadHeader(beast::error_code ec, size_t bytes) {
  if (!ec && !parser_->is_done()) {
    // Most clients send the body with the head: it is parsed here, from the bytes already read,
    // at no extra trip through the scheduler (an asynchronous read would cost one).
    parser_->eager(true);
    while (!ec && !parser_->is_done() && buffer_.size() > 0) {
      const size_t used = parser_->put(buffer_.data(), ec);
      buffer_.consume(used);
      if (used == 0) break;
    }
    if (ec == http::error::need_more) ec = {};
  }
  if (ec || parser_->is_done()) {
    OnRead(ec, bytes);
    return;
  }
  auto read_body = [self = shared_from_this()] {
    http::async_read(self->stream_, self->buffer_, *self->parser_,
                     beast::bind_front_handler(&HttpSession::OnRead, self));
  };
  const http::request<http::string_body>& head = parser_->get();
  if (head.version() < 11 || !beast::iequals(head[http::field::expect], "100-continue")) {
    read_body();
    return;
  }
  asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                    [self = shared_from_this(), read_body](beast::error_code write_ec, size_t) {
                      if (write_ec) {
                        self->Close();
                        return;
                      }
                      read_body();
                    });
}

void HttpSession::OnRead(beast::error_code ec, size_t) {
  if (ec == http::error::end_of_stream || ec == asio::error::eof ||
      ec == beast::error::timeout || ec == asio::error::connection_reset ||
      ec == asio::error::operation_aborted) {
    Close();
    return;
  }
  shared_->active_exchanges.fetch_add(1);
  exchange_done_ = false;
  keep_alive_ = false;
  unread_input_ = false;
  dialect_ = ClientDialect::kOpenAi;
  // Nothing of the connection's previous exchange may show in this one's answer: not its
  // decision headers or request id, nor its method or HTTP version, which the answer's head and
  // body follow (a request that cannot be read is answered as an HTTP/1.1 GET would be).
  request_ = {};
  routed_ = Routed{};
  inbound_ = InboundRequest{};
  stream_.expires_never();
  if (ec) {
    // Once the request line is read (a Content-Length over the limit fails later in the head),
    // the answer is in its path's dialect, as it would be later; the target is empty before.
    const beast::string_view target = parser_->get().target();
    if (target.substr(0, target.find('?')) == "/v1/messages") dialect_ = ClientDialect::kAnthropic;
    const bool anthropic = dialect_ == ClientDialect::kAnthropic;
    unread_input_ = true;  // keep_alive_ is false: the connection closes after the answer
    if (ec == http::error::body_limit) {
      const std::string message = absl::StrCat("request body exceeds the limit of ",
                                               shared_->limits.max_body_bytes, " bytes");
      SendJson(http::status::payload_too_large,
               anthropic ? AnthropicErrorJson("request_too_large", message)
                         : ErrorJson(message, "invalid_request_error", "body_too_large"));
      return;
    }
    const std::string message = absl::StrCat("malformed HTTP request: ", ec.message());
    SendJson(http::status::bad_request,
             anthropic ? AnthropicErrorJson("invalid_request_error", message)
                       : ErrorJson(message, "invalid_request_error", "malformed_http"));
    return;
  }
  request_ = parser_->release();
  received_ = std::chrono::steady_clock::now();
  keep_alive_ = request_.keep_alive() && !shared_->draining.load();
  Handle();
}

void HttpSession::Handle() {
  const std::string_view target(request_.target().data(), request_.target().size());
  const std::string_view path = target.substr(0, target.find('?'));
  const http::verb method = request_.method();
  if (path == "/v1/chat/completions") {
    if (method != http::verb::post) {
      SendMethodNotAllowed("POST", ErrorJson("use POST for /v1/chat/completions",
                                             "invalid_request_error", "method_not_allowed"));
      return;
    }
    HandleChat(ClientDialect::kOpenAi);
    return;
  }
  if (path == "/v1/route/explain") {
    if (method != http::verb::post) {
      SendMethodNotAllowed("POST", ErrorJson("use POST for /v1/route/explain",
                                             "invalid_request_error", "method_not_allowed"));
      return;
    }
    HandleExplain();
    return;
  }
  if (path == "/v1/messages") {
    dialect_ = ClientDialect::kAnthropic;
    if (method != http::verb::post) {
      SendMethodNotAllowed("POST",
                           AnthropicErrorJson("invalid_request_error", "use POST for /v1/messages"));
      return;
    }
    HandleChat(ClientDialect::kAnthropic);
    return;
  }
  // A path that is not served is 404 whatever the method: a 405 would claim it exists.
  if (path != "/healthz" && path != "/readyz" && path != "/v1/models" && path != "/metrics") {
    SendJson(http::status::not_found,
             ErrorJson(absl::StrCat("no route for ", policies::Sv(path)), "invalid_request_error",
                       "not_found"));
    return;
  }
  // HEAD answers as GET does, without the body (SendResponse).
  if (method != http::verb::get && method != http::verb::head) {
    SendMethodNotAllowed("GET, HEAD",
                         ErrorJson(absl::StrCat("use GET for ", policies::Sv(path)),
                                   "invalid_request_error", "method_not_allowed"));
    return;
  }
  if (path == "/healthz") {
    SendJson(http::status::ok, R"({"status":"ok"})");
  } else if (path == "/readyz") {
    const Readiness readiness = CheckReadiness(*gateway_.runtime());
    SendJson(readiness.ready ? http::status::ok : http::status::service_unavailable,
             readiness.json);
  } else if (path == "/v1/models") {
    if (!Authenticate()) return;
    SendJson(http::status::ok, ModelsJson(gateway_.runtime()->config, UnixSeconds()));
  } else {
    SendResponse(Head(http::status::ok, "text/plain; version=0.0.4; charset=utf-8"),
                 gateway_.metrics().Render());
  }
}

std::optional<Principal> HttpSession::Authenticate() {
  auto header = [this](std::string_view name) -> std::optional<std::string_view> {
    auto it = request_.find(beast::string_view(name.data(), name.size()));
    if (it == request_.end()) return std::nullopt;
    return std::string_view(it->value().data(), it->value().size());
  };
  absl::StatusOr<Principal> principal =
      gateway_.Authenticate(PresentedKey(header("authorization"), header("x-api-key")),
                            EdgeName(dialect_));
  if (!principal.ok()) {
    SendError(principal.status());
    return std::nullopt;
  }
  return *std::move(principal);
}

// The decision a chat completions body would get, without running it. A denial is an answer
// here (200, "denied": true), not an error.
void HttpSession::HandleExplain() {
  dialect_ = ClientDialect::kOpenAi;
  std::optional<Principal> principal = Authenticate();
  if (!principal) return;
  absl::StatusOr<InboundRequest> parsed = ParseChatCompletionRequest(request_.body());
  if (!parsed.ok()) {
    SendError(parsed.status());
    return;
  }
  inbound_ = *std::move(parsed);
  ApplyPrincipal(*principal, inbound_);
  routed_ = Routed{};
  absl::Status status = gateway_.Route(inbound_, routed_);
  if (!status.ok() && status.code() != absl::StatusCode::kPermissionDenied) {
    SendError(status);
    return;
  }
  SendJson(http::status::ok, DecisionJson(routed_));
}

void HttpSession::HandleChat(ClientDialect dialect) {
  dialect_ = dialect;
  std::optional<Principal> principal = Authenticate();
  if (!principal) return;
  absl::StatusOr<InboundRequest> parsed = dialect == ClientDialect::kAnthropic
                                              ? ParseMessagesRequest(request_.body())
                                              : ParseChatCompletionRequest(request_.body());
  const std::string_view edge = EdgeName(dialect);
  if (!parsed.ok()) {
    gateway_.RecordRejected(parsed.status(), nullptr, nullptr, edge);
    SendError(parsed.status());
    return;
  }
  inbound_ = *std::move(parsed);
  inbound_.edge = std::string(edge);
  ApplyPrincipal(*principal, inbound_);
  inbound_.received = received_;
  routed_ = Routed{};
  if (absl::Status status = gateway_.Admit(inbound_, routed_); !status.ok()) {
    SendError(status);
    return;
  }
  inbound_.chat.request_id = gateway_.NewRequestId();
  created_ = UnixSeconds();
  stream_started_ = false;
  stream_last_queued_ = false;
  stream_head_.clear();
  auto sink = std::make_shared<HttpChatSink>(shared_from_this(), stream_.get_executor(), inbound_,
                                             dialect_, inbound_.chat.request_id,
                                             routed_.decision.target, created_);
  call_ = gateway_.Dispatch(routed_, inbound_, std::move(sink));
  if (!exchange_done_ && !client_gone_) WatchClient();
}

void HttpSession::OnDelta(std::string event) {
  if (client_gone_ || exchange_done_) return;
  QueueStreamBytes(std::move(event), false);
}

void HttpSession::OnChatDone(absl::Status status, backends::Completion completion,
                             std::string text) {
  if (client_gone_ || exchange_done_) return;
  explained_ = completion;
  if (inbound_.stream && stream_started_) {
    if (!status.ok()) {
      // Midway failure: an explicit error event, and no [DONE], so no client mistakes it for a
      // complete answer.
      text = absl::StrCat(ExplainComment(completion),
                          dialect_ == ClientDialect::kAnthropic
                              ? MessageErrorEvent(status)
                              : absl::StrCat("data: ", ErrorJson(status), "\n\n"));
    }
    QueueStreamBytes(std::move(text), true);
    return;
  }
  if (!status.ok()) {
    SendError(status);
    return;
  }
  if (inbound_.stream) {
    QueueStreamBytes(std::move(text), true);
    return;
  }
  // The model that answered: a fallback target when the first choice failed.
  const std::string& model =
      completion.served_by.empty() ? routed_.decision.target : completion.served_by;
  SendResponse(
      Head(http::status::ok, "application/json"),
      dialect_ == ClientDialect::kAnthropic
          ? MessageJson(MessageId(inbound_.chat.request_id), model, text, completion)
          : ChatCompletionJson(inbound_.chat.request_id, model, created_, text, completion));
}

void HttpSession::SetDecisionHeaders(ResponseHead& head) const {
  if (!routed_.decision.rule.empty()) {
    head.Set("x-switchyard-target", routed_.decision.target);
    head.Set("x-switchyard-rule", routed_.decision.rule);
    head.Set("x-switchyard-policy-version", routed_.decision.policy_version);
    if (!routed_.decision.level.empty()) {
      head.Set("x-switchyard-sensitivity", routed_.decision.level);
    }
    if (!routed_.decision.findings.empty()) {
      head.Set("x-switchyard-findings", FindingTypes(routed_.decision));
    }
  }
  if (explained_.has_value() && !explained_->served_by.empty()) {
    head.Set("x-switchyard-served-by", explained_->served_by);
    head.Set("x-switchyard-retries", std::to_string(explained_->retries));
    head.Set("x-switchyard-fallbacks", std::to_string(explained_->fallbacks));
  }
  if (!routed_.budget_note.empty()) head.Set("x-switchyard-budget", routed_.budget_note);
  if (!inbound_.chat.request_id.empty()) head.Set("x-request-id", inbound_.chat.request_id);
}

ResponseHead HttpSession::Head(http::status status, std::string_view content_type) const {
  ResponseHead head(status, request_.version());
  head.Set("Server", "switchyard").Set("Content-Type", content_type);
  SetDecisionHeaders(head);
  return head;
}

void HttpSession::SetConnection(ResponseHead& head) const {
  // HTTP/1.1 keeps a connection unless told otherwise; HTTP/1.0 closes it unless told otherwise.
  if (request_.version() >= 11) {
    if (!keep_alive_) head.Set("Connection", "close");
  } else if (keep_alive_) {
    head.Set("Connection", "keep-alive");
  }
}

void HttpSession::SendJson(http::status status, std::string body) {
  SendResponse(Head(status, "application/json"), std::move(body));
}

void HttpSession::SendMethodNotAllowed(std::string_view allow, std::string body) {
  ResponseHead head = Head(http::status::method_not_allowed, "application/json");
  head.Set("Allow", allow);
  SendResponse(std::move(head), std::move(body));
}

void HttpSession::SendError(const absl::Status& status) {
  ResponseHead head =
      Head(static_cast<http::status>(MapStatus(status.code()).http_status), "application/json");
  if (std::optional<int64_t> seconds = RetryAfterSeconds(status)) {
    head.Set("Retry-After", std::to_string(*seconds));
  }
  if (status.code() == absl::StatusCode::kUnauthenticated) head.Set("WWW-Authenticate", "Bearer");
  SendResponse(std::move(head), dialect_ == ClientDialect::kAnthropic ? AnthropicErrorJson(status)
                                                                      : ErrorJson(status));
}

void HttpSession::SendResponse(ResponseHead head, std::string body) {
  SetConnection(head);
  head.Set("Content-Length", std::to_string(body.size()));
  // Head and body in one buffer, one write: Beast's message writer walks the same bytes through
  // a serializer and a chain of buffer views, about a tenth of the gateway's instructions for a
  // small answer (BENCHMARKS.md, "Session 11").
  out_ = std::move(head).Finish();
  // A HEAD request gets the head a GET would, Content-Length included, and no body.
  if (request_.method() != http::verb::head) out_ += body;
  Write(true);
}

void HttpSession::Write(bool last) {
  write_in_flight_ = true;
  out_last_ = last;
  // Most answers fit in the socket's send buffer and go at once, with neither a deadline to arm
  // nor a completion to wait for; the asynchronous write is for a client slower than its answer.
  beast::error_code ec;
  out_sent_ = stream_.socket().write_some(asio::buffer(out_), ec);
  if (ec == asio::error::would_block || ec == asio::error::try_again) ec = {};
  if (ec || out_sent_ == out_.size()) {
    OnWritten(ec);
    return;
  }
  WriteRest();
}

void HttpSession::WriteRest() {
  // The deadline counts from the last progress, not from the start of the answer: a client that
  // reads a long stream slowly is served, one that stopped reading is not.
  if (shared_->limits.write_timeout.count() > 0) {
    stream_.expires_after(shared_->limits.write_timeout);
  }
  stream_.async_write_some(asio::buffer(out_) + out_sent_,
                           beast::bind_front_handler(&HttpSession::OnWriteSome,
                                                     shared_from_this()));
}

void HttpSession::OnWriteSome(beast::error_code ec, size_t bytes) {
  out_sent_ += bytes;
  if (!ec && out_sent_ < out_.size()) {
    WriteRest();
    return;
  }
  OnWritten(ec);
}

void HttpSession::OnWritten(beast::error_code ec) {
  write_in_flight_ = false;
  if (ec) {
    // The client went away, or let the write time out (the stream closed the socket then).
    DropClient();
    return;
  }
  if (out_last_) {
    ExchangeDone();
    return;
  }
  FlushStream();
}

void HttpSession::DropClient() {
  client_gone_ = true;
  if (call_) call_->Cancel();
  ExchangeDone();
}

void HttpSession::QueueStreamBytes(std::string bytes, bool last) {
  if (!stream_started_) {
    stream_started_ = true;
    ResponseHead head = Head(http::status::ok, "text/event-stream");
    head.Set("Cache-Control", "no-cache");
    // RFC 9112 forbids chunked framing in an answer to HTTP/1.0; the end of the connection marks
    // the end of the stream instead.
    stream_chunked_ = request_.version() >= 11;
    if (!stream_chunked_) keep_alive_ = false;
    SetConnection(head);
    if (stream_chunked_) head.Set("Transfer-Encoding", "chunked");
    stream_head_ = std::move(head).Finish();
  }
  if (write_in_flight_ && stream_pending_.size() + bytes.size() >
                              static_cast<size_t>(shared_->limits.max_stream_buffer_bytes)) {
    // The client reads more slowly than the backend writes: rather than hold the whole answer
    // for it, stop the backend and let the client go.
    Log(LogLevel::kWarning, "http: stream ", inbound_.chat.request_id, " cancelled: the client ",
        "read too slowly (over ", shared_->limits.max_stream_buffer_bytes, " bytes waiting)");
    DropClient();
    return;
  }
  stream_pending_ += bytes;
  stream_last_queued_ = stream_last_queued_ || last;
  FlushStream();
}

void HttpSession::FlushStream() {
  if (write_in_flight_ || client_gone_) return;
  // One send carries what is ready: the head (first time), everything queued while the last
  // write was in flight as one chunk, and the last chunk once the end is queued.
  out_.clear();
  out_.swap(stream_head_);
  if (!stream_pending_.empty() && !stream_chunked_) {
    out_ += stream_pending_;
    stream_pending_.clear();
  } else if (!stream_pending_.empty()) {
    char size[24];
    std::snprintf(size, sizeof(size), "%zx\r\n", stream_pending_.size());
    out_ += size;
    out_ += stream_pending_;
    out_ += "\r\n";
    stream_pending_.clear();
  }
  const bool last = stream_last_queued_;
  if (last) {
    if (stream_chunked_) out_ += "0\r\n\r\n";
    stream_last_queued_ = false;
  }
  if (out_.empty()) return;
  Write(last);
}

void HttpSession::WatchClient() {
  if (watching_ || buffer_.size() >= kMaxPipelined) return;
  watching_ = true;
  // A write's deadline also lands on the read side when no read is pending; the watch has none.
  stream_.expires_never();
  stream_.async_read_some(buffer_.prepare(4096),
                          beast::bind_front_handler(&HttpSession::OnWatch, shared_from_this()));
}

void HttpSession::OnWatch(beast::error_code ec, size_t bytes) {
  watching_ = false;
  if (!ec) {
    buffer_.commit(bytes);  // a pipelined request: parsed when this exchange is done
    if (exchange_done_) {
      DoRead();
    } else {
      WatchClient();
    }
    return;
  }
  if (ec == asio::error::operation_aborted && exchange_done_) {
    // We cancelled the watch to read the next request, or closed the connection.
    if (stream_.socket().is_open()) DoRead();
    return;
  }
  // The client closed or reset the connection while its request was running.
  client_gone_ = true;
  if (call_) {
    call_->Cancel();
    call_.reset();
  }
  if (!exchange_done_) ExchangeDone();
}

void HttpSession::ExchangeDone() {
  if (exchange_done_) return;
  exchange_done_ = true;
  shared_->active_exchanges.fetch_sub(1);
  if (call_) {
    call_->Cancel();  // no-op when the call finished; releases it when the client went away
    call_.reset();
  }
  if (client_gone_ || !keep_alive_ || shared_->draining.load()) {
    if (unread_input_ && !client_gone_) {
      LingeringClose();
    } else {
      Close();
    }
    return;
  }
  if (watching_) {
    // The watch read must finish before the next request is read; OnWatch resumes.
    beast::error_code ignored;
    stream_.socket().cancel(ignored);
    return;
  }
  DoRead();
}

void HttpSession::Close() {
  beast::error_code ignored;
  stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
  stream_.socket().close(ignored);
}

void HttpSession::LingeringClose() {
  beast::error_code ignored;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  linger_left_ = kLingerBytes;
  stream_.expires_after(kLingerTime);  // on expiry the stream closes the socket
  Discard();
}

void HttpSession::Discard() {
  buffer_.clear();
  stream_.async_read_some(buffer_.prepare(64 * 1024),
                          [self = shared_from_this()](beast::error_code ec, size_t bytes) {
                            if (ec || bytes >= self->linger_left_) {
                              self->Close();
                              return;
                            }
                            self->linger_left_ -= bytes;
                            self->Discard();
                          });
}

}  // namespace

HttpLimits HttpLimits::FromConfig(const Config& config) {
  HttpLimits limits;
  limits.max_body_bytes = config.max_body_bytes;
  limits.write_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(config.write_timeout_seconds * 1000));
  limits.max_stream_buffer_bytes = config.max_stream_buffer_bytes;
  return limits;
}

HttpServer::HttpServer(std::vector<asio::io_context*> contexts, Gateway& gateway,
                       HttpLimits limits)
    : contexts_(std::move(contexts)),
      acceptor_(*contexts_.front()),
      accept_retry_(*contexts_.front()),
      shared_(std::make_shared<HttpShared>()) {
  shared_->gateway = &gateway;
  shared_->limits = limits;
}

HttpServer::~HttpServer() = default;

absl::Status HttpServer::Start(const ListenerConfig& listener) {
  beast::error_code ec;
  const asio::ip::address address = asio::ip::make_address(listener.host, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("http listener: '", listener.host, "' is not an IP address"));
  }
  const tcp::endpoint endpoint(address, listener.port);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("http listener: cannot listen on ", listener.host,
                                               ":", listener.port, ": ", ec.message()));
  }
  host_ = listener.host;
  port_ = acceptor_.local_endpoint().port();
  Accept();
  return absl::OkStatus();
}

std::string HttpServer::address() const {
  return host_.find(':') != std::string::npos ? absl::StrCat("[", host_, "]:", port_)
                                              : absl::StrCat(host_, ":", port_);
}

void HttpServer::Accept() {
  asio::io_context& context = *contexts_[next_context_];
  next_context_ = (next_context_ + 1) % contexts_.size();
  // Each context is run by one thread, which serialises a connection's handlers without a strand.
  acceptor_.async_accept(context, [this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (ec) {
      // Most often out of file descriptors: the pending connection stays queued and the listening
      // socket readable, so an immediate retry would fail at once, over and over. Wait, and log
      // the first failure of a run rather than every one.
      if (accept_failures_++ == 0) {
        Log(LogLevel::kWarning, "http accept failed: ", ec.message(), "; retrying every ",
            kAcceptRetry.count(), " ms until it works");
      }
      accept_retry_.expires_after(kAcceptRetry);
      accept_retry_.async_wait([this](beast::error_code wait_ec) {
        if (!wait_ec && acceptor_.is_open()) Accept();
      });
      return;
    }
    if (accept_failures_ > 0) {
      Log(LogLevel::kInfo, "http accept works again, after ", accept_failures_, " failed tries");
      accept_failures_ = 0;
    }
    socket.set_option(tcp::no_delay(true), ec);
    std::make_shared<HttpSession>(std::move(socket), shared_)->Start();
    Accept();
  });
}

void HttpServer::BeginDrain() {
  shared_->draining.store(true);
  asio::post(acceptor_.get_executor(), [this] {
    beast::error_code ignored;
    acceptor_.close(ignored);
    accept_retry_.cancel();
  });
}

}  // namespace switchyard::gateway
