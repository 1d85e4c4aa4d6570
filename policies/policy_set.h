// The routing policy: YAML in, an immutable PolicySet out, Classify(request) -> Decision.
//
// A PolicySet is built once by FromYaml (which validates everything and reports file:line:column)
// and never changes; the gateway swaps whole sets on reload. Classify is pure: no I/O, no clocks,
// safe to call from any number of threads at once.
//
// The `policy:` section (the README's "Policy language" section has the full reference):
//
//   policy:
//     default: local                 # target when no rule matches (required)
//     sensitivity:                   # optional; every key has a default
//       levels: [public, internal, confidential, restricted]   # ascending (the default)
//       default_level: public        # level of a request with no findings
//       min_confidence: 0.0          # findings below it are ignored
//       detectors:                   # built-in type or prefix -> level, or `off`
//         secret: restricted         # every secret.* subtype ...
//         secret.jwt: confidential   # ... except the more specific entry
//         ip_address: off
//       dictionaries:                # case-insensitive whole words/phrases, thousands fine
//         - { name: codenames, level: confidential, terms: [falcon, "project falcon"] }
//       patterns:                    # RE2 regexes
//         - { name: employee_id, level: internal, regex: '\bEMP-\d{6}\b' }
//       metadata_key: sensitivity    # caller label that may raise (never lower) the level
//       tenants: { acme: confidential }   # level floor per metadata["tenant"]
//     clearance: { gpt-4o: internal }     # highest level a target may receive
//     rules:                         # ordered; the first rule that matches decides
//       - name: keep-secrets-local   # required, unique
//         description: why           # optional; becomes Decision.reason
//         when:                      # optional; a missing or empty `when` always matches
//           keywords: [confidential, "project falcon"]
//           patterns: ['\b\d{3}-\d{2}-\d{4}\b']
//           findings: [credit_card, secret, codenames]
//           min_level: confidential  # level at least
//           max_level: internal      # level at most
//           model: gpt-4o            # or a list; the requested model equals one of them
//           tenant: acme             # or a list; metadata["tenant"]
//           metadata: { team: [ml, infra] }   # every key must equal one of its values
//         route: local               # exactly one of route / deny
//         redact: true               # or [types]: remote targets get placeholders (see below)
//       - name: block
//         when: { keywords: [forbidden] }
//         deny: "This request is not allowed"
//
// Matching:
// - `keywords` are case-insensitive (ASCII) whole words or phrases; the words of a phrase may be
//   separated by any run of whitespace. `patterns` are RE2 regexes, case-sensitive unless they
//   say `(?i)`. `findings` names finding types (a prefix such as `secret` covers its subtypes).
//   Keywords, patterns and findings together form the rule's *content test*, which holds when
//   any one of them matches any message. Every other condition must hold as well.
// - A rule is a *content rule* when it has a content test or a `min_level`.
//
// Sensitivity: the request's level is the highest of `default_level`, the level of every
// finding, the tenant floor and the caller's `metadata_key` label. A label naming no level
// counts as the highest level (fail closed).
//
// Requested models:
// - requested_model "auto" (or a name that is not a configured target): rules are tried in
//   order; the first match decides; with no match the `default` target is used (rule "default").
// - requested_model naming a configured target pins the request to it, except that sensitivity
//   wins: rules are still tried in order, but only content rules and rules with a `model`
//   condition are considered. The first of those that matches decides (it may keep the request
//   local or deny it); otherwise the named target is used (rule "requested").
//
// Actions: `route: x`, `route: [x, y]` (an ordered fallback list), `route: cheapest` with
// optional `candidates: [..]` (by estimated price, cheapest first), or `deny: "message"`.
// Decision.targets is the ordered list the dispatcher may try, each target cleared.
//
// Redaction: a routing rule with `redact: true` (every finding) or `redact: [types]` (findings
// of those types or prefixes) marks those findings `redacted`; the gateway replaces them with
// placeholders before every send to a remote target of the decision and restores the answer.
// A remote target of such a decision receives `redacted_level` (the level without the redacted
// findings: tenant floors, caller labels and findings not redacted still count); local targets
// receive the original text and its full `level`. Clearance checks, at load time and at run
// time, use the level each target receives (SentLevel).
//
// Cost and difficulty: every Decision carries the estimated price on every target (`cost:`
// tunes the token estimate) and a difficulty score and tier (`difficulty:` tunes the
// heuristic); rules test them with min/max_estimated_usd, difficulty, min/max_difficulty.
//
// Sovereignty (only when `clearance` is given): a target may receive requests up to its
// clearance; local targets not listed may receive everything, remote targets not listed only
// the lowest level. At load time every path (route, fallbacks, explicit candidates, default)
// whose guaranteed lowest level exceeds its target's clearance is an error naming the path.
// At run time targets that may not receive the request's level are dropped; with none left
// Classify falls back to the default target if it may, and denies otherwise (Decision.rule
// keeps the rule, the reason says why).
// A scan failure (out of memory, or text that is not UTF-8 under a policy regex) denies the
// request: an unscanned request never goes anywhere.
#ifndef SWITCHYARD_POLICIES_POLICY_SET_H_
#define SWITCHYARD_POLICIES_POLICY_SET_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "policies/difficulty.h"
#include "policies/finding.h"
#include "yaml-cpp/yaml.h"

namespace switchyard::policies {

enum class Locality { kLocal, kRemote };

// What the policy needs to know about a configured target.
struct TargetInfo {
  std::string name;
  Locality locality = Locality::kLocal;
  // Price in USD per million tokens (the gateway config's `price: {input_per_million,
  // output_per_million}`); 0 when the target is free or unpriced (a local model).
  double input_usd_per_million = 0;
  double output_usd_per_million = 0;
};

// Exact prompt token counts for local targets, injected by the gateway so the policy stays pure.
class TokenCounter {
 public:
  virtual ~TokenCounter() = default;
  // The prompt's size in `target`'s tokens, or nullopt to fall back to the estimate.
  virtual std::optional<int64_t> CountPromptTokens(std::string_view target) const = 0;
};

// The facts about one request that rules can test. Built by the gateway; views must outlive the
// Classify call.
struct RequestFeatures {
  // The text of every message, in order (the policy scans all of it). Valid UTF-8, as the JSON
  // parsers and protobuf leave it: policy regexes match characters, not bytes.
  std::vector<std::string_view> texts;
  // "auto" or a target name.
  std::string_view requested_model = "auto";
  // Caller-declared labels.
  const std::map<std::string, std::string>* metadata = nullptr;
  // The exact prompt size in tokens when the gateway could count it (a local tokenizer); without
  // it the policy estimates: ceil(bytes / 4) per message plus 4 tokens of per-message overhead
  // (both tunable under `cost:`).
  std::optional<int64_t> prompt_tokens;
  // The request's completion limit (`max_tokens`); without it the policy expects
  // `cost.expected_completion_tokens` (256 unless configured).
  std::optional<int32_t> max_tokens;
  // Counts the prompt with a local target's own tokenizer; called once per local target during
  // Classify (the gateway asks the target's engine; nullopt when it cannot, e.g. a model not
  // loaded yet). Remote targets keep the estimate. Unset: every target is estimated.
  const TokenCounter* token_counter = nullptr;
  // Replaying a logged request whose text was not kept (`texts` then empty): the recorded finding
  // types stand in for the scan (those of detectors this policy does not run are dropped), and
  // the recorded difficulty for the scorer. Keyword and pattern tests cannot match
  // (PolicySet::TextRules names the rules that have them).
  const std::vector<Finding>* recorded_findings = nullptr;
  std::optional<DifficultyScore> recorded_difficulty;
};

// The estimated price of serving one request on one target.
struct TargetCost {
  std::string target;
  double estimated_usd = 0;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  // True when prompt_tokens is the target's own tokenizer count (a local target with a
  // TokenCounter, or RequestFeatures::prompt_tokens), false for the estimate.
  bool prompt_tokens_exact = false;
};

struct CostEstimate {
  // The chosen target's prompt tokens (TargetCost); the request-wide estimate when denied.
  int64_t prompt_tokens = 0;
  bool prompt_tokens_exact = false;
  int64_t completion_tokens = 0;  // max_tokens, or the policy's expected_completion_tokens
  double estimated_usd = 0;       // on the chosen target; 0 when denied
  std::vector<TargetCost> targets;  // every configured target, in configuration order
};

// Why a configured target did not serve a request.
struct Rejection {
  std::string target;
  // "not cleared for confidential", "rule 'x' fired first", "fallback 2 of rule 'x'",
  // "more expensive: 0.0035 USD vs 0.0015 USD", "not a candidate of rule 'x'",
  // "rule 'x' denied the request", "the request named 'y'", "no rule matched; the default is 'y'".
  std::string reason;

  friend bool operator==(const Rejection&, const Rejection&) = default;
};

struct Decision {
  std::string target;  // empty when denied; else targets[0]
  std::string rule;    // the rule that fired, "default" or "requested"
  Locality locality = Locality::kLocal;
  bool denied = false;
  std::string reason;          // the rule's description or the deny message
  std::string policy_version;  // content hash of the policy
  std::string level;           // the request's sensitivity level
  int level_rank = 0;          // its index in PolicySet::levels()
  // True when the rule redacts: remote targets receive the request with every finding marked
  // `redacted` replaced by a placeholder (policies/redact.h).
  bool redact = false;
  // The level of the request without its redacted findings: what a remote target of a redacting
  // decision receives. Equal to `level` when nothing is redacted.
  std::string redacted_level;
  int redacted_level_rank = 0;
  // What the detectors found, ordered by message and start; spans only, never values.
  std::vector<Finding> findings;
  // The targets the dispatcher may try, in order (a `route: [a, b]` fallback list, or the
  // cleared candidates of `route: cheapest` from cheapest up); every one is cleared for the level
  // it receives (SentLevel). Empty when denied.
  std::vector<std::string> targets;
  // Token counts and the estimated price on every target.
  CostEstimate cost;
  // How hard the request looks (score in [0, 1], tier, and each feature's contribution).
  DifficultyScore difficulty;
  // Every other configured target (all of them when denied), in configuration order, with why
  // it was not chosen.
  std::vector<Rejection> rejected;
};

namespace internal {
// How Classify counts tokens (the `cost:` section).
struct CostModel {
  int64_t expected_completion_tokens = 256;
  double bytes_per_token = 4;
  int64_t message_overhead_tokens = 4;
};
struct Rule;
struct Group;
}  // namespace internal

class Scanner;

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

  // Sensitivity levels, lowest first.
  const std::vector<std::string>& levels() const { return levels_; }

  // The rules whose `when` has keywords or patterns: they test the text itself, so a replay
  // from recorded findings (RequestFeatures::recorded_findings) cannot evaluate them.
  std::vector<std::string> TextRules() const;

  // Whether `target` may receive a request of level `level_rank` under `clearance`; the
  // dispatcher re-checks every send (fallbacks included) with it. Unknown targets may not.
  bool MayReceive(std::string_view target, int level_rank) const;

  // The level `target` receives under `decision`: redacted_level_rank for a remote target of a
  // redacting decision, level_rank otherwise.
  int SentLevel(const Decision& decision, std::string_view target) const;
  // Whether `target` may receive the request as `decision` would send it there.
  bool MayReceive(const Decision& decision, std::string_view target) const {
    return MayReceive(target, SentLevel(decision, target));
  }
  // Whether sends to `target` under `decision` carry placeholders instead of the findings.
  bool Redacts(const Decision& decision, std::string_view target) const;

 private:
  PolicySet();

  const TargetInfo* FindTarget(std::string_view name) const;
  int Clearance(std::string_view target) const;

  int TargetIndex(std::string_view name) const;
  // Fills decision.rejected; `fired` is the rule that decided, if any.
  void ExplainRejections(const internal::Rule* fired, Decision& decision) const;
  // The estimated price of `request` on the target a rule's `*_estimated_usd` tests.
  double RuleCostUsd(const internal::Rule& rule, const CostEstimate& cost,
                     const TargetInfo* pinned, int level, int redacted_level) const;

  std::string version_;
  internal::CostModel cost_model_;
  std::unique_ptr<const DifficultyScorer> difficulty_;
  TargetInfo default_target_;
  std::vector<TargetInfo> targets_;
  std::vector<int> clearance_;  // per targets_ entry
  std::vector<std::string> levels_;
  int default_level_ = 0;
  double min_confidence_ = 0;
  // Finding type -> level; a hash map because Classify looks up every finding.
  absl::flat_hash_map<std::string, int> type_levels_;
  std::string metadata_key_ = "sensitivity";
  std::map<std::string, int, std::less<>> tenant_levels_;
  std::vector<internal::Group> groups_;  // scanner groups (dictionaries, patterns, rule terms)
  std::vector<internal::Rule> rules_;
  std::unique_ptr<const Scanner> scanner_;
};

}  // namespace switchyard::policies

#endif  // SWITCHYARD_POLICIES_POLICY_SET_H_
