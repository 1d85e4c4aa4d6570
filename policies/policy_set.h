// The routing policy: YAML in, an immutable PolicySet out, Classify(request) -> Decision.
//
// A PolicySet is built once by FromYaml (which validates everything and reports file:line:column)
// and never changes; the gateway swaps whole sets on reload. Classify is pure: no I/O, no clocks,
// safe to call from any number of threads at once.
//
// The `policy:` section:
//
//   policy:
//     default: local                 # target when no rule matches (required)
//     rules:                         # ordered; the first rule that matches decides
//       - name: keep-secrets-local   # required, unique
//         description: why           # optional; becomes Decision.reason
//         when:                      # optional; a missing or empty `when` always matches
//           keywords: [confidential, "project falcon"]
//           patterns: ['\b\d{3}-\d{2}-\d{4}\b']
//           model: gpt-4o            # or a list; the requested model equals one of them
//         route: local               # exactly one of route / deny
//       - name: block
//         when: { keywords: [forbidden] }
//         deny: "This request is not allowed"
//
// Matching:
// - `keywords` are case-insensitive (ASCII) whole words or phrases; the words of a phrase may be
//   separated by any run of whitespace. `patterns` are RE2 regexes, case-sensitive unless they
//   say `(?i)`. Keywords and patterns together form the rule's *content test*, which holds when
//   any one of them matches any message. Every other condition (`model`) must hold as well.
// - A rule is a *content rule* when it has a content test.
//
// Requested models:
// - requested_model "auto" (or a name that is not a configured target): rules are tried in
//   order; the first match decides; with no match the `default` target is used (rule "default").
// - requested_model naming a configured target pins the request to it, except that sensitivity
//   wins: rules are still tried in order, but only content rules and rules with a `model`
//   condition are considered. The first of those that matches decides (it may keep the request
//   local or deny it); otherwise the named target is used (rule "requested").
#ifndef SWITCHYARD_POLICIES_POLICY_SET_H_
#define SWITCHYARD_POLICIES_POLICY_SET_H_

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "yaml-cpp/yaml.h"

namespace switchyard::policies {

enum class Locality { kLocal, kRemote };

// What the policy needs to know about a configured target.
struct TargetInfo {
  std::string name;
  Locality locality = Locality::kLocal;
};

// The facts about one request that rules can test. Built by the gateway; views must outlive the
// Classify call.
struct RequestFeatures {
  // The text of every message, in order (the policy scans all of it).
  std::vector<std::string_view> texts;
  // "auto" or a target name.
  std::string_view requested_model = "auto";
  // Caller-declared labels.
  const std::map<std::string, std::string>* metadata = nullptr;
};

struct Decision {
  std::string target;  // empty when denied
  std::string rule;    // the rule that fired, "default" or "requested"
  Locality locality = Locality::kLocal;
  bool denied = false;
  std::string reason;          // the rule's description or the deny message
  std::string policy_version;  // content hash of the policy
};

namespace internal {
struct Rule;
}  // namespace internal

class PolicySet {
 public:
  // Parses the `policy:` section of a config file. `file` names the file in error messages
  // ("file:line:column: message"); `targets` are the configured targets rules may name;
  // `version` (the content hash of the config file) is copied into every Decision.
  static absl::StatusOr<std::shared_ptr<const PolicySet>> FromYaml(
      const YAML::Node& node, std::string_view file, const std::vector<TargetInfo>& targets,
      std::string_view version);

  ~PolicySet();
  PolicySet(const PolicySet&) = delete;
  PolicySet& operator=(const PolicySet&) = delete;

  Decision Classify(const RequestFeatures& request) const;

  const std::string& version() const { return version_; }

 private:
  PolicySet();

  std::string version_;
  TargetInfo default_target_;
  std::vector<TargetInfo> targets_;
  std::vector<internal::Rule> rules_;
};

}  // namespace switchyard::policies

#endif  // SWITCHYARD_POLICIES_POLICY_SET_H_
