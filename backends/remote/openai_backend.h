// A Backend for any OpenAI-compatible Chat Completions API (OpenAI, vLLM, llama.cpp server,
// OpenRouter, ...): POST {base_url}/chat/completions, streamed as SSE, over the shared CurlLoop.
//
// A request that streams upstream (StreamsUpstream, backend.h: by default when the client streams)
// hands deltas to the sink one by one as they arrive; otherwise the whole answer comes back as
// one JSON body and reaches the sink as one delta. Usage comes from the provider's "usage"
// object (in a stream, the final chunk, which we ask for with stream_options.include_usage).
//
// Errors map as remote_call.h describes. finish_reason "length" maps to kLength; everything else
// ("stop", "content_filter", "tool_calls") to kStop.
//
// Threads: Start() only queues; sink methods run on the CurlLoop thread. The API key is sent only
// in the Authorization header and never appears in a status message or log.
#ifndef SWITCHYARD_BACKENDS_REMOTE_OPENAI_BACKEND_H_
#define SWITCHYARD_BACKENDS_REMOTE_OPENAI_BACKEND_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "backends/backend.h"
#include "backends/remote/curl_loop.h"
#include "backends/remote/remote_call.h"

namespace switchyard::backends {

// base_url is everything before "/chat/completions", e.g. "https://api.openai.com/v1"; the key
// goes out as "Authorization: Bearer <key>".
using OpenAiOptions = RemoteOptions;

class OpenAiBackend : public RemoteBackend {
 public:
  // Validates the options (InvalidArgument naming the field). `loop` is shared by all remote
  // backends of the process and must not be null.
  static absl::StatusOr<std::unique_ptr<OpenAiBackend>> Create(OpenAiOptions options,
                                                              std::shared_ptr<CurlLoop> loop);

  std::unique_ptr<Call> Start(const ChatRequest& request, std::shared_ptr<ChatSink> sink) override;

  // The exact JSON body sent upstream; public so tests and debugging tools can inspect it.
  // Written directly (the per-request hot path), or through DomRequestBody when some text is not
  // valid UTF-8.
  std::string BuildRequestBody(const ChatRequest& request) const;
  // The same body built through nlohmann's DOM: invalid UTF-8 replaced by U+FFFD. The reference
  // the direct writer is tested against byte for byte.
  std::string DomRequestBody(const ChatRequest& request) const;

 private:
  // nullopt when some text is not valid UTF-8.
  std::optional<std::string> DirectRequestBody(const ChatRequest& request) const;
  OpenAiBackend(OpenAiOptions options, std::shared_ptr<CurlLoop> loop);

  const OpenAiOptions options_;
  const std::string url_;
};

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_REMOTE_OPENAI_BACKEND_H_
