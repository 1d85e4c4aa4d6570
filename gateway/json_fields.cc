#include "gateway/json_fields.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "policies/absl_compat.h"
#include "simdjson.h"

namespace switchyard::gateway {

using nlohmann::json;

namespace {

// Bodies up to this size are parsed by a parser each thread keeps (its buffers grow to the
// largest document it has seen); larger ones get a parser of their own, freed afterwards.
constexpr size_t kReusedParserBytes = 64 << 10;

// The same DOM nlohmann's parser builds: a non-negative integer is unsigned, as nlohmann stores
// it; of duplicate keys the last wins.
json ToJson(simdjson::dom::element element) {
  switch (element.type()) {
    case simdjson::dom::element_type::OBJECT: {
      json out = json::object();
      for (simdjson::dom::key_value_pair field : simdjson::dom::object(element)) {
        out[std::string(field.key)] = ToJson(field.value);
      }
      return out;
    }
    case simdjson::dom::element_type::ARRAY: {
      json out = json::array();
      for (simdjson::dom::element item : simdjson::dom::array(element)) {
        out.push_back(ToJson(item));
      }
      return out;
    }
    case simdjson::dom::element_type::STRING:
      return std::string(std::string_view(element));
    case simdjson::dom::element_type::INT64: {
      const int64_t value = int64_t(element);
      return value >= 0 ? json(static_cast<uint64_t>(value)) : json(value);
    }
    case simdjson::dom::element_type::UINT64:
      return uint64_t(element);
    case simdjson::dom::element_type::DOUBLE:
      return double(element);
    case simdjson::dom::element_type::BOOL:
      return bool(element);
    case simdjson::dom::element_type::NULL_VALUE:
      break;
  }
  return nullptr;
}

// simdjson validates and indexes a body in a fraction of the time nlohmann's character-at-a-time
// lexer takes (a 1 KiB chat request: see request_bench). nullopt when simdjson rejects the body,
// or takes it with a limit nlohmann does not have (nesting past 1,024, integers past 64 bits):
// nlohmann then decides, so what is accepted and every error message stay nlohmann's.
std::optional<json> FastParse(std::string_view body) {
  thread_local simdjson::dom::parser reused;
  std::optional<simdjson::dom::parser> own;
  simdjson::dom::parser& parser = body.size() <= kReusedParserBytes ? reused : own.emplace();
  simdjson::dom::element root;
  if (parser.parse(body.data(), body.size()).get(root) != simdjson::SUCCESS) return std::nullopt;
  return ToJson(root);
}

}  // namespace

absl::StatusOr<json> ParseJsonObject(std::string_view body) {
  std::optional<json> parsed = FastParse(body);
  if (!parsed.has_value()) {
    // What simdjson refuses nlohmann decides, with exceptions, whose message gives the error's
    // position: valid bodies take the fast path above. Not only parse_error: a number past
    // double's range (1e400) is an out_of_range, which escaping here used to end the process.
    try {
      parsed = json::parse(body);
    } catch (const json::exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("request body is not valid JSON (UTF-8): ", e.what()));
    }
  }
  if (!parsed->is_object()) return absl::InvalidArgumentError("request body must be a JSON object");
  return *std::move(parsed);
}

absl::Status FieldError(std::string_view field, std::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("'", policies::Sv(field), "' ", policies::Sv(problem)));
}

absl::StatusOr<std::string> ParseTextContent(json& content, absl::FunctionRef<std::string()> field,
                                             std::string_view noun) {
  if (content.is_null()) return std::string();
  if (content.is_string()) return std::move(content.get_ref<std::string&>());
  if (!content.is_array()) {
    return FieldError(field(), absl::StrCat("must be a string or a list of ", policies::Sv(noun)));
  }
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const json& item = content[i];
    auto item_field = [&](std::string_view member) {
      return absl::StrCat(field(), "[", i, "]", policies::Sv(member));
    };
    if (!item.is_object()) return FieldError(item_field(""), "must be an object");
    auto type = item.find("type");
    if (type == item.end() || !type->is_string()) {
      return FieldError(item_field(".type"), "must be a string");
    }
    if (*type != "text") {
      return FieldError(item_field(".type"),
                        absl::StrCat("'", type->get<std::string>(), "' is not supported; only text ",
                                     policies::Sv(noun), " are"));
    }
    auto item_text = item.find("text");
    if (item_text == item.end() || !item_text->is_string()) {
      return FieldError(item_field(".text"), "must be a string");
    }
    text += item_text->get_ref<const std::string&>();
  }
  return text;
}

absl::Status ParseOptionalNumber(const json& body, const char* key, double min, double max,
                                 std::optional<float>& out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return FieldError(key, "must be a number");
  const double value = it->get<double>();
  if (!(value >= min && value <= max)) {
    return FieldError(key, absl::StrCat("must be between ", min, " and ", max));
  }
  out = static_cast<float>(value);
  return absl::OkStatus();
}

absl::Status ParseOptionalInt(const json& body, const char* key, int64_t min, int64_t max,
                              std::optional<int32_t>& out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number_integer()) return FieldError(key, "must be an integer");
  const int64_t value = it->is_number_unsigned()
                            ? static_cast<int64_t>(std::min<uint64_t>(it->get<uint64_t>(), INT64_MAX))
                            : it->get<int64_t>();
  if (value < min || value > max) {
    return FieldError(key, absl::StrCat("must be between ", min, " and ", max));
  }
  out = static_cast<int32_t>(value);
  return absl::OkStatus();
}

absl::Status ParseSamplingExtensions(const json& body, backends::ChatRequest& chat) {
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
