// Field-level JSON parsing shared by the client dialects (OpenAI, Anthropic): every error names
// the field at fault, as "'messages[0].content' must be a string".
#ifndef SWITCHYARD_GATEWAY_JSON_FIELDS_H_
#define SWITCHYARD_GATEWAY_JSON_FIELDS_H_

#include <optional>
#include <string>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "backends/backend.h"
#include "nlohmann/json.hpp"

namespace switchyard::gateway {

// Parses a request body that must be a JSON object; a syntax or UTF-8 error names its position.
absl::StatusOr<nlohmann::json> ParseJsonObject(std::string_view body);

// InvalidArgument "'field' problem".
absl::Status FieldError(std::string_view field, std::string_view problem);

// Message content: a string, or a list of typed items (`noun` names them in errors: "parts" for
// OpenAI, "content blocks" for Anthropic) of which only {"type":"text","text":...} is supported.
// null is the empty string. The text is moved out of `content`; `field` names it, and is only
// called for an error message.
absl::StatusOr<std::string> ParseTextContent(nlohmann::json& content,
                                             absl::FunctionRef<std::string()> field,
                                             std::string_view noun);

// body[key] as a number in [min, max] into `out`; absent or null leaves `out` unset.
absl::Status ParseOptionalNumber(const nlohmann::json& body, const char* key, double min,
                                 double max, std::optional<float>& out);

// body[key] as an integer in [min, max] into `out`; absent or null leaves `out` unset.
absl::Status ParseOptionalInt(const nlohmann::json& body, const char* key, int64_t min,
                              int64_t max, std::optional<int32_t>& out);

// The sampling fields beyond OpenAI's core set, under the names llama.cpp's server and vLLM
// accept: top_k, min_p, repeat_penalty; plus OpenAI's frequency_penalty and presence_penalty.
absl::Status ParseSamplingExtensions(const nlohmann::json& body, backends::ChatRequest& chat);

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_JSON_FIELDS_H_
