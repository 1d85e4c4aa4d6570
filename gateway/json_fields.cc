#include "gateway/json_fields.h"

#include <optional>
#include <string>

#include "absl/strings/cord.h"

#include "absl/strings/str_cat.h"
#include "gateway/json_view.h"
#include "policies/absl_compat.h"
#include "simdjson.h"

namespace switchyard::gateway {

namespace {

// Bodies up to this size are parsed by a parser each thread keeps (its buffers grow to the
// largest document it has seen); larger ones get a parser of their own, freed with the body.
constexpr size_t kReusedParserBytes = 64 << 10;

// The status payload that names a FieldError's field.
constexpr char kFieldPayload[] = "type.googleapis.com/switchyard.FieldError";

}  // namespace

absl::StatusOr<JsonBody> JsonBody::Parse(std::string_view body) {
  // simdjson validates and indexes a body in a fraction of the time nlohmann's
  // character-at-a-time lexer takes (a 1 KiB chat request: see request_bench), and the fields
  // are then read off its DOM, with no second DOM built.
  thread_local simdjson::dom::parser reused;
  JsonBody out;
  simdjson::dom::parser* parser = &reused;
  if (body.size() > kReusedParserBytes) {
    out.own_ = std::make_unique<simdjson::dom::parser>();
    parser = out.own_.get();
  }
  simdjson::dom::element root;
  if (parser->parse(body.data(), body.size()).get(root) == simdjson::SUCCESS) {
    if (root.type() != simdjson::dom::element_type::OBJECT) {
      return absl::InvalidArgumentError("request body must be a JSON object");
    }
    out.fast_ = root;
    return out;
  }
  out.own_.reset();
  // What simdjson refuses nlohmann decides, with exceptions, whose message gives the error's
  // position: valid bodies take the fast path above. Not only parse_error: a number past
  // double's range (1e400) is an out_of_range, which escaping here used to end the process.
  try {
    out.slow_ = nlohmann::json::parse(body);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("request body is not valid JSON (UTF-8): ", e.what()));
  }
  if (!out.slow_.is_object()) {
    return absl::InvalidArgumentError("request body must be a JSON object");
  }
  return out;
}

absl::Status FieldError(std::string_view field, std::string_view problem) {
  absl::Status status = absl::InvalidArgumentError(
      absl::StrCat("'", policies::Sv(field), "' ", policies::Sv(problem)));
  status.SetPayload(kFieldPayload, absl::Cord(policies::Sv(field)));
  return status;
}

std::optional<std::string> ErrorField(const absl::Status& status) {
  absl::optional<absl::Cord> field = status.GetPayload(kFieldPayload);
  if (!field.has_value()) return std::nullopt;
  return std::string(*field);
}

}  // namespace switchyard::gateway
