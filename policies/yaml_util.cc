#include "policies/yaml_util.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "policies/absl_compat.h"

namespace switchyard::policies {
namespace {

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

const char* KindName(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Null:
      return "null";
    default:
      return "a scalar";
  }
}

// yaml-cpp keeps every entry of a repeated key: a lookup finds the first and a loop sees both,
// so half of a config written twice was silently ignored. Keys are compared as the strings they
// read as. An alias shares its anchor's node, whose mark it keeps, so each collection is walked
// once by position: an alias may even point at the collection that holds it.
absl::Status CheckDuplicateKeys(const YamlReader& reader, const YAML::Node& node,
                                absl::flat_hash_set<int>& walked) {
  if (!node.IsMap() && !node.IsSequence()) return absl::OkStatus();
  if (!walked.insert(node.Mark().pos).second) return absl::OkStatus();
  if (node.IsSequence()) {
    for (const YAML::Node& item : node) {
      if (absl::Status status = CheckDuplicateKeys(reader, item, walked); !status.ok()) {
        return status;
      }
    }
    return absl::OkStatus();
  }
  absl::flat_hash_map<std::string, int> first_lines;
  for (const auto& entry : node) {
    if (entry.first.IsScalar()) {
      const auto [first, inserted] =
          first_lines.try_emplace(entry.first.Scalar(), entry.first.Mark().line);
      if (!inserted) {
        return reader.Error(entry.first, absl::StrCat("duplicate key '", entry.first.Scalar(),
                                                      "' (first at line ", first->second + 1,
                                                      ")"));
      }
    }
    if (absl::Status status = CheckDuplicateKeys(reader, entry.second, walked); !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status YamlReader::Error(const YAML::Mark& mark, std::string_view message) const {
  if (mark.is_null()) return absl::InvalidArgumentError(absl::StrCat(file_, ": ", Sv(message)));
  return absl::InvalidArgumentError(
      absl::StrCat(file_, ":", mark.line + 1, ":", mark.column + 1, ": ", Sv(message)));
}

absl::Status YamlReader::Error(const YAML::Node& node, std::string_view message) const {
  return Error(node.Mark(), message);
}

absl::Status YamlReader::ExpectMap(const YAML::Node& node, std::string_view what,
                                   std::initializer_list<std::string_view> allowed) const {
  if (!node.IsMap()) {
    return Error(node, absl::StrCat(Sv(what), " must be a map, not ", KindName(node)));
  }
  for (const auto& entry : node) {
    const std::string key = entry.first.Scalar();
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    std::string hint;
    size_t best = 3;
    for (std::string_view candidate : allowed) {
      // A key that is a prefix of an allowed one ("timeout" for "timeout_seconds") is a near miss
      // however many characters are missing.
      const bool prefix = candidate.size() > key.size() && candidate.starts_with(key);
      size_t distance = prefix ? 1 : EditDistance(key, candidate);
      if (distance < best) {
        best = distance;
        hint = absl::StrCat(" (did you mean '", Sv(candidate), "'?)");
      }
    }
    if (hint.empty()) {
      std::string names;
      for (std::string_view candidate : allowed) {
        absl::StrAppend(&names, names.empty() ? "" : ", ", Sv(candidate));
      }
      hint = absl::StrCat(" (allowed: ", names, ")");
    }
    return Error(entry.first, absl::StrCat("unknown key '", key, "' in ", Sv(what), hint));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> YamlReader::String(const YAML::Node& map,
                                                              std::string_view key,
                                                              bool required) const {
  const YAML::Node node = map[std::string(key)];
  if (!node) {
    if (required) return Error(map, absl::StrCat("missing required key '", Sv(key), "'"));
    return std::nullopt;
  }
  if (!node.IsScalar()) {
    return Error(node, absl::StrCat("'", Sv(key), "' must be a string, not ", KindName(node)));
  }
  return node.Scalar();
}

absl::StatusOr<std::optional<int64_t>> YamlReader::Int(const YAML::Node& map,
                                                       std::string_view key, int64_t min,
                                                       int64_t max) const {
  const YAML::Node node = map[std::string(key)];
  if (!node) return std::nullopt;
  int64_t value = 0;
  if (!node.IsScalar() || !YAML::convert<int64_t>::decode(node, value)) {
    return Error(node, absl::StrCat("'", Sv(key), "' must be an integer"));
  }
  if (value < min || value > max) {
    return Error(node, absl::StrCat("'", Sv(key), "' must be between ", min, " and ", max, ", not ",
                                    value));
  }
  return value;
}

absl::StatusOr<std::optional<double>> YamlReader::Double(const YAML::Node& map,
                                                         std::string_view key, double min,
                                                         double max) const {
  const YAML::Node node = map[std::string(key)];
  if (!node) return std::nullopt;
  double value = 0;
  if (!node.IsScalar() || !YAML::convert<double>::decode(node, value) || std::isnan(value)) {
    return Error(node, absl::StrCat("'", Sv(key), "' must be a number"));
  }
  if (value < min || value > max) {
    return Error(node, absl::StrCat("'", Sv(key), "' must be between ", min, " and ", max, ", not ",
                                    node.Scalar()));
  }
  return value;
}

absl::StatusOr<std::optional<bool>> YamlReader::Bool(const YAML::Node& map,
                                                     std::string_view key) const {
  const YAML::Node node = map[std::string(key)];
  if (!node) return std::nullopt;
  bool value = false;
  if (!node.IsScalar() || !YAML::convert<bool>::decode(node, value)) {
    return Error(node, absl::StrCat("'", Sv(key), "' must be true or false"));
  }
  return value;
}

absl::StatusOr<std::vector<std::string>> YamlReader::StringList(const YAML::Node& map,
                                                                std::string_view key) const {
  std::vector<std::string> out;
  const YAML::Node node = map[std::string(key)];
  if (!node) return out;
  if (!node.IsSequence()) {
    return Error(node, absl::StrCat("'", Sv(key), "' must be a list of strings, not ", KindName(node)));
  }
  for (const auto& item : node) {
    if (!item.IsScalar()) {
      return Error(item, absl::StrCat("every item of '", Sv(key), "' must be a string"));
    }
    out.push_back(item.Scalar());
  }
  return out;
}

absl::StatusOr<YAML::Node> ParseYaml(std::string_view text, std::string_view file) {
  YamlReader reader{std::string(file)};
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return reader.Error(e.mark, e.msg);
  }
  absl::flat_hash_set<int> walked;
  if (absl::Status status = CheckDuplicateKeys(reader, root, walked); !status.ok()) return status;
  return root;
}

}  // namespace switchyard::policies
