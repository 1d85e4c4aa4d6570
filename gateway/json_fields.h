// Field-level JSON parsing shared by the client dialects (OpenAI, Anthropic): every error names
// the field at fault, as "'messages[0].content' must be a string". The readers take a view of
// either parser's DOM (gateway/json_view.h).
#ifndef SWITCHYARD_GATEWAY_JSON_FIELDS_H_
#define SWITCHYARD_GATEWAY_JSON_FIELDS_H_

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "backends/backend.h"
#include "gateway/json_view.h"
#include "policies/absl_compat.h"

namespace switchyard::gateway {

// InvalidArgument "'field' problem", which carries the field's name for ErrorField.
absl::Status FieldError(std::string_view field, std::string_view problem);

// The field a FieldError names ("messages[0].role"), for the `param` of an OpenAI error; nullopt
// for other errors.
std::optional<std::string> ErrorField(const absl::Status& status);

// Message content: a string, or a list of typed items (`noun` names them in errors: "parts" for
// OpenAI, "content blocks" for Anthropic) of which only {"type":"text","text":...} is supported.
// Absent (nullopt) or null is the empty string. `field` names the content, and is only called
// for an error message.
template <typename View>
absl::StatusOr<std::string> ParseTextContent(const std::optional<View>& content,
                                             absl::FunctionRef<std::string()> field,
                                             std::string_view noun) {
  if (!content.has_value() || content->is_null()) return std::string();
  if (content->is_string()) return std::string(content->string());
  if (!content->is_array()) {
    return FieldError(field(), absl::StrCat("must be a string or a list of ", policies::Sv(noun)));
  }
  std::string text;
  absl::Status status = content->EachItem([&](size_t i, const View& item) {
    auto item_field = [&](std::string_view member) {
      return absl::StrCat(field(), "[", i, "]", policies::Sv(member));
    };
    if (!item.is_object()) return FieldError(item_field(""), "must be an object");
    std::optional<View> type = item.find("type");
    if (!type.has_value() || !type->is_string()) {
      return FieldError(item_field(".type"), "must be a string");
    }
    if (type->string() != "text") {
      return FieldError(item_field(".type"),
                        absl::StrCat("'", policies::Sv(type->string()),
                                     "' is not supported; only text ", policies::Sv(noun), " are"));
    }
    std::optional<View> item_text = item.find("text");
    if (!item_text.has_value() || !item_text->is_string()) {
      return FieldError(item_field(".text"), "must be a string");
    }
    text += item_text->string();
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return text;
}

// body[key] as a number in [min, max] into `out`; absent or null leaves `out` unset.
template <typename View>
absl::Status ParseOptionalNumber(const View& body, const char* key, double min, double max,
                                 std::optional<float>& out) {
  std::optional<View> it = body.find(key);
  if (!it.has_value() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return FieldError(key, "must be a number");
  const double value = it->number();
  if (!(value >= min && value <= max)) {
    return FieldError(key, absl::StrCat("must be between ", min, " and ", max));
  }
  out = static_cast<float>(value);
  return absl::OkStatus();
}

// body[key] as an integer in [min, max] into `out`; absent or null leaves `out` unset.
template <typename View>
absl::Status ParseOptionalInt(const View& body, const char* key, int64_t min, int64_t max,
                              std::optional<int32_t>& out) {
  std::optional<View> it = body.find(key);
  if (!it.has_value() || it->is_null()) return absl::OkStatus();
  if (!it->is_number_integer()) return FieldError(key, "must be an integer");
  const int64_t value = it->is_number_unsigned()
                            ? static_cast<int64_t>(std::min<uint64_t>(it->uint64(), INT64_MAX))
                            : it->int64();
  if (value < min || value > max) {
    return FieldError(key, absl::StrCat("must be between ", min, " and ", max));
  }
  out = static_cast<int32_t>(value);
  return absl::OkStatus();
}

// The sampling fields beyond OpenAI's core set, under the names llama.cpp's server and vLLM
// accept: top_k, min_p, repeat_penalty; plus OpenAI's frequency_penalty and presence_penalty.
template <typename View>
absl::Status ParseSamplingExtensions(const View& body, backends::ChatRequest& chat) {
  if (absl::Status s = ParseOptionalInt(body, "top_k", 0, 1 << 20, chat.top_k); !s.ok()) return s;
  if (absl::Status s = ParseOptionalNumber(body, "min_p", 0, 1, chat.min_p); !s.ok()) return s;
  if (absl::Status s = ParseOptionalNumber(body, "repeat_penalty", 0, 10, chat.repeat_penalty);
      !s.ok()) {
    return s;
  }
  if (chat.repeat_penalty.has_value() && *chat.repeat_penalty <= 0) {
    return FieldError("repeat_penalty", "must be greater than 0 (1 disables it)");
  }
  if (absl::Status s = ParseOptionalNumber(body, "frequency_penalty", -2, 2,
                                           chat.frequency_penalty);
      !s.ok()) {
    return s;
  }
  return ParseOptionalNumber(body, "presence_penalty", -2, 2, chat.presence_penalty);
}

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_JSON_FIELDS_H_
