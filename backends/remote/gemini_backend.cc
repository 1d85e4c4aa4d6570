#include "backends/remote/gemini_backend.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace switchyard::backends {
namespace {

using Json = nlohmann::json;

FinishReason MapFinishReason(const Json& value) {
  if (!value.is_string()) return FinishReason::kStop;
  const std::string& reason = value.get_ref<const std::string&>();
  if (reason == "MAX_TOKENS") return FinishReason::kLength;
  // Every reason the API gives for a filter cutting the answer short (FinishReason in the
  // generateContent reference).
  if (reason == "SAFETY" || reason == "RECITATION" || reason == "BLOCKLIST" ||
      reason == "PROHIBITED_CONTENT" || reason == "SPII" || reason == "IMAGE_SAFETY" ||
      reason == "IMAGE_PROHIBITED_CONTENT" || reason == "IMAGE_RECITATION") {
    return FinishReason::kContentFilter;
  }
  return FinishReason::kStop;
}

// An integer field; 0 when absent, as proto3's JSON leaves zero counts out.
int64_t IntField(const Json& object, const char* name) {
  return object.contains(name) && object[name].is_number_integer() ? object[name].get<int64_t>()
                                                                   : 0;
}

// One GenerateContentResponse: a whole body, or one chunk of a stream.
class GeminiReader : public ResponseReader {
 public:
  absl::Status OnEvent(const SseEvent& event, std::string* text, bool* finished) override {
    Json chunk = Json::parse(event.data, nullptr, /*allow_exceptions=*/false);
    if (!chunk.is_object()) return MalformedStream("event data is not a JSON object");
    if (chunk.contains("error")) return UpstreamStreamError(event.data);
    return Read(chunk, text);
  }

  bool CompleteAtEnd() const override { return saw_finish_reason_; }

  absl::Status OnBody(std::string_view raw, std::string* text) override {
    Json body = Json::parse(raw, nullptr, /*allow_exceptions=*/false);
    if (!body.is_object()) {
      return absl::UnavailableError("upstream returned an invalid generateContent JSON");
    }
    if (absl::Status status = Read(body, text); !status.ok()) return status;
    if (!saw_candidate_) {
      return absl::UnavailableError("upstream returned an invalid generateContent JSON");
    }
    return absl::OkStatus();
  }

  Completion completion() const override { return completion_; }

 private:
  absl::Status Read(const Json& response, std::string* text) {
    if (response.contains("usageMetadata") && response["usageMetadata"].is_object()) {
      const Json& metadata = response["usageMetadata"];
      Usage& usage = completion_.usage;
      if (metadata.contains("promptTokenCount")) {
        TakeTokenCount(IntField(metadata, "promptTokenCount"), &usage.prompt_tokens,
                       &usage.prompt_reported);
      }
      // An answer with no output (blocked) leaves candidatesTokenCount out.
      const int64_t candidates = IntField(metadata, "candidatesTokenCount");
      const int64_t thoughts = IntField(metadata, "thoughtsTokenCount");
      // Each checked before the sum, which must not overflow.
      TakeTokenCount(PlausibleTokenCount(candidates) && PlausibleTokenCount(thoughts)
                         ? candidates + thoughts
                         : -1,
                     &usage.completion_tokens, &usage.completion_reported);
    }
    if (response.contains("candidates") && !response["candidates"].is_array()) {
      return MalformedStream("candidates is not a JSON array");
    }
    const bool has_candidates = response.contains("candidates") && !response["candidates"].empty();
    if (!has_candidates) {
      if (response.contains("promptFeedback") && response["promptFeedback"].is_object() &&
          response["promptFeedback"].contains("blockReason")) {
        return absl::InvalidArgumentError(
            absl::StrCat("upstream blocked the prompt: ",
                         response["promptFeedback"]["blockReason"].dump()));
      }
      // Usage-only chunks happen; they carry no text.
      return absl::OkStatus();
    }
    const Json& candidate = response["candidates"][0];
    if (!candidate.is_object()) return MalformedStream("candidate is not a JSON object");
    saw_candidate_ = true;
    // A finish chunk may come without content, and content without parts; anything present
    // must have the documented shape. Parts of other kinds (code, calls) carry no text.
    if (candidate.contains("content")) {
      const Json& content = candidate["content"];
      if (!content.is_object()) return MalformedStream("candidate content is not a JSON object");
      if (content.contains("parts")) {
        if (!content["parts"].is_array()) return MalformedStream("content parts is not an array");
        for (const Json& part : content["parts"]) {
          if (!part.is_object()) return MalformedStream("a content part is not a JSON object");
          if (part.contains("text") && !part["text"].is_string()) {
            return MalformedStream("a part's text is not a string");
          }
          const bool thought = part.contains("thought") && part["thought"].is_boolean() &&
                               part["thought"].get<bool>();
          if (thought || !part.contains("text")) continue;
          text->append(part["text"].get_ref<const std::string&>());
        }
      }
    }
    if (candidate.contains("finishReason") && candidate["finishReason"].is_string()) {
      saw_finish_reason_ = true;
      completion_.finish_reason = MapFinishReason(candidate["finishReason"]);
    }
    return absl::OkStatus();
  }

  Completion completion_;
  bool saw_candidate_ = false;
  bool saw_finish_reason_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<GeminiBackend>> GeminiBackend::Create(
    GeminiOptions options, std::shared_ptr<CurlLoop> loop) {
  if (absl::Status valid = ValidateRemoteOptions(options, loop.get()); !valid.ok()) return valid;
  std::string model(absl::StripPrefix(options.model, "models/"));
  // The model goes into the URL path: nothing in it may change the path or add a query.
  if (model.empty() || model.find_first_of("/?#%: ") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("model \"", options.model, "\" is not a valid Gemini model id"));
  }
  std::string model_url =
      absl::StrCat(absl::StripSuffix(options.base_url, "/"), "/models/", model);
  return std::unique_ptr<GeminiBackend>(
      new GeminiBackend(std::move(options), std::move(model_url), std::move(loop)));
}

GeminiBackend::GeminiBackend(GeminiOptions options, std::string model_url,
                             std::shared_ptr<CurlLoop> loop)
    : RemoteBackend(std::move(loop), options),
      options_(std::move(options)),
      stream_url_(absl::StrCat(model_url, ":streamGenerateContent?alt=sse")),
      body_url_(absl::StrCat(model_url, ":generateContent")) {}

std::string GeminiBackend::BuildRequestBody(const ChatRequest& request) const {
  using OJson = nlohmann::ordered_json;
  OJson body;
  OJson contents = OJson::array();
  OJson system_parts = OJson::array();
  for (const Message& message : request.messages) {
    if (message.role == "system" || message.role == "developer") {
      system_parts.push_back({{"text", message.content}});
      continue;
    }
    const std::string role = message.role == "assistant" ? "model" : "user";
    OJson part = {{"text", message.content}};
    if (!contents.empty() && contents.back()["role"] == role) {
      contents.back()["parts"].push_back(std::move(part));
    } else {
      contents.push_back({{"role", role}, {"parts", OJson::array({std::move(part)})}});
    }
  }
  body["contents"] = std::move(contents);
  if (!system_parts.empty()) body["systemInstruction"] = {{"parts", std::move(system_parts)}};
  OJson config = OJson::object();
  if (request.max_tokens.has_value()) config["maxOutputTokens"] = *request.max_tokens;
  if (request.temperature.has_value()) config["temperature"] = ShortestDouble(*request.temperature);
  if (request.top_p.has_value()) config["topP"] = ShortestDouble(*request.top_p);
  if (!request.stop.empty()) config["stopSequences"] = request.stop;
  if (request.seed.has_value()) config["seed"] = *request.seed;
  if (request.top_k.has_value()) config["topK"] = *request.top_k;
  if (request.frequency_penalty.has_value()) {
    config["frequencyPenalty"] = ShortestDouble(*request.frequency_penalty);
  }
  if (request.presence_penalty.has_value()) {
    config["presencePenalty"] = ShortestDouble(*request.presence_penalty);
  }
  if (!config.empty()) body["generationConfig"] = std::move(config);
  return body.dump(-1, ' ', false, OJson::error_handler_t::replace);
}

std::unique_ptr<Call> GeminiBackend::Start(const ChatRequest& request,
                                           std::shared_ptr<ChatSink> sink) {
  RemoteRequest remote;
  const bool stream = StreamsUpstream(options_.stream, request);
  remote.http = BaseHttpRequest(options_, stream ? stream_url_ : body_url_, stream);
  if (!options_.api_key.empty()) {
    remote.http.headers.push_back(absl::StrCat("x-goog-api-key: ", options_.api_key));
  }
  remote.http.body = BuildRequestBody(request);
  remote.api_key = options_.api_key;
  remote.retry = options_.retry;
  remote.new_reader = [] { return std::make_unique<GeminiReader>(); };
  return StartRemote(std::move(remote), std::move(sink));
}

}  // namespace switchyard::backends
