#include "gateway/openai_codec.h"

#include <cmath>
#include <limits>
#include <optional>
#include <string>

#include "policies/absl_compat.h"
#include "absl/strings/str_cat.h"
#include "backends/json_text.h"
#include "gateway/json_fields.h"
#include "gateway/status_map.h"
#include "nlohmann/json.hpp"

namespace switchyard::gateway {
namespace {

// Literals appended as string_views: their length is known, so an append is a copy, not a strlen
// and a copy (a stream appends a dozen per token).
using std::string_view_literals::operator""sv;

using backends::AppendJsonString;
// Responses keep OpenAI's field order (id, object, created, model, ...), which some clients log.
using ordered = nlohmann::ordered_json;

constexpr size_t kMaxStopSequences = 4;


ordered UsageJson(const backends::Usage& usage) {
  return ordered{{"prompt_tokens", usage.prompt_tokens},
              {"completion_tokens", usage.completion_tokens},
              {"total_tokens", usage.prompt_tokens + usage.completion_tokens}};
}

std::string Dump(const ordered& value) {
  // Replace, never throw, on invalid UTF-8 from a backend: the client still gets valid JSON.
  return value.dump(-1, ' ', false, ordered::error_handler_t::replace);
}

// The part of a stream's event that every event of the stream shares, up to the delta's
// fields; nullopt when the id or the model is not valid UTF-8.
std::optional<std::string> ChunkEventHead(std::string_view id, std::string_view model,
                                          int64_t created) {
  std::string out;
  out.reserve(96 + id.size() + model.size());
  out += "data: {\"id\":"sv;
  if (!AppendJsonString(id, out)) return std::nullopt;
  out += ",\"object\":\"chat.completion.chunk\",\"created\":"sv;
  out += std::to_string(created);
  out += ",\"model\":"sv;
  if (!AppendJsonString(model, out)) return std::nullopt;
  out += ",\"choices\":[{\"index\":0,\"delta\":{"sv;
  return out;
}

// A stream's event without a DOM, the per-token one and the finishing one (`finish` set), after
// its head: the same bytes Dump() gives, or false for a delta that is not valid UTF-8. The
// finishing event carries the finish reason and no usage: a stream's usage goes in its own last
// event, and only when the client asks for it (OpenAI's stream_options.include_usage), since
// clients that sum every usage they see would count it twice.
bool AppendChunkEventTail(std::string_view delta, bool first, const backends::Completion* finish,
                          std::string& out) {
  if (first) out += "\"role\":\"assistant\""sv;
  if (!delta.empty() || first) {
    if (first) out.push_back(',');
    out += "\"content\":"sv;
    if (!AppendJsonString(delta, out)) return false;
  }
  out += "},\"logprobs\":null,\"finish_reason\":"sv;
  if (finish == nullptr) {
    out += "null}]}\n\n"sv;
    return true;
  }
  out.push_back('"');
  out += FinishReasonName(finish->finish_reason);
  out += "\"}]}\n\n"sv;
  return true;
}

// The fixed text of the longest event's tail is under 80 bytes.
constexpr size_t kChunkTailBytes = 80;

// A stream's event through the DOM, which replaces text that is not valid UTF-8.
std::string DomChunkEvent(std::string_view id, std::string_view model, int64_t created,
                          std::string_view delta, bool first, const backends::Completion* finish) {
  ordered delta_object = ordered::object();
  if (first) delta_object["role"] = "assistant";
  if (!delta.empty() || first) delta_object["content"] = delta;
  ordered chunk = {
      {"id", id},
      {"object", "chat.completion.chunk"},
      {"created", created},
      {"model", model},
      {"choices", ordered::array({ordered{{"index", 0},
                                    {"delta", std::move(delta_object)},
                                    {"logprobs", nullptr},
                                    {"finish_reason", nullptr}}})},
  };
  if (finish != nullptr) {
    chunk["choices"][0]["finish_reason"] = FinishReasonName(finish->finish_reason);
  }
  return absl::StrCat("data: ", Dump(chunk), "\n\n");
}

}  // namespace

namespace {

// The request's fields off either parser's DOM (json_view.h).
template <typename View>
absl::StatusOr<InboundRequest> ReadChatCompletion(const View& parsed) {
  InboundRequest request;
  if (std::optional<View> model = parsed.find("model"); model && !model->is_null()) {
    if (!model->is_string()) return FieldError("model", "must be a string");
    request.requested_model = std::string(model->string());
    if (request.requested_model.empty()) request.requested_model = "auto";
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
    if (!role.has_value() || !role->is_string()) {
      return FieldError(field(".role"), "must be a string");
    }
    const std::string_view role_name = role->string();
    if (role_name != "system" && role_name != "user" && role_name != "assistant" &&
        role_name != "tool" && role_name != "developer") {
      return FieldError(field(".role"),
                        absl::StrCat("'", policies::Sv(role_name),
                                     "' is not one of system, developer, user, assistant, tool"));
    }
    absl::StatusOr<std::string> text =
        ParseTextContent(message.find("content"), [&] { return field(".content"); }, "parts");
    if (!text.ok()) return text.status();
    request.chat.messages.push_back(
        {role_name == "developer" ? std::string("system") : std::string(role_name),
         *std::move(text)});
    return absl::OkStatus();
  });
  if (!status.ok()) return status;

  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    std::optional<View> it = parsed.find(key);
    if (!it.has_value() || it->is_null()) continue;
    if (!it->is_number_integer()) return FieldError(key, "must be an integer");
    const int64_t value = it->int64();
    if (value < 1 || value > std::numeric_limits<int32_t>::max()) {
      return FieldError(key, "must be a positive integer");
    }
    request.chat.max_tokens = static_cast<int32_t>(value);
  }
  if (absl::Status s = ParseOptionalNumber(parsed, "temperature", 0, 2, request.chat.temperature);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ParseOptionalNumber(parsed, "top_p", 0, 1, request.chat.top_p); !s.ok()) {
    return s;
  }
  if (absl::Status s = ParseSamplingExtensions(parsed, request.chat); !s.ok()) return s;
  if (std::optional<View> seed = parsed.find("seed"); seed && !seed->is_null()) {
    if (!seed->is_number_integer()) return FieldError("seed", "must be an integer");
    request.chat.seed = seed->uint64();
  }
  if (std::optional<View> stop = parsed.find("stop"); stop && !stop->is_null()) {
    if (stop->is_string()) {
      request.chat.stop.emplace_back(stop->string());
    } else if (stop->is_array()) {
      if (absl::Status s = stop->EachItem([&](size_t, const View& item) {
            if (!item.is_string()) {
              return FieldError("stop", "must be a string or a list of strings");
            }
            request.chat.stop.emplace_back(item.string());
            return absl::OkStatus();
          });
          !s.ok()) {
        return s;
      }
    } else {
      return FieldError("stop", "must be a string or a list of strings");
    }
    if (request.chat.stop.size() > kMaxStopSequences) {
      return FieldError("stop", "may hold at most 4 sequences");
    }
    for (const std::string& sequence : request.chat.stop) {
      if (sequence.empty()) return FieldError("stop", "must not contain empty strings");
    }
  }
  if (std::optional<View> stream = parsed.find("stream"); stream && !stream->is_null()) {
    if (!stream->is_boolean()) return FieldError("stream", "must be true or false");
    request.stream = stream->boolean();
  }
  if (std::optional<View> options = parsed.find("stream_options");
      options && !options->is_null()) {
    if (!options->is_object()) return FieldError("stream_options", "must be an object");
    std::optional<View> include = options->find("include_usage");
    if (include.has_value() && !include->is_null()) {
      if (!include->is_boolean()) {
        return FieldError("stream_options.include_usage", "must be true or false");
      }
      request.include_usage = include->boolean();
    }
  }
  if (std::optional<View> n = parsed.find("n"); n && !n->is_null()) {
    if (!n->is_number_integer() || n->int64() != 1) {
      return FieldError("n", "must be 1 (one choice per request is supported)");
    }
  }
  if (std::optional<View> user = parsed.find("user"); user && !user->is_null()) {
    if (!user->is_string()) return FieldError("user", "must be a string");
    request.chat.user = std::string(user->string());
  }
  // What no target is asked to do is refused, not dropped: an app that asked for tool calls or
  // structured output and got plain text back would go wrong later, and quietly.
  for (const char* key : {"tools", "functions"}) {
    std::optional<View> it = parsed.find(key);
    if (it && !it->is_null() && !(it->is_array() && it->size() == 0)) {
      return FieldError(key, "is not supported: Switchyard forwards text messages only");
    }
  }
  for (const char* key : {"tool_choice", "function_call"}) {
    std::optional<View> it = parsed.find(key);
    if (it && !it->is_null() &&
        !(it->is_string() && (it->string() == "none" || it->string() == "auto"))) {
      return FieldError(key, "is not supported: only \"none\" or \"auto\", without tools");
    }
  }
  if (std::optional<View> format = parsed.find("response_format"); format && !format->is_null()) {
    if (!format->is_object()) return FieldError("response_format", "must be an object");
    std::optional<View> type = format->find("type");
    if (!type || !type->is_string()) return FieldError("response_format.type", "must be a string");
    if (type->string() != "text") {
      return FieldError("response_format.type",
                        absl::StrCat("'", policies::Sv(type->string()),
                                     "' is not supported; only \"text\" is"));
    }
  }
  if (std::optional<View> metadata = parsed.find("metadata"); metadata && !metadata->is_null()) {
    if (!metadata->is_object()) return FieldError("metadata", "must be an object of strings");
    if (absl::Status s = metadata->EachField([&](std::string_view key, const View& value) {
          if (!value.is_string()) {
            return FieldError(absl::StrCat("metadata.", policies::Sv(key)), "must be a string");
          }
          request.metadata[std::string(key)] = std::string(value.string());
          return absl::OkStatus();
        });
        !s.ok()) {
      return s;
    }
  }
  return request;
}

}  // namespace

absl::StatusOr<InboundRequest> ParseChatCompletionRequest(std::string_view body) {
  return ReadJsonBody(body, [](const auto& view) { return ReadChatCompletion(view); });
}

absl::StatusOr<InboundRequest> ChatCompletionFromJson(const nlohmann::json& body) {
  return ReadJsonBody(body, [](const auto& view) { return ReadChatCompletion(view); });
}

std::string_view FinishReasonName(backends::FinishReason reason) {
  switch (reason) {
    case backends::FinishReason::kLength:
      return "length";
    case backends::FinishReason::kContentFilter:
      return "content_filter";
    case backends::FinishReason::kStop:
      break;
  }
  return "stop";
}

std::string ChatCompletionJson(std::string_view id, std::string_view model, int64_t created,
                               std::string_view content, const backends::Completion& completion) {
  // Built directly (the same bytes as the DOM below) unless a text is not valid UTF-8.
  std::string out;
  out.reserve(256 + id.size() + model.size() + content.size());
  out += "{\"id\":"sv;
  bool valid = AppendJsonString(id, out);
  out += ",\"object\":\"chat.completion\",\"created\":"sv;
  out += std::to_string(created);
  out += ",\"model\":"sv;
  valid = valid && AppendJsonString(model, out);
  out += ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"sv;
  valid = valid && AppendJsonString(content, out);
  out += "},\"logprobs\":null,\"finish_reason\":\""sv;
  out += FinishReasonName(completion.finish_reason);
  out += "\"}],\"usage\":{\"prompt_tokens\":"sv;
  out += std::to_string(completion.usage.prompt_tokens);
  out += ",\"completion_tokens\":"sv;
  out += std::to_string(completion.usage.completion_tokens);
  out += ",\"total_tokens\":"sv;
  out += std::to_string(completion.usage.prompt_tokens + completion.usage.completion_tokens);
  out += "}}"sv;
  if (valid) return out;
  ordered response = {
      {"id", id},
      {"object", "chat.completion"},
      {"created", created},
      {"model", model},
      {"choices",
       ordered::array({ordered{{"index", 0},
                         {"message", {{"role", "assistant"}, {"content", content}}},
                         {"logprobs", nullptr},
                         {"finish_reason", FinishReasonName(completion.finish_reason)}}})},
      {"usage", UsageJson(completion.usage)},
  };
  return Dump(response);
}

ChatChunkWriter::ChatChunkWriter(std::string id, std::string model, int64_t created)
    : id_(std::move(id)),
      model_(std::move(model)),
      created_(created),
      head_(ChunkEventHead(id_, model_, created_)) {}

std::string ChatChunkWriter::Event(std::string_view delta, bool first,
                                   const backends::Completion* finish) const {
  if (head_.has_value()) {
    std::string event;
    event.reserve(head_->size() + kChunkTailBytes + delta.size());
    event += *head_;
    if (AppendChunkEventTail(delta, first, finish, event)) return event;
  }
  return DomChunkEvent(id_, model_, created_, delta, first, finish);
}

std::string ChatUsageEvent(std::string_view id, std::string_view model, int64_t created,
                           const backends::Usage& usage) {
  ordered chunk = {{"id", id},           {"object", "chat.completion.chunk"},
                {"created", created}, {"model", model},
                {"choices", ordered::array()}, {"usage", UsageJson(usage)}};
  return absl::StrCat("data: ", Dump(chunk), "\n\n");
}

std::string ErrorJson(std::string_view message, std::string_view type, std::string_view code,
                      const std::optional<std::string>& param) {
  ordered error = {{"error",
                    {{"message", message},
                     {"type", type},
                     {"param", param.has_value() ? ordered(*param) : ordered(nullptr)},
                     {"code", code}}}};
  return Dump(error);
}

std::string ErrorJson(const absl::Status& status) {
  const WireError& wire = MapStatus(status.code());
  // OpenAI's own answer to a bad key, which its SDKs recognise.
  if (status.code() == absl::StatusCode::kUnauthenticated) {
    return ErrorJson(policies::StdSv(status.message()), "invalid_request_error", "invalid_api_key");
  }
  // A field's error names the field, as OpenAI's do.
  return ErrorJson(policies::StdSv(status.message()), wire.openai_type, wire.outcome,
                   ErrorField(status));
}

std::string ModelsJson(const Config& config, int64_t created) {
  ordered data = ordered::array();
  data.push_back({{"id", "auto"}, {"object", "model"}, {"created", created},
                  {"owned_by", "switchyard"}});
  for (const TargetConfig& target : config.targets) {
    data.push_back({{"id", target.name},
                    {"object", "model"},
                    {"created", created},
                    {"owned_by", "switchyard"},
                    {"kind", TargetKindName(target.kind)},
                    {"locality", target.kind == TargetKind::kLocal ? "local" : "remote"}});
  }
  return Dump(ordered{{"object", "list"}, {"data", std::move(data)}});
}

}  // namespace switchyard::gateway
