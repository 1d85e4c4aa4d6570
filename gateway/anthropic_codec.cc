#include "gateway/anthropic_codec.h"

#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"
#include "backends/json_text.h"
#include "gateway/json_fields.h"
#include "gateway/status_map.h"
#include "nlohmann/json.hpp"
#include "policies/absl_compat.h"

namespace switchyard::gateway {
namespace {

// Responses keep Anthropic's field order (id, type, role, model, content, ...).
using ordered = nlohmann::ordered_json;


std::string_view AnthropicErrorType(int http_status) {
  switch (http_status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 504: return "timeout_error";
    default: return http_status < 500 ? "invalid_request_error" : "api_error";
  }
}

std::string Dump(const ordered& value) {
  // Replace, never throw, on invalid UTF-8 from a backend: the client still gets valid JSON.
  return value.dump(-1, ' ', false, ordered::error_handler_t::replace);
}

std::string Event(std::string_view name, const ordered& data) {
  return absl::StrCat("event: ", policies::Sv(name), "\ndata: ", Dump(data), "\n\n");
}

}  // namespace

namespace {

// The request's fields off either parser's DOM (json_view.h).
template <typename View>
absl::StatusOr<InboundRequest> ReadMessages(const View& parsed) {
  InboundRequest request;
  std::optional<View> model = parsed.find("model");
  if (!model.has_value() || !model->is_string()) return FieldError("model", "must be a string");
  request.requested_model = std::string(model->string());
  if (request.requested_model.empty()) request.requested_model = "auto";

  std::optional<View> max_tokens = parsed.find("max_tokens");
  if (!max_tokens.has_value()) return FieldError("max_tokens", "is required");
  if (!max_tokens->is_number_integer()) return FieldError("max_tokens", "must be an integer");
  const int64_t max_value = max_tokens->int64();
  if (max_value < 1 || max_value > std::numeric_limits<int32_t>::max()) {
    return FieldError("max_tokens", "must be a positive integer");
  }
  request.chat.max_tokens = static_cast<int32_t>(max_value);

  if (std::optional<View> system = parsed.find("system"); system && !system->is_null()) {
    absl::StatusOr<std::string> text =
        ParseTextContent(system, [] { return std::string("system"); }, "content blocks");
    if (!text.ok()) return text.status();
    if (!text->empty()) request.chat.messages.push_back({"system", *std::move(text)});
  }
  std::optional<View> messages = parsed.find("messages");
  if (!messages.has_value()) return FieldError("messages", "is required");
  if (!messages->is_array()) return FieldError("messages", "must be a list");
  if (messages->size() == 0) return FieldError("messages", "must contain at least one message");
  absl::Status status = messages->EachItem([&](size_t i, const View& message) -> absl::Status {
    auto field = [i](std::string_view member) {
      return absl::StrCat("messages[", i, "]", policies::Sv(member));
    };
    if (!message.is_object()) return FieldError(field(""), "must be an object");
    std::optional<View> role = message.find("role");
    if (!role.has_value() || !role->is_string() ||
        (role->string() != "user" && role->string() != "assistant")) {
      return FieldError(field(".role"), "must be \"user\" or \"assistant\"");
    }
    std::optional<View> content = message.find("content");
    // Anthropic requires content; unlike OpenAI's, a null is not an empty message.
    if (!content.has_value() || content->is_null()) {
      return FieldError(field(".content"), "is required");
    }
    absl::StatusOr<std::string> text =
        ParseTextContent(content, [&] { return field(".content"); }, "content blocks");
    if (!text.ok()) return text.status();
    request.chat.messages.push_back({std::string(role->string()), *std::move(text)});
    return absl::OkStatus();
  });
  if (!status.ok()) return status;

  if (absl::Status s = ParseOptionalNumber(parsed, "temperature", 0, 1, request.chat.temperature);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ParseOptionalNumber(parsed, "top_p", 0, 1, request.chat.top_p); !s.ok()) {
    return s;
  }
  if (absl::Status s = ParseOptionalInt(parsed, "top_k", 0, 1 << 20, request.chat.top_k); !s.ok()) {
    return s;
  }
  if (std::optional<View> top_k = parsed.find("top_k"); top_k && !top_k->is_null()) {
    // Accepted for compatibility; no backend samples by top_k through this interface.
    if (!top_k->is_number_integer() || top_k->int64() < 0) {
      return FieldError("top_k", "must be a non-negative integer");
    }
  }
  if (std::optional<View> stop = parsed.find("stop_sequences"); stop && !stop->is_null()) {
    if (!stop->is_array()) return FieldError("stop_sequences", "must be a list of strings");
    if (absl::Status s = stop->EachItem([&](size_t, const View& item) {
          if (!item.is_string() || item.string().empty()) {
            return FieldError("stop_sequences", "must be a list of non-empty strings");
          }
          request.chat.stop.emplace_back(item.string());
          return absl::OkStatus();
        });
        !s.ok()) {
      return s;
    }
  }
  if (std::optional<View> stream = parsed.find("stream"); stream && !stream->is_null()) {
    if (!stream->is_boolean()) return FieldError("stream", "must be true or false");
    request.stream = stream->boolean();
  }
  if (std::optional<View> metadata = parsed.find("metadata"); metadata && !metadata->is_null()) {
    if (!metadata->is_object()) return FieldError("metadata", "must be an object");
    if (std::optional<View> user = metadata->find("user_id"); user && !user->is_null()) {
      if (!user->is_string()) return FieldError("metadata.user_id", "must be a string");
      request.chat.user = std::string(user->string());
    }
  }
  for (const char* unsupported : {"tools", "tool_choice"}) {
    if (std::optional<View> it = parsed.find(unsupported); it && !it->is_null()) {
      return FieldError(unsupported, "is not supported");
    }
  }
  return request;
}

}  // namespace

absl::StatusOr<InboundRequest> ParseMessagesRequest(std::string_view body) {
  return ReadJsonBody(body, [](const auto& view) { return ReadMessages(view); });
}

absl::StatusOr<InboundRequest> MessagesFromJson(const nlohmann::json& body) {
  return ReadJsonBody(body, [](const auto& view) { return ReadMessages(view); });
}

std::string_view StopReasonName(backends::FinishReason reason) {
  switch (reason) {
    case backends::FinishReason::kLength:
      return "max_tokens";
    case backends::FinishReason::kContentFilter:
      return "refusal";
    case backends::FinishReason::kStop:
      break;
  }
  return "end_turn";
}

std::string MessageId(std::string_view request_id) {
  constexpr std::string_view kChatPrefix = "chatcmpl-";
  if (request_id.starts_with(kChatPrefix)) {
    return absl::StrCat("msg_", policies::Sv(request_id.substr(kChatPrefix.size())));
  }
  return std::string(request_id);
}

std::string MessageJson(std::string_view id, std::string_view model, std::string_view content,
                        const backends::Completion& completion) {
  ordered message = {
      {"id", id},
      {"type", "message"},
      {"role", "assistant"},
      {"model", model},
      {"content", ordered::array({ordered{{"type", "text"}, {"text", content}}})},
      {"stop_reason", StopReasonName(completion.finish_reason)},
      {"stop_sequence", nullptr},
      {"usage",
       {{"input_tokens", completion.usage.prompt_tokens},
        {"output_tokens", completion.usage.completion_tokens}}},
  };
  return Dump(message);
}

std::string MessageStartEvents(std::string_view id, std::string_view model) {
  // Usage is known only at the end; message_delta carries it (input_tokens included).
  ordered start = {{"type", "message_start"},
                   {"message",
                    {{"id", id},
                     {"type", "message"},
                     {"role", "assistant"},
                     {"model", model},
                     {"content", ordered::array()},
                     {"stop_reason", nullptr},
                     {"stop_sequence", nullptr},
                     {"usage", {{"input_tokens", 0}, {"output_tokens", 0}}}}}};
  ordered block = {{"type", "content_block_start"},
                   {"index", 0},
                   {"content_block", {{"type", "text"}, {"text", ""}}}};
  return absl::StrCat(Event("message_start", start), Event("content_block_start", block),
                      Event("ping", ordered{{"type", "ping"}}));
}

std::string MessageDeltaEvent(std::string_view text) {
  // Every token of a stream comes through here: built directly, the same bytes as the DOM
  // below, unless the text is not valid UTF-8 (the DOM then replaces what is invalid).
  constexpr std::string_view kStart =
      "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
      "\"delta\":{\"type\":\"text_delta\",\"text\":";
  constexpr std::string_view kEnd = "}}\n\n";
  std::string event;
  event.reserve(kStart.size() + text.size() + 8 + kEnd.size());
  event.append(kStart);
  if (backends::AppendJsonString(text, event)) {
    event.append(kEnd);
    return event;
  }
  return Event("content_block_delta", ordered{{"type", "content_block_delta"},
                                              {"index", 0},
                                              {"delta", {{"type", "text_delta"}, {"text", text}}}});
}

std::string MessageEndEvents(const backends::Completion& completion) {
  ordered delta = {
      {"type", "message_delta"},
      {"delta",
       {{"stop_reason", StopReasonName(completion.finish_reason)}, {"stop_sequence", nullptr}}},
      {"usage",
       {{"input_tokens", completion.usage.prompt_tokens},
        {"output_tokens", completion.usage.completion_tokens}}}};
  return absl::StrCat(
      Event("content_block_stop", ordered{{"type", "content_block_stop"}, {"index", 0}}),
      Event("message_delta", delta), Event("message_stop", ordered{{"type", "message_stop"}}));
}

std::string MessageErrorEvent(const absl::Status& status) {
  return absl::StrCat("event: error\ndata: ", AnthropicErrorJson(status), "\n\n");
}

std::string AnthropicErrorJson(std::string_view type, std::string_view message) {
  return Dump(ordered{{"type", "error"}, {"error", {{"type", type}, {"message", message}}}});
}

std::string AnthropicErrorJson(const absl::Status& status) {
  return AnthropicErrorJson(AnthropicErrorType(MapStatus(status.code()).http_status),
                            policies::StdSv(status.message()));
}

}  // namespace switchyard::gateway
