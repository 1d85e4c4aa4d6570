#include "backends/remote/openai_backend.h"

#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "backends/json_text.h"
#include "backends/remote/openai_chunk.h"
#include "nlohmann/json.hpp"

namespace switchyard::backends {
namespace {

using Json = nlohmann::json;

FinishReason MapFinishReason(const Json& value) {
  if (!value.is_string()) return FinishReason::kStop;
  const std::string& reason = value.get_ref<const std::string&>();
  if (reason == "length") return FinishReason::kLength;
  if (reason == "content_filter") return FinishReason::kContentFilter;
  return FinishReason::kStop;
}

// usage.prompt_tokens and usage.completion_tokens where they are integers. One past int64_t
// (an unsigned JSON integer) wraps to a negative count, which TakeTokenCount refuses.
void UsageCounts(const Json& body, std::optional<int64_t>* prompt,
                 std::optional<int64_t>* completion) {
  if (!body.contains("usage") || !body["usage"].is_object()) return;
  const Json& u = body["usage"];
  if (u.contains("prompt_tokens") && u["prompt_tokens"].is_number_integer()) {
    *prompt = u["prompt_tokens"].get<int64_t>();
  }
  if (u.contains("completion_tokens") && u["completion_tokens"].is_number_integer()) {
    *completion = u["completion_tokens"].get<int64_t>();
  }
}

// choices[0], or null when absent (the usage-only final chunk has "choices": []).
const Json* FirstChoice(const Json& body) {
  if (!body.contains("choices") || !body["choices"].is_array() || body["choices"].empty()) {
    return nullptr;
  }
  const Json& choice = body["choices"][0];
  return choice.is_object() ? &choice : nullptr;
}

// Chat Completions chunks ("data: {...}" ending with "data: [DONE]") and bodies.
class OpenAiReader : public ResponseReader {
 public:
  absl::Status OnEvent(const SseEvent& event, std::string* text, bool* finished) override {
    if (event.data == "[DONE]") {
      *finished = true;
      return absl::OkStatus();
    }
    // The common case without a DOM; anything the scanner declines takes the DOM path below.
    if (OpenAiChunkFields fields; ScanOpenAiChunk(event.data, &fields)) {
      return Apply(fields, event.data, text);
    }
    Json chunk = Json::parse(event.data, nullptr, /*allow_exceptions=*/false);
    if (!chunk.is_object()) return MalformedStream("event data is not a JSON object");
    if (chunk.contains("error")) return UpstreamStreamError(event.data);
    ReadUsage(chunk);
    const Json* choice = FirstChoice(chunk);
    if (choice == nullptr) return absl::OkStatus();
    if (choice->contains("delta") && (*choice)["delta"].is_object()) {
      const Json& delta = (*choice)["delta"];
      if (delta.contains("content") && delta["content"].is_string()) {
        text->append(delta["content"].get_ref<const std::string&>());
      }
    }
    if (choice->contains("finish_reason") && !(*choice)["finish_reason"].is_null()) {
      saw_finish_reason_ = true;
      completion_.finish_reason = MapFinishReason((*choice)["finish_reason"]);
    }
    return absl::OkStatus();
  }

  absl::Status Apply(const OpenAiChunkFields& f, std::string_view data, std::string* text) {
    if (f.has_error) return UpstreamStreamError(data);
    Read(f, text);
    return absl::OkStatus();
  }

  void Read(const OpenAiChunkFields& f, std::string* text) {
    TakeUsage(f.prompt_tokens, f.completion_tokens);
    if (f.content.has_value()) text->append(*f.content);
    if (f.finish_reason) {
      saw_finish_reason_ = true;
      completion_.finish_reason = f.finish_is_length           ? FinishReason::kLength
                                  : f.finish_is_content_filter ? FinishReason::kContentFilter
                                                               : FinishReason::kStop;
    }
  }

  // Some servers close without [DONE]; a finished choice is then still a complete answer.
  bool CompleteAtEnd() const override { return saw_finish_reason_; }

  absl::Status OnBody(std::string_view raw, std::string* text) override {
    // As for chunks: the scanner reads the usual body, the DOM whatever it declines.
    if (OpenAiChunkFields fields; ScanOpenAiCompletion(raw, &fields)) {
      if (!fields.has_message) return InvalidCompletion();
      Read(fields, text);
      return absl::OkStatus();
    }
    Json body = Json::parse(raw, nullptr, /*allow_exceptions=*/false);
    const Json* choice = body.is_object() ? FirstChoice(body) : nullptr;
    if (choice == nullptr || !choice->contains("message") || !(*choice)["message"].is_object()) {
      return InvalidCompletion();
    }
    const Json& message = (*choice)["message"];
    if (message.contains("content") && message["content"].is_string()) {
      text->append(message["content"].get_ref<const std::string&>());
    }
    if (choice->contains("finish_reason")) {
      completion_.finish_reason = MapFinishReason((*choice)["finish_reason"]);
    }
    ReadUsage(body);
    return absl::OkStatus();
  }

  Completion completion() const override { return completion_; }

 private:
  void ReadUsage(const Json& body) {
    std::optional<int64_t> prompt, completion;
    UsageCounts(body, &prompt, &completion);
    TakeUsage(prompt, completion);
  }

  void TakeUsage(std::optional<int64_t> prompt, std::optional<int64_t> completion) {
    Usage& usage = completion_.usage;
    if (prompt.has_value()) TakeTokenCount(*prompt, &usage.prompt_tokens, &usage.prompt_reported);
    if (completion.has_value()) {
      TakeTokenCount(*completion, &usage.completion_tokens, &usage.completion_reported);
    }
  }

  static absl::Status InvalidCompletion() {
    return absl::UnavailableError("upstream returned an invalid completion JSON");
  }

  Completion completion_;
  bool saw_finish_reason_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<OpenAiBackend>> OpenAiBackend::Create(
    OpenAiOptions options, std::shared_ptr<CurlLoop> loop) {
  if (absl::Status valid = ValidateRemoteOptions(options, loop.get()); !valid.ok()) return valid;
  return std::unique_ptr<OpenAiBackend>(new OpenAiBackend(std::move(options), std::move(loop)));
}

OpenAiBackend::OpenAiBackend(OpenAiOptions options, std::shared_ptr<CurlLoop> loop)
    : RemoteBackend(std::move(loop), options),
      options_(std::move(options)),
      url_(absl::StrCat(absl::StripSuffix(options_.base_url, "/"), "/chat/completions")) {}

std::string OpenAiBackend::BuildRequestBody(const ChatRequest& request) const {
  if (std::optional<std::string> body = DirectRequestBody(request)) return *std::move(body);
  return DomRequestBody(request);
}

std::optional<std::string> OpenAiBackend::DirectRequestBody(const ChatRequest& request) const {
  size_t size = 192 + options_.model.size() + request.user.size();
  for (const Message& message : request.messages) {
    size += 32 + message.role.size() + message.content.size();
  }
  for (const std::string& stop : request.stop) size += 4 + stop.size();
  std::string out;
  out.reserve(size);
  // Numbers as dump() writes them: integers in decimal, floating point through nlohmann's own
  // shortest round-trip formatting (no text to escape there, so it stays cheap).
  auto number = [&out](std::string_view name, double value) {
    out += ",\"";
    out += name;
    out += "\":";
    out += Json(value).dump();
  };
  out += "{\"model\":";
  if (!AppendJsonString(options_.model, out)) return std::nullopt;
  out += ",\"messages\":[";
  for (size_t i = 0; i < request.messages.size(); ++i) {
    if (i > 0) out.push_back(',');
    out += "{\"role\":";
    if (!AppendJsonString(request.messages[i].role, out)) return std::nullopt;
    out += ",\"content\":";
    if (!AppendJsonString(request.messages[i].content, out)) return std::nullopt;
    out.push_back('}');
  }
  out.push_back(']');
  if (request.max_tokens.has_value()) {
    out += ",\"max_tokens\":";
    out += std::to_string(*request.max_tokens);
  }
  if (request.temperature.has_value()) number("temperature", ShortestDouble(*request.temperature));
  if (request.top_p.has_value()) number("top_p", ShortestDouble(*request.top_p));
  if (!request.stop.empty()) {
    out += ",\"stop\":[";
    for (size_t i = 0; i < request.stop.size(); ++i) {
      if (i > 0) out.push_back(',');
      if (!AppendJsonString(request.stop[i], out)) return std::nullopt;
    }
    out.push_back(']');
  }
  if (request.seed.has_value()) {
    out += ",\"seed\":";
    out += std::to_string(*request.seed);
  }
  if (request.frequency_penalty.has_value()) {
    number("frequency_penalty", ShortestDouble(*request.frequency_penalty));
  }
  if (request.presence_penalty.has_value()) {
    number("presence_penalty", ShortestDouble(*request.presence_penalty));
  }
  if (!request.user.empty()) {
    out += ",\"user\":";
    if (!AppendJsonString(request.user, out)) return std::nullopt;
  }
  out += StreamsUpstream(options_.stream, request)
             ? ",\"stream\":true,\"stream_options\":{\"include_usage\":true}}"
             : ",\"stream\":false}";
  return out;
}

std::string OpenAiBackend::DomRequestBody(const ChatRequest& request) const {
  // ordered_json keeps the fields in the order the OpenAI reference lists them, which makes
  // captured requests easy to read.
  nlohmann::ordered_json body;
  body["model"] = options_.model;
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  for (const Message& message : request.messages) {
    messages.push_back({{"role", message.role}, {"content", message.content}});
  }
  body["messages"] = std::move(messages);
  if (request.max_tokens.has_value()) body["max_tokens"] = *request.max_tokens;
  if (request.temperature.has_value()) body["temperature"] = ShortestDouble(*request.temperature);
  if (request.top_p.has_value()) body["top_p"] = ShortestDouble(*request.top_p);
  if (!request.stop.empty()) body["stop"] = request.stop;
  if (request.seed.has_value()) body["seed"] = *request.seed;
  if (request.frequency_penalty.has_value()) {
    body["frequency_penalty"] = ShortestDouble(*request.frequency_penalty);
  }
  if (request.presence_penalty.has_value()) {
    body["presence_penalty"] = ShortestDouble(*request.presence_penalty);
  }
  if (!request.user.empty()) body["user"] = request.user;
  const bool stream = StreamsUpstream(options_.stream, request);
  body["stream"] = stream;
  if (stream) body["stream_options"] = {{"include_usage", true}};
  // The gateway hands us valid UTF-8; replacing instead of throwing keeps a bug there from
  // becoming a crash here.
  return body.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::unique_ptr<Call> OpenAiBackend::Start(const ChatRequest& request,
                                           std::shared_ptr<ChatSink> sink) {
  RemoteRequest remote;
  remote.http = BaseHttpRequest(options_, url_, StreamsUpstream(options_.stream, request));
  if (!options_.api_key.empty()) {
    remote.http.headers.push_back(absl::StrCat("Authorization: Bearer ", options_.api_key));
  }
  remote.http.body = BuildRequestBody(request);
  remote.api_key = options_.api_key;
  remote.retry = options_.retry;
  remote.new_reader = [] { return std::make_unique<OpenAiReader>(); };
  return StartRemote(std::move(remote), std::move(sink));
}

}  // namespace switchyard::backends
