// OpenAI Chat Completions wire format <-> native types. Parsing validates everything a client
// controls and names the offending field in the error.
#ifndef SWITCHYARD_GATEWAY_OPENAI_CODEC_H_
#define SWITCHYARD_GATEWAY_OPENAI_CODEC_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "backends/backend.h"
#include "gateway/gateway.h"
#include "nlohmann/json.hpp"

namespace switchyard::gateway {

// Parses a POST /v1/chat/completions body. InvalidArgument names the field that is wrong.
absl::StatusOr<InboundRequest> ParseChatCompletionRequest(std::string_view body);

// The same, from a body already parsed by nlohmann (`switchyard classify` reads JSON lines;
// tests hold the two parsers' paths to the same answers).
absl::StatusOr<InboundRequest> ChatCompletionFromJson(const nlohmann::json& body);

// "stop", "length" or "content_filter", as OpenAI names them; gRPC uses the same names.
std::string_view FinishReasonName(backends::FinishReason reason);

// The non-streaming response object ("chat.completion").
std::string ChatCompletionJson(std::string_view id, std::string_view model, int64_t created,
                               std::string_view content, const backends::Completion& completion);

// The events of one stream. The start of every event (id, created, model) is the same, so it is
// rendered once, and each token costs only its own part.
class ChatChunkWriter {
 public:
  ChatChunkWriter(std::string id, std::string model, int64_t created);

  // One streaming "chat.completion.chunk" as an SSE event ("data: {...}\n\n"). `role` is set
  // in the first chunk only; `finish` in the last one, which carries its finish reason and no
  // usage (ChatUsageEvent does, when the client asked for it).
  std::string Event(std::string_view delta, bool first, const backends::Completion* finish) const;

 private:
  std::string id_;
  std::string model_;
  int64_t created_;
  // Null when the id or the model is not valid UTF-8: every event then goes through the DOM.
  std::optional<std::string> head_;
};

// The usage-only chunk OpenAI sends when stream_options.include_usage is set: after the
// finishing chunk, with "choices": [], the only chunk of the stream with a usage.
std::string ChatUsageEvent(std::string_view id, std::string_view model, int64_t created,
                           const backends::Usage& usage);

// {"error": {"message", "type", "param", "code"}} as OpenAI sends it; `param` names the request
// field at fault, when there is one (null otherwise).
std::string ErrorJson(std::string_view message, std::string_view type, std::string_view code,
                      const std::optional<std::string>& param = std::nullopt);
// The same for a status; a FieldError's field becomes `param`.
std::string ErrorJson(const absl::Status& status);

// GET /v1/models.
std::string ModelsJson(const Config& config, int64_t created);

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_OPENAI_CODEC_H_
