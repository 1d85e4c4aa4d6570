#include "backends/remote/openai_backend.h"

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
#include "absl/time/time.h"
#include "backends/remote/sse_parser.h"
#include "backends/sink_guard.h"
#include "nlohmann/json.hpp"

namespace switchyard::backends {
namespace {

using Json = nlohmann::json;

// Upstream error text is shown to clients; a proxy's HTML error page must not flood them.
constexpr size_t kMaxUpstreamMessageBytes = 300;

// A float as the shortest decimal that reads back as the same float, so 0.7f goes upstream as 0.7
// and not as the 0.699999988079071 its double widening would print.
double ShortestDouble(float value) {
  char buffer[32];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof(buffer), value);
  *end = '\0';
  return std::strtod(buffer, nullptr);
}

// Cuts at a UTF-8 character boundary so the message stays valid UTF-8.
std::string Truncate(std::string text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  text.resize(cut);
  text.append("...");
  return text;
}

// Upstreams echo keys back (OpenAI's 401 names the key it got), so every text that reaches a
// status message passes through here.
std::string Redact(std::string text, const std::string& secret) {
  if (!secret.empty()) absl::StrReplaceAll({{secret, "[redacted]"}}, &text);
  return text;
}

absl::Status RedactStatus(const absl::Status& status, const std::string& secret) {
  if (status.ok() || secret.empty() || !absl::StrContains(status.message(), secret)) return status;
  return absl::Status(status.code(), Redact(std::string(status.message()), secret));
}

// The message of an OpenAI error body {"error": {"message": ...}}, else the raw body.
std::string UpstreamErrorMessage(std::string_view body) {
  Json parsed = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_object() && parsed.contains("error")) {
    const Json& error = parsed["error"];
    if (error.is_object() && error.contains("message") && error["message"].is_string()) {
      return error["message"].get<std::string>();
    }
    if (error.is_string()) return error.get<std::string>();
  }
  return std::string(absl::StripAsciiWhitespace(absl::string_view(body.data(), body.size())));
}

absl::Status StatusForHttp(int http_status, std::string_view body, const std::string& secret) {
  std::string detail =
      Truncate(Redact(UpstreamErrorMessage(body), secret), kMaxUpstreamMessageBytes);
  std::string message = absl::StrCat("upstream returned HTTP ", http_status);
  if (!detail.empty()) absl::StrAppend(&message, ": ", detail);
  if (http_status == 429) return absl::ResourceExhaustedError(message);
  if (http_status == 400 || http_status == 404 || http_status == 413 || http_status == 422) {
    return absl::InvalidArgumentError(message);
  }
  if (http_status >= 400 && http_status < 500) return absl::FailedPreconditionError(message);
  return absl::UnavailableError(message);
}

FinishReason MapFinishReason(const Json& value) {
  return value.is_string() && value.get<std::string>() == "length" ? FinishReason::kLength
                                                                    : FinishReason::kStop;
}

void ReadUsage(const Json& body, Usage* usage) {
  if (!body.contains("usage") || !body["usage"].is_object()) return;
  const Json& u = body["usage"];
  if (u.contains("prompt_tokens") && u["prompt_tokens"].is_number_integer()) {
    usage->prompt_tokens = u["prompt_tokens"].get<int64_t>();
  }
  if (u.contains("completion_tokens") && u["completion_tokens"].is_number_integer()) {
    usage->completion_tokens = u["completion_tokens"].get<int64_t>();
  }
}

// choices[0], or null when absent (the usage-only final chunk has "choices": []).
const Json* FirstChoice(const Json& body) {
  if (!body.contains("choices") || !body["choices"].is_array() || body["choices"].empty()) {
    return nullptr;
  }
  const Json& choice = body["choices"][0];
  return choice.is_object() ? &choice : nullptr;
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

class OpenAiHandler;

// One client request across its attempts. Owns the retry decision and the id of the transfer in
// flight, so Cancel() always reaches the current attempt.
class Exchange : public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(std::shared_ptr<SinkGuard> guard, std::shared_ptr<CurlLoop> loop, HttpRequest request,
           bool stream, std::string api_key, RetryOptions retry)
      : guard_(std::move(guard)),
        loop_(std::move(loop)),
        request_(std::move(request)),
        stream_(stream),
        api_key_(std::move(api_key)),
        retry_(retry),
        started_(absl::Now()) {}

  const std::shared_ptr<SinkGuard>& guard() const { return guard_; }
  const std::string& api_key() const { return api_key_; }

  void StartFirstAttempt() {
    absl::MutexLock lock(&mu_);
    StartAttempt(absl::ZeroDuration());
  }

  // Schedules another attempt if the policy allows; false means the caller reports the error.
  // Called by a handler whose attempt failed before any delta reached the sink.
  bool MaybeRetry(std::optional<absl::Duration> retry_after) {
    absl::MutexLock lock(&mu_);
    if (cancelled_ || guard_->finished() || attempts_ >= retry_.max_attempts) return false;
    absl::Duration delay = Backoff(retry_, attempts_);
    // The upstream knows its own rate limits better than our guess.
    if (retry_after.has_value()) delay = std::max(delay, *retry_after);
    if (absl::Now() + delay - started_ > retry_.budget) return false;
    StartAttempt(delay);
    return true;
  }

  void Cancel() {
    guard_->Cancel();
    CurlLoop::TransferId id;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      id = current_;
    }
    loop_->Cancel(id);
  }

 private:
  void StartAttempt(absl::Duration delay) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::shared_ptr<SinkGuard> guard_;
  const std::shared_ptr<CurlLoop> loop_;
  const HttpRequest request_;
  const bool stream_;
  const std::string api_key_;
  const RetryOptions retry_;
  const absl::Time started_;
  absl::Mutex mu_;
  int attempts_ ABSL_GUARDED_BY(mu_) = 0;
  CurlLoop::TransferId current_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

// Turns one attempt's transfer into sink calls. Runs on the loop thread only.
class OpenAiHandler : public TransferHandler {
 public:
  OpenAiHandler(std::shared_ptr<Exchange> exchange, bool stream)
      : exchange_(std::move(exchange)), guard_(exchange_->guard()), stream_(stream) {}

  void OnHead(const HttpResponseHead& head) override {
    http_status_ = head.status;
    // Some OpenAI-compatible servers ignore "stream": true and answer with one JSON body.
    const std::string content_type =
        absl::AsciiStrToLower(std::string(head.Header("content-type")));
    sse_ = stream_ && absl::StartsWith(content_type, "text/event-stream");
    // Only the delta-seconds form; an HTTP date falls back to our own backoff.
    int64_t seconds = 0;
    std::string retry_after(head.Header("retry-after"));
    if (absl::SimpleAtoi(retry_after, &seconds) && seconds >= 0) {
      retry_after_ = absl::Seconds(seconds);
    }
  }

  bool OnBody(std::string_view data) override {
    // After [DONE] keep draining so the connection can be reused.
    if (done_) return true;
    // The caller cancelled: stop the transfer now rather than at the loop's next wake-up.
    if (guard_->finished()) return false;
    if (!sse_ || !Is2xx()) {
      body_.append(data);
      return true;
    }
    events_.clear();
    if (absl::Status status = parser_.Feed(data, &events_); !status.ok()) {
      return Fail(absl::UnavailableError(
          absl::StrCat("malformed upstream stream: ", status.message())));
    }
    for (const SseEvent& event : events_) {
      if (!HandleEvent(event)) return false;
      if (done_) return true;
    }
    return true;
  }

  void OnComplete(const absl::Status& status) override {
    if (done_) return;
    if (!status.ok()) {
      // Only failures before any response (refused, DNS, TLS, reset before the status line) are
      // safe to repeat; after the status line the upstream may already be generating.
      Fail(status, /*retryable=*/status.code() == absl::StatusCode::kUnavailable &&
                       http_status_ == 0);
      return;
    }
    if (!Is2xx()) {
      const bool retryable = http_status_ == 429 || http_status_ == 500 || http_status_ == 502 ||
                             http_status_ == 503 || http_status_ == 504;
      Fail(StatusForHttp(http_status_, body_, exchange_->api_key()), retryable);
      return;
    }
    if (sse_) {
      // Some servers close without [DONE]; a finished choice and no half-read event is then
      // still a complete answer. Anything else means the stream was cut off.
      if (saw_finish_reason_ && !parser_.HasPartialEvent()) {
        Finish();
      } else {
        Fail(absl::UnavailableError("upstream stream ended before it was complete"));
      }
      return;
    }
    CompleteBody();
  }

 private:
  bool Is2xx() const { return http_status_ >= 200 && http_status_ < 300; }

  // Reports an error (or retries) and returns false so the loop aborts the transfer.
  bool Fail(const absl::Status& status, bool retryable = false) {
    done_ = true;
    // Once a delta reached the client a retry would repeat text it has already seen.
    if (retryable && !delivered_ && exchange_->MaybeRetry(retry_after_)) return false;
    guard_->Done(RedactStatus(status, exchange_->api_key()), Completion());
    return false;
  }

  void Finish() {
    done_ = true;
    guard_->Done(absl::OkStatus(), completion_);
  }

  bool Deliver(const std::string& text) {
    if (text.empty()) return true;
    delivered_ = true;
    return guard_->Delta(text);
  }

  bool HandleEvent(const SseEvent& event) {
    if (event.data == "[DONE]") {
      Finish();
      return true;
    }
    Json chunk = Json::parse(event.data, nullptr, /*allow_exceptions=*/false);
    if (!chunk.is_object()) {
      return Fail(
          absl::UnavailableError("malformed upstream stream: event data is not a JSON object"));
    }
    if (chunk.contains("error")) {
      return Fail(absl::UnavailableError(
          absl::StrCat("upstream stream error: ",
                       Truncate(Redact(UpstreamErrorMessage(event.data), exchange_->api_key()),
                                kMaxUpstreamMessageBytes))));
    }
    ReadUsage(chunk, &completion_.usage);
    const Json* choice = FirstChoice(chunk);
    if (choice == nullptr) return true;
    if (choice->contains("delta") && (*choice)["delta"].is_object()) {
      const Json& delta = (*choice)["delta"];
      if (delta.contains("content") && delta["content"].is_string() &&
          !Deliver(delta["content"].get_ref<const std::string&>())) {
        return false;
      }
    }
    if (choice->contains("finish_reason") && !(*choice)["finish_reason"].is_null()) {
      saw_finish_reason_ = true;
      completion_.finish_reason = MapFinishReason((*choice)["finish_reason"]);
    }
    return true;
  }

  void CompleteBody() {
    Json body = Json::parse(body_, nullptr, /*allow_exceptions=*/false);
    const Json* choice = body.is_object() ? FirstChoice(body) : nullptr;
    if (choice == nullptr || !choice->contains("message") || !(*choice)["message"].is_object()) {
      Fail(absl::UnavailableError("upstream returned an invalid completion JSON"));
      return;
    }
    const Json& message = (*choice)["message"];
    if (message.contains("content") && message["content"].is_string() &&
        !Deliver(message["content"].get_ref<const std::string&>())) {
      return;
    }
    if (choice->contains("finish_reason")) {
      completion_.finish_reason = MapFinishReason((*choice)["finish_reason"]);
    }
    ReadUsage(body, &completion_.usage);
    Finish();
  }

  const std::shared_ptr<Exchange> exchange_;
  const std::shared_ptr<SinkGuard> guard_;
  const bool stream_;
  int http_status_ = 0;
  std::optional<absl::Duration> retry_after_;
  // The response really is an event stream.
  bool sse_ = false;
  // Non-streaming or error bodies; bounded by the loop's max_body_bytes.
  std::string body_;
  SseParser parser_;
  std::vector<SseEvent> events_;
  Completion completion_;
  bool saw_finish_reason_ = false;
  // A delta reached the sink: from here on the attempt cannot be retried.
  bool delivered_ = false;
  // OnDone was delivered (or the sink refused more); ignore the rest of the transfer.
  bool done_ = false;
};

void Exchange::StartAttempt(absl::Duration delay) {
  ++attempts_;
  current_ = loop_->Start(request_, std::make_shared<OpenAiHandler>(shared_from_this(), stream_),
                          delay);
}

class OpenAiCall : public Call {
 public:
  explicit OpenAiCall(std::shared_ptr<Exchange> exchange) : exchange_(std::move(exchange)) {}

  // The guard gives the "no sink call after return" promise; the loop then drops the transfer,
  // or the pending retry, at once.
  void Cancel() override { exchange_->Cancel(); }

 private:
  const std::shared_ptr<Exchange> exchange_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<OpenAiBackend>> OpenAiBackend::Create(
    OpenAiOptions options, std::shared_ptr<CurlLoop> loop) {
  if (loop == nullptr) return absl::InvalidArgumentError("OpenAiBackend needs a CurlLoop");
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
  return std::unique_ptr<OpenAiBackend>(new OpenAiBackend(std::move(options), std::move(loop)));
}

OpenAiBackend::OpenAiBackend(OpenAiOptions options, std::shared_ptr<CurlLoop> loop)
    : options_(std::move(options)),
      url_(absl::StrCat(absl::StripSuffix(options_.base_url, "/"), "/chat/completions")),
      loop_(std::move(loop)) {}

std::string OpenAiBackend::BuildRequestBody(const ChatRequest& request) const {
  // ordered_json keeps the fields in the order the OpenAI reference lists them, which makes
  // captured requests easy to read.
  nlohmann::ordered_json body;
  body["model"] = options_.model;
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  for (const Message& message : request.messages) {
    messages.push_back({{"role", message.role}, {"content", message.content}});
  }
  body["messages"] = std::move(messages);
  if (request.max_tokens.has_value()) body["max_tokens"] = *request.max_tokens;
  if (request.temperature.has_value()) body["temperature"] = ShortestDouble(*request.temperature);
  if (request.top_p.has_value()) body["top_p"] = ShortestDouble(*request.top_p);
  if (!request.stop.empty()) body["stop"] = request.stop;
  if (request.seed.has_value()) body["seed"] = *request.seed;
  if (!request.user.empty()) body["user"] = request.user;
  body["stream"] = options_.stream;
  if (options_.stream) body["stream_options"] = {{"include_usage", true}};
  // The gateway hands us valid UTF-8; replacing instead of throwing keeps a bug there from
  // becoming a crash here.
  return body.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::unique_ptr<Call> OpenAiBackend::Start(ChatRequest request, std::shared_ptr<ChatSink> sink) {
  HttpRequest http;
  http.url = url_;
  http.headers = {"Content-Type: application/json",
                  options_.stream ? "Accept: text/event-stream" : "Accept: application/json",
                  "User-Agent: switchyard"};
  if (!options_.api_key.empty()) {
    http.headers.push_back(absl::StrCat("Authorization: Bearer ", options_.api_key));
  }
  http.body = BuildRequestBody(request);
  http.streaming = options_.stream;
  http.timeouts = options_.timeouts;
  http.max_body_bytes = options_.max_body_bytes;
  http.ca_bundle_path = options_.ca_bundle_path;
  auto exchange = std::make_shared<Exchange>(std::make_shared<SinkGuard>(std::move(sink)), loop_,
                                             std::move(http), options_.stream, options_.api_key,
                                             options_.retry);
  exchange->StartFirstAttempt();
  return std::make_unique<OpenAiCall>(std::move(exchange));
}

}  // namespace switchyard::backends
