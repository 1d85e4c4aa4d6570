#include "backends/remote/remote_call.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "backends/retry_after.h"
#include "backends/sink_guard.h"
#include "nlohmann/json.hpp"

namespace switchyard::backends {
namespace {

using Json = nlohmann::json;

constexpr size_t kMaxUpstreamMessageBytes = 300;
constexpr std::string_view kStreamErrorPrefix = "upstream stream error: ";

absl::string_view Sv(std::string_view text) { return absl::string_view(text.data(), text.size()); }

// Upstreams echo keys back (OpenAI's 401 names the key it got), so every text that reaches a
// status message passes through here.
std::string Redact(std::string text, const std::string& secret) {
  if (!secret.empty()) absl::StrReplaceAll({{secret, "[redacted]"}}, &text);
  return text;
}

// `status` with another message and its payloads (a Retry-After) kept.
absl::Status WithMessage(const absl::Status& status, std::string_view message) {
  absl::Status out(status.code(), Sv(message));
  status.ForEachPayload([&out](absl::string_view url, const absl::Cord& payload) {
    out.SetPayload(url, payload);
  });
  return out;
}

absl::Status RedactStatus(const absl::Status& status, const std::string& secret) {
  if (status.ok() || secret.empty() || !absl::StrContains(status.message(), secret)) return status;
  return WithMessage(status, Redact(std::string(status.message()), secret));
}

absl::Status StatusForHttp(int http_status, std::string_view body) {
  std::string detail = TruncateUpstreamText(UpstreamErrorMessage(body));
  std::string message = absl::StrCat("upstream returned HTTP ", http_status);
  if (!detail.empty()) absl::StrAppend(&message, ": ", detail);
  if (http_status == 429) return absl::ResourceExhaustedError(message);
  // The gateway's own key or config is at fault, not the client's request: a bad gateway.
  if (http_status == 401 || http_status == 403) {
    return absl::UnavailableError(absl::StrCat(
        message, " (the upstream refused the gateway's credentials for this target; check its "
                 "api_key_env)"));
  }
  if (http_status == 404) {
    return absl::UnavailableError(absl::StrCat(
        message, " (the upstream does not know this target's model or path; check its model and "
                 "base_url)"));
  }
  if (http_status == 400 || http_status == 413 || http_status == 422) {
    return absl::InvalidArgumentError(message);
  }
  if (http_status >= 400 && http_status < 500) return absl::FailedPreconditionError(message);
  return absl::UnavailableError(message);
}

UpstreamErrorKind KindForHttp(int http_status) {
  if (http_status == 429) return UpstreamErrorKind::kRateLimited;
  if (http_status >= 400 && http_status < 500) return UpstreamErrorKind::kClientError;
  return UpstreamErrorKind::kServerError;
}

// A provider reader's error: the upstream's own error event, the upstream refusing the prompt,
// or a response we could not read.
UpstreamErrorKind KindForReaderError(const absl::Status& status) {
  if (status.code() == absl::StatusCode::kInvalidArgument) return UpstreamErrorKind::kClientError;
  if (absl::StartsWith(status.message(), Sv(kStreamErrorPrefix))) {
    return UpstreamErrorKind::kServerError;
  }
  return UpstreamErrorKind::kBadResponse;
}

// application/json, any +json type, and (for a stream request) text/event-stream.
bool AcceptableContentType(std::string_view content_type, bool stream) {
  const std::string type = absl::AsciiStrToLower(
      absl::StripAsciiWhitespace(Sv(content_type.substr(0, content_type.find(';')))));
  if (type.empty()) return true;  // some servers send none; the body parser decides
  if (type == "application/json" || absl::EndsWith(type, "+json")) return true;
  return stream && type == "text/event-stream";
}

bool RetryableHttpStatus(int status) {
  // 529 is Anthropic's "overloaded".
  return status == 429 || status == 500 || status == 502 || status == 503 || status == 504 ||
         status == 529;
}

// Jittered exponential backoff: half the capped exponential plus a random part of the other half,
// so a burst of failed requests does not come back in lockstep.
absl::Duration Backoff(const RetryOptions& retry, int failed_attempts) {
  absl::Duration cap = retry.initial_backoff;
  for (int i = 1; i < failed_attempts && cap < retry.max_backoff; ++i) cap *= 2;
  cap = std::min(cap, retry.max_backoff);
  thread_local std::minstd_rand rng(std::random_device{}());
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  return cap / 2 + cap / 2 * unit(rng);
}

// One client request across its attempts. Owns the retry decision and the id of the transfer in
// flight, so Cancel() always reaches the current attempt.
class Exchange : public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(std::shared_ptr<SinkGuard> guard, std::shared_ptr<CurlLoop> loop,
           RemoteRequest request)
      : guard_(std::move(guard)),
        loop_(std::move(loop)),
        http_(std::make_shared<const HttpRequest>(std::move(request.http))),
        request_(std::move(request)),
        started_(absl::Now()) {}

  const std::shared_ptr<SinkGuard>& guard() const { return guard_; }
  // The request's settings; its HTTP request is http(), `request().http` is moved out.
  const RemoteRequest& request() const { return request_; }
  const HttpRequest& http() const { return *http_; }

  void StartFirstAttempt();

  // Schedules another attempt if the policy and the target's retry budget allow; false means the
  // caller reports the error. Called by a handler whose attempt failed before any delta reached
  // the sink.
  bool MaybeRetry(std::optional<absl::Duration> retry_after) {
    absl::MutexLock lock(&mu_);
    const RetryOptions& retry = request_.retry;
    if (cancelled_ || guard_->finished() || attempts_ >= retry.max_attempts) return false;
    absl::Duration delay = Backoff(retry, attempts_);
    // The upstream knows its own rate limits better than our guess.
    if (retry_after.has_value()) delay = std::max(delay, *retry_after);
    if (absl::Now() + delay - started_ > retry.budget) return false;
    if (!retrying_ && request_.retry_budget != nullptr) {
      if (!request_.retry_budget->TryStartRetry()) {
        if (request_.stats != nullptr) request_.stats->AddRetryBudgetExhausted();
        return false;
      }
      retrying_ = true;
    }
    if (request_.stats != nullptr) request_.stats->AddRetry();
    StartAttempt(delay);
    return true;
  }

  // The request is over (answered, failed or cancelled): it leaves the retry budget's books.
  // Idempotent.
  void End() {
    absl::MutexLock lock(&mu_);
    EndLocked();
  }

  // The loop is done with attempt `attempt`'s transfer: its handler's OnComplete runs.
  void AttemptEnded(int attempt) {
    absl::MutexLock lock(&mu_);
    ended_attempt_ = std::max(ended_attempt_, attempt);
  }

  int32_t retries() {
    absl::MutexLock lock(&mu_);
    return std::max(0, attempts_ - 1);
  }

  void Cancel() {
    guard_->Cancel();
    CurlLoop::TransferId id;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      // A transfer the loop has ended needs no cancel (posting one would wake the loop's thread
      // for nothing: the gRPC edge cancels every call when its RPC is done).
      id = ended_attempt_ == attempts_ ? 0 : current_;
      EndLocked();
    }
    if (id != 0) loop_->Cancel(id);
  }

 private:
  void StartAttempt(absl::Duration delay) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void EndLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!counted_) return;
    counted_ = false;
    request_.retry_budget->RequestEnded(retrying_);
  }

  const std::shared_ptr<SinkGuard> guard_;
  const std::shared_ptr<CurlLoop> loop_;
  // Every attempt sends this one copy (headers and body are not copied per attempt).
  const std::shared_ptr<const HttpRequest> http_;
  const RemoteRequest request_;
  const absl::Time started_;
  absl::Mutex mu_;
  int attempts_ ABSL_GUARDED_BY(mu_) = 0;
  CurlLoop::TransferId current_ ABSL_GUARDED_BY(mu_) = 0;
  // The latest attempt whose transfer has ended (0: none): current_ runs unless it is attempts_.
  int ended_attempt_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  // Counted among the retry budget's active requests, and among its retries in flight.
  bool counted_ ABSL_GUARDED_BY(mu_) = false;
  bool retrying_ ABSL_GUARDED_BY(mu_) = false;
};

// Turns one attempt's transfer into sink calls, with the provider's reader doing the parsing.
// Runs on the loop thread only.
class RemoteHandler : public TransferHandler {
 public:
  // `attempt`: which of the exchange's attempts this transfer is (1 for the first).
  RemoteHandler(std::shared_ptr<Exchange> exchange, int attempt)
      : exchange_(std::move(exchange)),
        attempt_(attempt),
        guard_(exchange_->guard()),
        reader_(exchange_->request().new_reader()),
        parser_(exchange_->http().max_body_bytes) {}

  void OnHead(const HttpResponseHead& head) override {
    http_status_ = head.status;
    // Some servers ignore a stream request and answer with one JSON body.
    const std::string content_type =
        absl::AsciiStrToLower(std::string(head.Header("content-type")));
    sse_ = exchange_->http().streaming && absl::StartsWith(content_type, "text/event-stream");
    if (!AcceptableContentType(content_type, exchange_->http().streaming)) {
      bad_content_type_ = content_type;
    }
    // Only the delta-seconds form; an HTTP date falls back to our own backoff.
    int64_t seconds = 0;
    std::string retry_after(head.Header("retry-after"));
    if (absl::SimpleAtoi(retry_after, &seconds) && seconds >= 0) {
      retry_after_ = absl::Seconds(seconds);
    }
  }

  bool OnBody(std::string_view data) override {
    // After the terminal event keep draining so the connection can be reused.
    if (done_) return true;
    // The caller cancelled: stop the transfer now rather than at the loop's next wake-up.
    if (guard_->finished()) return false;
    // A captive portal or a misrouted proxy answers 200 with an HTML page: say so, rather than
    // what a JSON parser makes of it.
    if (Is2xx() && !bad_content_type_.empty()) return FailContentType();
    if (!sse_ || !Is2xx()) {
      body_.append(data);
      return true;
    }
    // Each event is handled as the parser completes it; false stops the parse once the
    // transfer has failed, or the answer is complete.
    bool go_on = true;
    absl::Status parsed = parser_.Feed(data, [this, &go_on](const SseEvent& event) {
      text_.clear();
      bool finished = false;
      if (absl::Status status = reader_->OnEvent(event, &text_, &finished); !status.ok()) {
        go_on = Fail(status, KindForReaderError(status));
        return false;
      }
      if (!Deliver(text_)) {
        go_on = false;
        return false;
      }
      if (finished) {
        Finish();
        return false;
      }
      return true;
    });
    if (!go_on || done_) return go_on;
    if (!parsed.ok()) {
      const absl::string_view why = parsed.message();
      return Fail(MalformedStream(std::string_view(why.data(), why.size())),
                  UpstreamErrorKind::kBadResponse);
    }
    return true;
  }

  void OnComplete(const absl::Status& status) override {
    exchange_->AttemptEnded(attempt_);
    if (done_) return;
    if (status.code() == absl::StatusCode::kCancelled) {
      // OnBody stopped the transfer because the caller cancelled: nothing to report or count.
      done_ = true;
      exchange_->End();
      return;
    }
    if (!status.ok()) {
      if (status.code() == absl::StatusCode::kOutOfRange) {
        // The loop's size cap.
        Fail(absl::UnavailableError(status.message()), UpstreamErrorKind::kBadResponse);
        return;
      }
      // Only failures before any response (refused, DNS, TLS, reset before the status line) are
      // safe to repeat; after the status line the upstream may already be generating.
      Fail(status,
           status.code() == absl::StatusCode::kDeadlineExceeded ? UpstreamErrorKind::kTimeout
                                                                 : UpstreamErrorKind::kConnect,
           /*retryable=*/status.code() == absl::StatusCode::kUnavailable && http_status_ == 0);
      return;
    }
    if (!Is2xx()) {
      absl::Status status = StatusForHttp(http_status_, body_);
      // The upstream's own wait reaches the client when this refusal ends the request.
      if ((http_status_ == 429 || http_status_ == 503) && retry_after_.has_value()) {
        status = WithRetryAfter(std::move(status), absl::ToDoubleSeconds(*retry_after_));
      }
      Fail(status, KindForHttp(http_status_), RetryableHttpStatus(http_status_));
      return;
    }
    if (!bad_content_type_.empty()) {
      FailContentType();
      return;
    }
    if (sse_) {
      // A half-read event means the stream was cut off, whatever the reader thinks.
      if (reader_->CompleteAtEnd() && !parser_.HasPartialEvent()) {
        Finish();
      } else {
        Fail(absl::UnavailableError("upstream stream ended before it was complete"),
             UpstreamErrorKind::kBadResponse);
      }
      return;
    }
    std::string text;
    if (absl::Status parsed = reader_->OnBody(body_, &text); !parsed.ok()) {
      Fail(parsed, KindForReaderError(parsed));
      return;
    }
    if (Deliver(text)) Finish();
  }

 private:
  bool Is2xx() const { return http_status_ >= 200 && http_status_ < 300; }

  bool FailContentType() {
    return Fail(absl::UnavailableError(absl::StrCat(
                    "upstream answered HTTP ", http_status_, " with Content-Type '",
                    TruncateUpstreamText(bad_content_type_), "', expected application/json",
                    exchange_->http().streaming ? " or text/event-stream" : "")),
                UpstreamErrorKind::kBadResponse);
  }

  // Reports an error (or retries) and returns false so the loop aborts the transfer.
  bool Fail(const absl::Status& status, UpstreamErrorKind kind, bool retryable = false) {
    done_ = true;
    const RemoteRequest& request = exchange_->request();
    CountImplausibleUsage();
    if (request.stats != nullptr) request.stats->AddError(kind);
    // Only the upstream's health counts: not the client's errors, not its cancellations.
    if (request.breaker != nullptr && (status.code() == absl::StatusCode::kUnavailable ||
                                       status.code() == absl::StatusCode::kDeadlineExceeded)) {
      request.breaker->RecordFailure();
    }
    // Once a delta reached the client a retry would repeat text it has already seen.
    if (retryable && !delivered_ && exchange_->MaybeRetry(retry_after_)) return false;
    // The usage read so far, which the gateway charges with the text already delivered.
    Completion completion;
    completion.usage = reader_->completion().usage;
    completion.retries = exchange_->retries();
    exchange_->End();
    absl::Status reported = RedactStatus(status, request.api_key);
    if (!request.target.empty()) {
      reported = WithMessage(reported, absl::StrCat("target '", request.target, "': ",
                                                    reported.message()));
    }
    guard_->Done(reported, completion);
    return false;
  }

  void Finish() {
    done_ = true;
    CountImplausibleUsage();
    if (const auto& breaker = exchange_->request().breaker) breaker->RecordSuccess();
    Completion completion = reader_->completion();
    completion.retries = exchange_->retries();
    exchange_->End();
    guard_->Done(absl::OkStatus(), completion);
  }

  void CountImplausibleUsage() {
    const auto& stats = exchange_->request().stats;
    if (stats != nullptr && reader_->implausible_token_counts() > 0) stats->AddImplausibleUsage();
  }

  // The events of one pass of the loop reach the sink as one burst (see ChatSink::BeginBurst):
  // begun at the first text, ended in OnBodyDone (dropped by the guard after Done or a cancel).
  void OnBodyDone() override {
    if (!in_burst_) return;
    in_burst_ = false;
    guard_->EndBurst();
  }

  bool Deliver(const std::string& text) {
    if (text.empty()) return true;
    delivered_ = true;
    if (!in_burst_) {
      in_burst_ = true;
      guard_->BeginBurst();
    }
    if (guard_->Delta(text)) return true;
    done_ = true;
    return false;
  }

  bool in_burst_ = false;  // a burst is open at the sink for this pass of the loop
  const std::shared_ptr<Exchange> exchange_;
  const int attempt_;
  const std::shared_ptr<SinkGuard> guard_;
  const std::unique_ptr<ResponseReader> reader_;
  int http_status_ = 0;
  std::optional<absl::Duration> retry_after_;
  // The response really is an event stream.
  bool sse_ = false;
  // A 2xx answer of a type we cannot read (lower-cased); empty when acceptable.
  std::string bad_content_type_;
  // Non-streaming or error bodies; bounded by the loop's max_body_bytes.
  std::string body_;
  SseParser parser_;
  std::string text_;  // one event's text, reused by the next
  // A delta reached the sink: from here on the attempt cannot be retried.
  bool delivered_ = false;
  // OnDone was delivered (or the sink refused more); ignore the rest of the transfer.
  bool done_ = false;
};

void Exchange::StartFirstAttempt() {
  if (request_.retry_budget != nullptr) request_.retry_budget->RequestStarted();
  {
    absl::MutexLock lock(&mu_);
    counted_ = request_.retry_budget != nullptr;
    ++attempts_;
  }
  // Not under mu_: the loop may send the request on this thread under its own lock, and the
  // handlers it runs under that lock take mu_.
  const CurlLoop::TransferId id =
      loop_->Start(http_, std::make_shared<RemoteHandler>(shared_from_this(), /*attempt=*/1));
  bool cancelled = false;
  {
    absl::MutexLock lock(&mu_);
    // Unless a retry started meanwhile (the answer came back on the loop first).
    if (attempts_ == 1) current_ = id;
    cancelled = cancelled_;
  }
  // Cancel() ran before the id was known; ending a finished transfer is a no-op.
  if (cancelled) loop_->Cancel(id);
}

// A retry, from a handler: the loop posts it, so mu_ is never held while the loop's lock is taken.
void Exchange::StartAttempt(absl::Duration delay) {
  ++attempts_;
  current_ = loop_->Start(http_, std::make_shared<RemoteHandler>(shared_from_this(), attempts_),
                          delay);
}

class RemoteCall : public Call {
 public:
  explicit RemoteCall(std::shared_ptr<Exchange> exchange) : exchange_(std::move(exchange)) {}

  // The guard gives the "no sink call after return" promise; the loop then drops the transfer,
  // or the pending retry, at once.
  void Cancel() override { exchange_->Cancel(); }

 private:
  const std::shared_ptr<Exchange> exchange_;
};

}  // namespace

absl::Status ValidateRemoteOptions(const RemoteOptions& options, const CurlLoop* loop) {
  if (loop == nullptr) return absl::InvalidArgumentError("a remote backend needs a CurlLoop");
  if (!absl::StartsWith(options.base_url, "http://") &&
      !absl::StartsWith(options.base_url, "https://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("base_url must start with http:// or https://, got \"", options.base_url,
                     "\""));
  }
  if (options.model.empty()) return absl::InvalidArgumentError("model must not be empty");
  if (options.max_body_bytes == 0) {
    return absl::InvalidArgumentError("max_body_bytes must be positive");
  }
  return absl::OkStatus();
}

HttpRequest BaseHttpRequest(const RemoteOptions& options, std::string url, bool stream) {
  HttpRequest http;
  http.url = std::move(url);
  http.headers = {"Content-Type: application/json",
                  stream ? "Accept: text/event-stream" : "Accept: application/json",
                  "User-Agent: switchyard"};
  http.streaming = stream;
  http.timeouts = options.timeouts;
  if (!stream) http.timeouts.first_byte = absl::InfiniteDuration();
  http.max_body_bytes = options.max_body_bytes;
  http.ca_bundle_path = options.ca_bundle_path;
  return http;
}

std::unique_ptr<Call> StartRemoteCall(const std::shared_ptr<CurlLoop>& loop, RemoteRequest request,
                                      std::shared_ptr<ChatSink> sink) {
  if (request.breaker != nullptr && !request.breaker->Allow()) {
    // Fail fast while the target is ejected; the sink still hears of it through OnDone.
    auto guard = std::make_shared<SinkGuard>(std::move(sink));
    std::string message = "upstream ejected by its circuit breaker after repeated failures; retry "
                          "later";
    if (!request.target.empty()) message = absl::StrCat("target '", request.target, "': ", message);
    guard->Done(absl::UnavailableError(message), Completion());
    auto exchange = std::make_shared<Exchange>(std::move(guard), loop, std::move(request));
    return std::make_unique<RemoteCall>(std::move(exchange));
  }
  // Every attempt of the exchange runs on the loop bound to this thread (an HTTP server thread's
  // own), so the request and its upstream transfer share one event loop.
  auto exchange = std::make_shared<Exchange>(std::make_shared<SinkGuard>(std::move(sink)),
                                             CurlLoop::ForThisThread(loop), std::move(request));
  exchange->StartFirstAttempt();
  return std::make_unique<RemoteCall>(std::move(exchange));
}

double ShortestDouble(float value) {
  char buffer[32];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof(buffer), value);
  *end = '\0';
  return std::strtod(buffer, nullptr);
}

std::string TruncateUpstreamText(std::string text) {
  if (text.size() <= kMaxUpstreamMessageBytes) return text;
  size_t cut = kMaxUpstreamMessageBytes;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  text.resize(cut);
  text.append("...");
  return text;
}

std::string UpstreamErrorMessage(std::string_view body) {
  Json parsed = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_object() && parsed.contains("error")) {
    const Json& error = parsed["error"];
    if (error.is_object() && error.contains("message") && error["message"].is_string()) {
      std::string message = error["message"].get<std::string>();
      // Anthropic's error.type ("overloaded_error") says more than its message does.
      if (parsed.contains("type") && parsed["type"] == "error" && error.contains("type") &&
          error["type"].is_string()) {
        return absl::StrCat(error["type"].get<std::string>(), ": ", message);
      }
      return message;
    }
    if (error.is_string()) return error.get<std::string>();
  }
  return std::string(absl::StripAsciiWhitespace(Sv(body)));
}

absl::Status UpstreamStreamError(std::string_view data) {
  return absl::UnavailableError(absl::StrCat(Sv(kStreamErrorPrefix),
                                             TruncateUpstreamText(UpstreamErrorMessage(data))));
}

absl::Status MalformedStream(std::string_view why) {
  return absl::UnavailableError(absl::StrCat("malformed upstream stream: ", Sv(why)));
}

}  // namespace switchyard::backends
