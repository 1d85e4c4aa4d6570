// Helpers for strict YAML config reading with "file:line:column: message" errors. Shared by the
// policy parser and the gateway's config loader, so every config error reads the same way.
#ifndef SWITCHYARD_POLICIES_YAML_UTIL_H_
#define SWITCHYARD_POLICIES_YAML_UTIL_H_

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "yaml-cpp/yaml.h"

namespace switchyard::policies {

// Reads typed values out of one YAML document, naming `file` in every error.
class YamlReader {
 public:
  explicit YamlReader(std::string file) : file_(std::move(file)) {}

  const std::string& file() const { return file_; }

  // InvalidArgument "file:line:column: message" at `node` (1-based line and column).
  absl::Status Error(const YAML::Node& node, std::string_view message) const;
  absl::Status Error(const YAML::Mark& mark, std::string_view message) const;

  // Requires `node` to be a map whose keys are all in `allowed`; `what` names it in errors
  // ("target 'x'"). An unknown key is an error at that key, with a "did you mean" hint.
  absl::Status ExpectMap(const YAML::Node& node, std::string_view what,
                         std::initializer_list<std::string_view> allowed) const;

  // Typed scalar getters for `map[key]`. Missing keys give nullopt (or an error if `required`).
  absl::StatusOr<std::optional<std::string>> String(const YAML::Node& map, std::string_view key,
                                                     bool required = false) const;
  absl::StatusOr<std::optional<int64_t>> Int(const YAML::Node& map, std::string_view key,
                                             int64_t min, int64_t max) const;
  absl::StatusOr<std::optional<double>> Double(const YAML::Node& map, std::string_view key,
                                               double min, double max) const;
  absl::StatusOr<std::optional<bool>> Bool(const YAML::Node& map, std::string_view key) const;
  absl::StatusOr<std::vector<std::string>> StringList(const YAML::Node& map,
                                                      std::string_view key) const;

 private:
  std::string file_;
};

// Parses a whole YAML text; syntax errors become "file:line:column: message", and so does a key
// given twice in one map, anywhere in the document.
absl::StatusOr<YAML::Node> ParseYaml(std::string_view text, std::string_view file);

}  // namespace switchyard::policies

#endif  // SWITCHYARD_POLICIES_YAML_UTIL_H_
