// Read-only views of a parsed JSON request body, with nlohmann's semantics whichever parser built
// it: of duplicate keys the last wins, an object's fields come in key order, and a non-negative
// integer is unsigned. The client dialects read their fields through a view, so one set of field
// rules reads simdjson's DOM (the fast path, with no copy of the body's strings into a second
// DOM) and nlohmann's (for what simdjson declines), and both give the same request or error.
#ifndef SWITCHYARD_GATEWAY_JSON_VIEW_H_
#define SWITCHYARD_GATEWAY_JSON_VIEW_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "simdjson.h"

namespace switchyard::gateway {

// A value of simdjson's DOM; valid while the parser that built it is.
class SimdjsonView {
 public:
  explicit SimdjsonView(simdjson::dom::element element) : e_(element) {}

  bool is_null() const { return type() == Type::NULL_VALUE; }
  bool is_boolean() const { return type() == Type::BOOL; }
  bool is_string() const { return type() == Type::STRING; }
  bool is_array() const { return type() == Type::ARRAY; }
  bool is_object() const { return type() == Type::OBJECT; }
  bool is_number() const { return is_number_integer() || type() == Type::DOUBLE; }
  bool is_number_integer() const { return type() == Type::INT64 || type() == Type::UINT64; }
  bool is_number_unsigned() const {
    return type() == Type::UINT64 || (type() == Type::INT64 && int64_t(e_) >= 0);
  }

  bool boolean() const { return bool(e_); }
  std::string_view string() const { return std::string_view(e_); }
  // Any number as a double; an integer as nlohmann's get<int64_t> and get<uint64_t> give it.
  double number() const {
    switch (type()) {
      case Type::INT64: return static_cast<double>(int64_t(e_));
      case Type::UINT64: return static_cast<double>(uint64_t(e_));
      default: return double(e_);
    }
  }
  int64_t int64() const {
    return type() == Type::UINT64 ? static_cast<int64_t>(uint64_t(e_)) : int64_t(e_);
  }
  uint64_t uint64() const {
    return type() == Type::UINT64 ? uint64_t(e_) : static_cast<uint64_t>(int64_t(e_));
  }

  // An object's field; nullopt when absent. Of duplicate keys the last wins.
  std::optional<SimdjsonView> find(std::string_view key) const {
    std::optional<SimdjsonView> found;
    for (simdjson::dom::key_value_pair field : simdjson::dom::object(e_)) {
      if (field.key == key) found.emplace(field.value);
    }
    return found;
  }
  // An array's length.
  size_t size() const { return simdjson::dom::array(e_).size(); }
  // Calls visit(index, item) for each item of an array, in order, up to the first error.
  template <typename Visit>
  absl::Status EachItem(Visit&& visit) const {
    size_t index = 0;
    for (simdjson::dom::element item : simdjson::dom::array(e_)) {
      if (absl::Status s = visit(index++, SimdjsonView(item)); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  // Calls visit(key, value) for each field of an object in key order (the last of duplicate
  // keys only), up to the first error.
  template <typename Visit>
  absl::Status EachField(Visit&& visit) const {
    std::vector<std::pair<std::string_view, simdjson::dom::element>> fields;
    for (simdjson::dom::key_value_pair field : simdjson::dom::object(e_)) {
      fields.emplace_back(field.key, field.value);
    }
    // Stable: of equal keys, the last in the document stays last.
    std::stable_sort(fields.begin(), fields.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (size_t i = 0; i < fields.size(); ++i) {
      if (i + 1 < fields.size() && fields[i + 1].first == fields[i].first) continue;
      if (absl::Status s = visit(fields[i].first, SimdjsonView(fields[i].second)); !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }

 private:
  using Type = simdjson::dom::element_type;
  Type type() const { return e_.type(); }

  simdjson::dom::element e_;
};

// A value of nlohmann's DOM, which must outlive the view.
class NlohmannView {
 public:
  explicit NlohmannView(const nlohmann::json& value) : j_(&value) {}

  bool is_null() const { return j_->is_null(); }
  bool is_boolean() const { return j_->is_boolean(); }
  bool is_string() const { return j_->is_string(); }
  bool is_array() const { return j_->is_array(); }
  bool is_object() const { return j_->is_object(); }
  bool is_number() const { return j_->is_number(); }
  bool is_number_integer() const { return j_->is_number_integer(); }
  bool is_number_unsigned() const { return j_->is_number_unsigned(); }

  bool boolean() const { return j_->get<bool>(); }
  std::string_view string() const { return j_->get_ref<const std::string&>(); }
  double number() const { return j_->get<double>(); }
  int64_t int64() const { return j_->get<int64_t>(); }
  uint64_t uint64() const { return j_->get<uint64_t>(); }

  std::optional<NlohmannView> find(std::string_view key) const {
    auto it = j_->find(key);
    if (it == j_->end()) return std::nullopt;
    return NlohmannView(*it);
  }
  size_t size() const { return j_->size(); }
  template <typename Visit>
  absl::Status EachItem(Visit&& visit) const {
    for (size_t i = 0; i < j_->size(); ++i) {
      if (absl::Status s = visit(i, NlohmannView((*j_)[i])); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  template <typename Visit>
  absl::Status EachField(Visit&& visit) const {
    for (const auto& [key, value] : j_->items()) {
      if (absl::Status s = visit(std::string_view(key), NlohmannView(value)); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

 private:
  const nlohmann::json* j_;
};

// A request body parsed as a JSON object: by simdjson when it takes the body, else by nlohmann,
// whose error messages give a syntax error's position. simdjson declines some bodies nlohmann
// accepts (nesting past 1,024, integers past 64 bits); nlohmann decides those, so what is
// accepted and every error message stay nlohmann's.
class JsonBody {
 public:
  // InvalidArgument for a body that is not valid JSON (UTF-8), or not an object.
  static absl::StatusOr<JsonBody> Parse(std::string_view body);

  // read(view) on the root object, with the view of the parser that took the body. Valid until
  // the next Parse on this thread, which may reuse the parser.
  template <typename Reader>
  auto Read(Reader&& read) const {
    return fast_.has_value() ? read(SimdjsonView(*fast_)) : read(NlohmannView(slow_));
  }

 private:
  JsonBody() = default;

  std::unique_ptr<simdjson::dom::parser> own_;  // for bodies too large for the reused parser
  std::optional<simdjson::dom::element> fast_;
  nlohmann::json slow_;
};

// Parses `body` and reads it with read(view), which returns a StatusOr: its answer, or the
// parse error.
template <typename Reader>
auto ReadJsonBody(std::string_view body, Reader&& read)
    -> decltype(read(std::declval<NlohmannView>())) {
  absl::StatusOr<JsonBody> parsed = JsonBody::Parse(body);
  if (!parsed.ok()) return parsed.status();
  return parsed->Read(read);
}

// The same for a body nlohmann has already parsed.
template <typename Reader>
auto ReadJsonBody(const nlohmann::json& body, Reader&& read)
    -> decltype(read(std::declval<NlohmannView>())) {
  if (!body.is_object()) return absl::InvalidArgumentError("request body must be a JSON object");
  return read(NlohmannView(body));
}

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_JSON_VIEW_H_
