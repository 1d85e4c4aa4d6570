// What every provider adapter shares: options, retries, the transfer handling over the CurlLoop,
// and the mapping of upstream HTTP errors to status codes. An adapter only builds its request
// (URL, headers, JSON body) and supplies a ResponseReader that understands its wire format.
//
// Error mapping (the message names the target when the options name it, the upstream HTTP status,
// and the upstream's own error message, truncated, with the API key redacted):
//   connect / TLS / network failure, stream cut off     -> kUnavailable
//   upstream 5xx, invalid JSON or malformed SSE          -> kUnavailable
//   a 2xx whose Content-Type is neither JSON nor SSE     -> kUnavailable
//   response over max_body_bytes, SSE line over it       -> kUnavailable
//   upstream 401, 403 (the gateway's key is refused)     -> kUnavailable
//   upstream 404 (the target's model or URL is wrong)    -> kUnavailable
//   any timeout (connect, first byte, idle, total)       -> kDeadlineExceeded
//   upstream 429                                         -> kResourceExhausted
//   upstream 400, 413, 422 (the request is at fault)     -> kInvalidArgument
//   other 4xx                                            -> kFailedPrecondition
// 401, 403 and 404 are the gateway's fault, not the client's: the client sees a 502.
#ifndef SWITCHYARD_BACKENDS_REMOTE_REMOTE_CALL_H_
#define SWITCHYARD_BACKENDS_REMOTE_REMOTE_CALL_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "backends/backend.h"
#include "backends/remote/circuit_breaker.h"
#include "backends/remote/curl_loop.h"
#include "backends/remote/sse_parser.h"
#include "backends/remote/upstream_stats.h"

namespace switchyard::backends {

// Retries with jittered exponential backoff. Only an attempt that failed before any delta reached
// the sink is repeated, and only for upstream 429, 500, 502, 503, 504, 529 or a connection that
// failed before a response began; a Retry-After (seconds) from the upstream lengthens the wait.
// The target's RetryBudget may refuse a retry: the request then ends with the upstream's error.
struct RetryOptions {
  // Attempts in all, the first included; 1 disables retries.
  int max_attempts = 3;
  absl::Duration initial_backoff = absl::Milliseconds(250);
  absl::Duration max_backoff = absl::Seconds(4);
  // No retry starts later than this after the request began (waits included); a Retry-After that
  // does not fit ends the request with the upstream's error at once.
  absl::Duration budget = absl::Seconds(15);
};

// The options every remote provider takes.
struct RemoteOptions {
  // The target's name in the gateway's config; error messages name it. Empty: none.
  std::string name;
  // The API root the provider's paths are appended to, e.g. "https://api.openai.com/v1"; http or
  // https.
  std::string base_url;
  // The upstream model name.
  std::string model;
  // Sent in the provider's key header; empty sends none (local servers). The gateway resolves it
  // from the environment variable named in its config. Never appears in a status or log.
  std::string api_key;
  HttpTimeouts timeouts;
  // The largest response accepted: a whole body, a whole stream, and so any one SSE line.
  size_t max_body_bytes = 8 << 20;
  // PEM CA bundle for TLS verification; empty uses the system store.
  std::string ca_bundle_path;
  // When to stream upstream. A request answered in one body has the connect and total timeouts
  // (and idle, between pieces of the body); first_byte does not apply, since a body's first byte
  // comes when the whole answer is ready.
  StreamUpstream stream = StreamUpstream::kAuto;
  RetryOptions retry;
  // Bounds the retries in flight at the target (see upstream_stats.h).
  RetryBudgetOptions retry_budget;
  // Ejects the target after repeated upstream failures (see circuit_breaker.h).
  CircuitBreakerOptions breaker;
};

// InvalidArgument naming the field at fault.
absl::Status ValidateRemoteOptions(const RemoteOptions& options, const CurlLoop* loop);

// Reads one attempt's response in one provider's wire format. A fresh reader serves each
// attempt; it runs on the loop thread only.
class ResponseReader {
 public:
  virtual ~ResponseReader() = default;
  // One SSE event. Appends the text it carries for the client to `text`; sets `*finished` when the
  // event completes the answer. An error fails the attempt with that status.
  virtual absl::Status OnEvent(const SseEvent& event, std::string* text, bool* finished) = 0;
  // The stream ended without an event that set `*finished`: whether what arrived is still a
  // complete answer (some servers close after the last chunk without a terminal event).
  virtual bool CompleteAtEnd() const = 0;
  // A whole JSON body (a non-streamed answer, or a server that ignored the stream request).
  virtual absl::Status OnBody(std::string_view body, std::string* text) = 0;
  // Finish reason and usage gathered so far.
  virtual Completion completion() const = 0;

  // Token counts of the upstream's that were not plausible (PlausibleTokenCount) and were
  // ignored.
  int implausible_token_counts() const { return implausible_token_counts_; }

 protected:
  // Stores a token count the upstream sent in `*count` and marks it reported when it is
  // plausible; otherwise counts it and marks the count not reported, so the request is metered
  // on the gateway's estimate, as if the upstream had not said.
  void TakeTokenCount(int64_t value, int64_t* count, bool* reported) {
    *reported = PlausibleTokenCount(value);
    if (*reported) {
      *count = value;
    } else {
      *count = 0;
      ++implausible_token_counts_;
    }
  }

 private:
  int implausible_token_counts_ = 0;
};

// One client request as the transport sees it.
struct RemoteRequest {
  // `http.streaming`: the answer was asked for as an event stream.
  HttpRequest http;
  // Redacted from every status message.
  std::string api_key;
  RetryOptions retry;
  std::function<std::unique_ptr<ResponseReader>()> new_reader;
  // Told every attempt's outcome; a request it does not allow fails at once with kUnavailable.
  // Null: none.
  std::shared_ptr<CircuitBreaker> breaker;
  // Admits retries; null: no limit beyond `retry`.
  std::shared_ptr<RetryBudget> retry_budget;
  // Counts retries and errors by kind; null: none.
  std::shared_ptr<UpstreamStats> stats;
  // Prefixes every error message as "target '<name>': "; empty: no prefix.
  std::string target;
};

// The HttpRequest fields every provider sets the same way from its options, for a request that
// streams upstream or not.
HttpRequest BaseHttpRequest(const RemoteOptions& options, std::string url, bool stream);

// Runs `request` with retries, feeding `sink`, on the calling thread's loop if one is bound
// (CurlLoop::BindToThisThread), else on `loop`. Never blocks.
std::unique_ptr<Call> StartRemoteCall(const std::shared_ptr<CurlLoop>& loop, RemoteRequest request,
                                      std::shared_ptr<ChatSink> sink);

// What every provider adapter is as a Backend: a target with its own circuit breaker, retry
// budget and counters.
class RemoteBackend : public Backend {
 public:
  // False while the circuit breaker has ejected the target.
  bool Available() const override { return breaker_->state() != BreakerState::kOpen; }
  const CircuitBreaker& breaker() const { return *breaker_; }
  const RetryBudget& retry_budget() const { return *retry_budget_; }
  const UpstreamStats& stats() const { return *stats_; }

 protected:
  RemoteBackend(std::shared_ptr<CurlLoop> loop, const RemoteOptions& options)
      : loop_(std::move(loop)),
        name_(options.name),
        breaker_(std::make_shared<CircuitBreaker>(options.breaker)),
        retry_budget_(std::make_shared<RetryBudget>(options.retry_budget)),
        stats_(std::make_shared<UpstreamStats>()) {}

  // StartRemoteCall on this target's loop, with its breaker, budget and counters.
  std::unique_ptr<Call> StartRemote(RemoteRequest request, std::shared_ptr<ChatSink> sink) {
    request.breaker = breaker_;
    request.retry_budget = retry_budget_;
    request.stats = stats_;
    request.target = name_;
    return StartRemoteCall(loop_, std::move(request), std::move(sink));
  }

  const std::shared_ptr<CurlLoop> loop_;
  const std::string name_;
  const std::shared_ptr<CircuitBreaker> breaker_;
  const std::shared_ptr<RetryBudget> retry_budget_;
  const std::shared_ptr<UpstreamStats> stats_;
};

// Shared wire helpers.

// A float as the shortest decimal that reads back as the same float, so 0.7f goes upstream as 0.7
// and not as the 0.699999988079071 its double widening would print.
double ShortestDouble(float value);
// Upstream text shown to clients, cut at a UTF-8 boundary so a proxy's HTML error page cannot
// flood them.
std::string TruncateUpstreamText(std::string text);
// The message of an error body shaped {"error": {"message": ...}} (OpenAI, Anthropic, Gemini all
// use that path), prefixed by Anthropic's error.type when present; else the raw body, trimmed.
std::string UpstreamErrorMessage(std::string_view body);
// kUnavailable "upstream stream error: <message>" for an error event inside a stream (counted as
// a server error, not a bad response).
absl::Status UpstreamStreamError(std::string_view data);
absl::Status MalformedStream(std::string_view why);

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_REMOTE_REMOTE_CALL_H_
