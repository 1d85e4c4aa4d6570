// A Backend for any OpenAI-compatible Chat Completions API (OpenAI, vLLM, llama.cpp server,
// OpenRouter, ...): POST {base_url}/chat/completions, streamed as SSE, over the shared CurlLoop.
//
// With `stream` on (the default) the request streams upstream and deltas reach the sink one by
// one as they arrive; off, the whole answer comes back as one JSON body and reaches the sink as
// one delta. Usage comes from the provider's "usage" object (in a stream, the final chunk, which
// we ask for with stream_options.include_usage).
//
// Error mapping (the message names the upstream HTTP status and carries the upstream's own error
// message, truncated, with the API key redacted):
//   connect / TLS / network failure, stream cut off     -> kUnavailable
//   upstream 5xx, invalid JSON or malformed SSE          -> kUnavailable
//   response body over max_body_bytes                    -> kUnavailable
//   any timeout (connect, first byte, idle, total)       -> kDeadlineExceeded
//   upstream 429                                         -> kResourceExhausted
//   upstream 400, 404, 413, 422 (the request is at fault)-> kInvalidArgument
//   other 4xx (401, 403: our key or config is at fault)  -> kFailedPrecondition
// finish_reason "length" maps to kLength; everything else ("stop", "content_filter",
// "tool_calls") to kStop.
//
// Threads: Start() only queues; sink methods run on the CurlLoop thread. The API key is sent only
// in the Authorization header and never appears in a status message or log.
#ifndef SWITCHYARD_BACKENDS_REMOTE_OPENAI_BACKEND_H_
#define SWITCHYARD_BACKENDS_REMOTE_OPENAI_BACKEND_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "backends/backend.h"
#include "backends/remote/curl_loop.h"

namespace switchyard::backends {

// Retries with jittered exponential backoff. Only an attempt that failed before any delta reached
// the sink is repeated, and only for upstream 429, 500, 502, 503, 504 or a connection that failed
// before a response began; a Retry-After (seconds) from the upstream lengthens the wait.
struct RetryOptions {
  // Attempts in all, the first included; 1 disables retries.
  int max_attempts = 3;
  absl::Duration initial_backoff = absl::Milliseconds(250);
  absl::Duration max_backoff = absl::Seconds(4);
  // No retry starts later than this after the request began (waits included); a Retry-After that
  // does not fit ends the request with the upstream's error at once.
  absl::Duration budget = absl::Seconds(15);
};

struct OpenAiOptions {
  // Everything before "/chat/completions", e.g. "https://api.openai.com/v1"; http or https.
  std::string base_url;
  // The "model" field sent upstream.
  std::string model;
  // Sent as "Authorization: Bearer <key>"; empty sends no Authorization header (local servers).
  // The gateway resolves it from the environment variable named in its config.
  std::string api_key;
  HttpTimeouts timeouts;
  size_t max_body_bytes = 8 << 20;
  // PEM CA bundle for TLS verification; empty uses the system store.
  std::string ca_bundle_path;
  // Stream upstream (SSE). Off only for providers or proxies that cannot stream; the total
  // timeout then applies.
  bool stream = true;
  RetryOptions retry;
};

class OpenAiBackend : public Backend {
 public:
  // Validates the options (InvalidArgument naming the field). `loop` is shared by all remote
  // backends of the process and must not be null.
  static absl::StatusOr<std::unique_ptr<OpenAiBackend>> Create(OpenAiOptions options,
                                                              std::shared_ptr<CurlLoop> loop);

  std::unique_ptr<Call> Start(ChatRequest request, std::shared_ptr<ChatSink> sink) override;

  // The exact JSON body sent upstream; public so tests and debugging tools can inspect it.
  std::string BuildRequestBody(const ChatRequest& request) const;

 private:
  OpenAiBackend(OpenAiOptions options, std::shared_ptr<CurlLoop> loop);

  const OpenAiOptions options_;
  const std::string url_;
  const std::shared_ptr<CurlLoop> loop_;
};

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_REMOTE_OPENAI_BACKEND_H_
