// A Backend for Google's Gemini API: POST {base_url}/models/{model}:generateContent, or
// :streamGenerateContent?alt=sse when the request streams upstream (backend.h), with the key
// in "x-goog-api-key".
//
// Request: system (and developer) messages become systemInstruction; the others become
// "contents", role "user" (user, tool) or "model" (assistant), consecutive messages of one role
// merged into one content of several text parts. max_tokens, temperature, top_p, stop and seed go
// into generationConfig (maxOutputTokens, temperature, topP, stopSequences, seed).
//
// Response: text is the concatenated text parts of candidates[0] (thought parts skipped). Usage
// comes from usageMetadata: promptTokenCount, and candidatesTokenCount plus thoughtsTokenCount
// (thinking tokens are billed as output). finishReason "MAX_TOKENS" maps to kLength, every other
// reason to kStop. A Gemini stream has no terminal event: it is complete when it ends after a
// chunk that carried a finishReason. A prompt blocked by the safety filters (promptFeedback
// .blockReason, no candidates) is kInvalidArgument.
//
// Errors map as remote_call.h describes. Threads: Start() only queues; sink methods run on the
// CurlLoop thread.
#ifndef SWITCHYARD_BACKENDS_REMOTE_GEMINI_BACKEND_H_
#define SWITCHYARD_BACKENDS_REMOTE_GEMINI_BACKEND_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "backends/backend.h"
#include "backends/remote/curl_loop.h"
#include "backends/remote/remote_call.h"

namespace switchyard::backends {

// base_url is the API root, e.g. "https://generativelanguage.googleapis.com/v1beta"; model is the
// bare model id ("gemini-2.0-flash"; a leading "models/" is accepted).
using GeminiOptions = RemoteOptions;

class GeminiBackend : public RemoteBackend {
 public:
  // Validates the options (InvalidArgument naming the field); `loop` must not be null.
  static absl::StatusOr<std::unique_ptr<GeminiBackend>> Create(GeminiOptions options,
                                                              std::shared_ptr<CurlLoop> loop);

  std::unique_ptr<Call> Start(const ChatRequest& request, std::shared_ptr<ChatSink> sink) override;

  // The exact JSON body sent upstream.
  std::string BuildRequestBody(const ChatRequest& request) const;

 private:
  // `model_url` is {base_url}/models/{model}.
  GeminiBackend(GeminiOptions options, std::string model_url, std::shared_ptr<CurlLoop> loop);

  const GeminiOptions options_;
  const std::string stream_url_;  // :streamGenerateContent?alt=sse
  const std::string body_url_;    // :generateContent
};

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_REMOTE_GEMINI_BACKEND_H_
