// A Backend for Anthropic's Messages API: POST {base_url}/messages with the key in "x-api-key"
// and the API version in "anthropic-version", streamed as Anthropic's named SSE events.
//
// Request: system (and developer) messages become the top-level "system" string; consecutive
// messages of one role merge into one message of text content blocks, as the API wants turns to
// alternate; a "tool" message is sent as user text. max_tokens is required upstream, so a
// request without one gets `default_max_tokens`. The seed has no Anthropic equivalent and is
// dropped; `user` goes out as metadata.user_id.
//
// Response: text comes from "text" content blocks (text_delta in a stream); other block types
// (thinking, tool_use) are not text and are skipped. Usage comes from message_start's
// message.usage.input_tokens and message_delta's cumulative usage.output_tokens. stop_reason
// "max_tokens" maps to kLength, all others ("end_turn", "stop_sequence", "tool_use", "refusal")
// to kStop. Only message_stop completes a stream; an "error" event fails it with the error's type
// and message; event types we do not know are ignored, as Anthropic's versioning policy asks of
// clients (new event types may appear at any time).
//
// Errors map as remote_call.h describes (Anthropic's 529 "overloaded" is a retryable 5xx).
// Threads: Start() only queues; sink methods run on the CurlLoop thread.
#ifndef SWITCHYARD_BACKENDS_REMOTE_ANTHROPIC_BACKEND_H_
#define SWITCHYARD_BACKENDS_REMOTE_ANTHROPIC_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "backends/backend.h"
#include "backends/remote/curl_loop.h"
#include "backends/remote/remote_call.h"

namespace switchyard::backends {

struct AnthropicOptions : RemoteOptions {
  // Sent when a request sets no max_tokens (the API requires the field).
  int32_t default_max_tokens = 4096;
  std::string api_version = "2023-06-01";
};

class AnthropicBackend : public RemoteBackend {
 public:
  // Validates the options (InvalidArgument naming the field); `loop` must not be null.
  static absl::StatusOr<std::unique_ptr<AnthropicBackend>> Create(AnthropicOptions options,
                                                                 std::shared_ptr<CurlLoop> loop);

  std::unique_ptr<Call> Start(const ChatRequest& request, std::shared_ptr<ChatSink> sink) override;

  // The exact JSON body sent upstream.
  std::string BuildRequestBody(const ChatRequest& request) const;

 private:
  AnthropicBackend(AnthropicOptions options, std::shared_ptr<CurlLoop> loop);

  const AnthropicOptions options_;
  const std::string url_;
};

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_REMOTE_ANTHROPIC_BACKEND_H_
