#include "backends/remote/anthropic_backend.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace switchyard::backends {
namespace {

using Json = nlohmann::json;

FinishReason MapStopReason(const Json& value) {
  if (!value.is_string()) return FinishReason::kStop;
  const std::string& reason = value.get_ref<const std::string&>();
  if (reason == "max_tokens") return FinishReason::kLength;
  // The model declined for safety reasons, possibly after some text.
  if (reason == "refusal") return FinishReason::kContentFilter;
  return FinishReason::kStop;
}

const Json* Field(const Json& object, const char* name, Json::value_t type) {
  if (!object.is_object() || !object.contains(name) || object[name].type() != type) return nullptr;
  return &object[name];
}

// The "type" of an object, or "" when absent or not a string (value() would throw on a number).
std::string TypeOf(const Json& object) {
  const Json* type = Field(object, "type", Json::value_t::string);
  return type != nullptr ? type->get<std::string>() : "";
}

class AnthropicReader : public ResponseReader {
 public:
  absl::Status OnEvent(const SseEvent& event, std::string* text, bool* finished) override {
    Json data = Json::parse(event.data, nullptr, /*allow_exceptions=*/false);
    if (!data.is_object()) return MalformedStream("event data is not a JSON object");
    // The data's "type" repeats the event name; the name decides when both are present.
    std::string type = event.event;
    if (type.empty()) type = TypeOf(data);
    if (type == "message_start") {
      const Json* message = Field(data, "message", Json::value_t::object);
      if (message == nullptr) return MalformedStream("message_start without a message");
      ReadUsage(*message, /*final_output=*/false);
    } else if (type == "content_block_start") {
      const Json* block = Field(data, "content_block", Json::value_t::object);
      if (block != nullptr && TypeOf(*block) == "text") {
        if (const Json* t = Field(*block, "text", Json::value_t::string)) {
          text->append(t->get_ref<const std::string&>());
        }
      }
    } else if (type == "content_block_delta") {
      const Json* delta = Field(data, "delta", Json::value_t::object);
      if (delta == nullptr) return MalformedStream("content_block_delta without a delta");
      if (TypeOf(*delta) == "text_delta") {
        const Json* t = Field(*delta, "text", Json::value_t::string);
        if (t == nullptr) return MalformedStream("text_delta without text");
        text->append(t->get_ref<const std::string&>());
      }
    } else if (type == "message_delta") {
      if (const Json* delta = Field(data, "delta", Json::value_t::object)) {
        if (delta->contains("stop_reason") && !(*delta)["stop_reason"].is_null()) {
          completion_.finish_reason = MapStopReason((*delta)["stop_reason"]);
        }
      }
      ReadUsage(data);
    } else if (type == "message_stop") {
      *finished = true;
    } else if (type == "error") {
      return UpstreamStreamError(event.data);
    } else if (type != "ping" && type != "content_block_stop") {
      // The Messages stream is a closed set of events; anything else means we would be guessing
      // at what the client should see.
      return MalformedStream(absl::StrCat("unknown Anthropic event type '",
                                          TruncateUpstreamText(type), "'"));
    }
    return absl::OkStatus();
  }

  bool CompleteAtEnd() const override { return false; }

  absl::Status OnBody(std::string_view raw, std::string* text) override {
    Json body = Json::parse(raw, nullptr, /*allow_exceptions=*/false);
    const Json* content = Field(body, "content", Json::value_t::array);
    if (content == nullptr || TypeOf(body) != "message") {
      return absl::UnavailableError("upstream returned an invalid Messages JSON");
    }
    for (const Json& block : *content) {
      if (block.is_object() && TypeOf(block) == "text") {
        if (const Json* t = Field(block, "text", Json::value_t::string)) {
          text->append(t->get_ref<const std::string&>());
        }
      }
    }
    if (body.contains("stop_reason")) completion_.finish_reason = MapStopReason(body["stop_reason"]);
    ReadUsage(body);
    return absl::OkStatus();
  }

  Completion completion() const override { return completion_; }

 private:
  // Reads input_tokens, and output_tokens unless `final_output` is false, where present; absent
  // fields keep their value, since a stream reports them in different events. message_start's
  // output_tokens is a placeholder (1), not a count: a stream that never sends message_delta's is
  // metered on the text it delivered.
  void ReadUsage(const Json& object, bool final_output = true) {
    const Json* u = Field(object, "usage", Json::value_t::object);
    if (u == nullptr) return;
    Usage& usage = completion_.usage;
    auto take = [&](const char* name, int64_t* count, bool* reported) {
      if (u->contains(name) && (*u)[name].is_number_integer()) {
        TakeTokenCount((*u)[name].get<int64_t>(), count, reported);
      }
    };
    take("input_tokens", &usage.prompt_tokens, &usage.prompt_reported);
    if (final_output) take("output_tokens", &usage.completion_tokens, &usage.completion_reported);
  }

  Completion completion_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<AnthropicBackend>> AnthropicBackend::Create(
    AnthropicOptions options, std::shared_ptr<CurlLoop> loop) {
  if (absl::Status valid = ValidateRemoteOptions(options, loop.get()); !valid.ok()) return valid;
  if (options.default_max_tokens <= 0) {
    return absl::InvalidArgumentError("default_max_tokens must be positive");
  }
  return std::unique_ptr<AnthropicBackend>(
      new AnthropicBackend(std::move(options), std::move(loop)));
}

AnthropicBackend::AnthropicBackend(AnthropicOptions options, std::shared_ptr<CurlLoop> loop)
    : RemoteBackend(std::move(loop), options),
      options_(std::move(options)),
      url_(absl::StrCat(absl::StripSuffix(options_.base_url, "/"), "/messages")) {}

std::string AnthropicBackend::BuildRequestBody(const ChatRequest& request) const {
  using OJson = nlohmann::ordered_json;
  OJson body;
  body["model"] = options_.model;
  body["max_tokens"] = request.max_tokens.value_or(options_.default_max_tokens);
  std::string system;
  OJson messages = OJson::array();
  for (const Message& message : request.messages) {
    if (message.role == "system" || message.role == "developer") {
      if (!system.empty()) system += "\n\n";
      system += message.content;
      continue;
    }
    // The API rejects empty text blocks.
    if (message.content.empty()) continue;
    const std::string role = message.role == "assistant" ? "assistant" : "user";
    OJson block = {{"type", "text"}, {"text", message.content}};
    if (!messages.empty() && messages.back()["role"] == role) {
      messages.back()["content"].push_back(std::move(block));
    } else {
      messages.push_back({{"role", role}, {"content", OJson::array({std::move(block)})}});
    }
  }
  if (!system.empty()) body["system"] = system;
  body["messages"] = std::move(messages);
  if (request.temperature.has_value()) body["temperature"] = ShortestDouble(*request.temperature);
  if (request.top_p.has_value()) body["top_p"] = ShortestDouble(*request.top_p);
  if (request.top_k.has_value()) body["top_k"] = *request.top_k;
  if (!request.stop.empty()) body["stop_sequences"] = request.stop;
  if (!request.user.empty()) body["metadata"] = {{"user_id", request.user}};
  body["stream"] = StreamsUpstream(options_.stream, request);
  return body.dump(-1, ' ', false, OJson::error_handler_t::replace);
}

std::unique_ptr<Call> AnthropicBackend::Start(const ChatRequest& request,
                                              std::shared_ptr<ChatSink> sink) {
  RemoteRequest remote;
  remote.http = BaseHttpRequest(options_, url_, StreamsUpstream(options_.stream, request));
  remote.http.headers.push_back(absl::StrCat("anthropic-version: ", options_.api_version));
  if (!options_.api_key.empty()) {
    remote.http.headers.push_back(absl::StrCat("x-api-key: ", options_.api_key));
  }
  remote.http.body = BuildRequestBody(request);
  remote.api_key = options_.api_key;
  remote.retry = options_.retry;
  remote.new_reader = [] { return std::make_unique<AnthropicReader>(); };
  return StartRemote(std::move(remote), std::move(sink));
}

}  // namespace switchyard::backends
