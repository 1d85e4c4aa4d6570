// How hard a request looks: a score in [0, 1] and a tier (easy, medium, hard) that rules can
// route on, so cheap targets get easy prompts and strong ones get hard prompts.
//
// DifficultyScorer is the seam a learned model can fill later; HeuristicDifficultyScorer is the
// built-in, documented one (policies/README.md, "Difficulty"): seven features, each squashed to
// [0, 1] with x / (x + half) so no single signal dominates, weighted, summed into s, and the
// score is 1 - exp(-s). Its weights and the tier thresholds come from the policy's `difficulty:`
// section.
//
// Thread-safety: Score is const and may run on many threads at once.
#ifndef SWITCHYARD_POLICIES_DIFFICULTY_H_
#define SWITCHYARD_POLICIES_DIFFICULTY_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "yaml-cpp/yaml.h"

namespace switchyard::policies {

struct RequestFeatures;
class YamlReader;

enum class DifficultyTier { kEasy, kMedium, kHard };

// "easy", "medium" or "hard".
std::string_view TierName(DifficultyTier tier);

struct DifficultyContribution {
  std::string_view feature;  // "length", "code", ... (static storage)
  double value = 0;          // the feature squashed to [0, 1]
  double contribution = 0;   // value × weight: its share of the sum
};

struct DifficultyScore {
  double score = 0;  // in [0, 1]
  DifficultyTier tier = DifficultyTier::kEasy;
  // One entry per feature the scorer uses; empty for a scorer that has none to report.
  std::vector<DifficultyContribution> contributions;
};

class DifficultyScorer {
 public:
  virtual ~DifficultyScorer() = default;
  // `prompt_tokens` is the policy's token count for the request (exact or estimated).
  virtual DifficultyScore Score(const RequestFeatures& request, int64_t prompt_tokens) const = 0;
};

class HeuristicDifficultyScorer final : public DifficultyScorer {
 public:
  enum Feature { kLength, kCode, kMath, kReasoning, kConstraints, kQuestions, kDepth, kCount };
  static constexpr std::array<std::string_view, kCount> kFeatureNames = {
      "length", "code", "math", "reasoning", "constraints", "questions", "depth"};

  struct Options {
    std::array<double, kCount> weights = {1.0, 1.0, 1.0, 1.2, 0.8, 0.4, 0.5};
    double medium = 0.35;  // score at which a request is at least medium
    double hard = 0.7;     // ... and hard
  };

  // Reads the `difficulty:` section (`node` may be null: all defaults).
  static absl::StatusOr<std::unique_ptr<const HeuristicDifficultyScorer>> FromYaml(
      const YAML::Node& node, const YamlReader& yaml);

  explicit HeuristicDifficultyScorer(const Options& options) : options_(options) {}

  DifficultyScore Score(const RequestFeatures& request, int64_t prompt_tokens) const override;

  // The raw feature values before weighting, for tests and tuning.
  std::array<double, kCount> Features(const RequestFeatures& request,
                                      int64_t prompt_tokens) const;

  const Options& options() const { return options_; }

 private:
  Options options_;
};

}  // namespace switchyard::policies

#endif  // SWITCHYARD_POLICIES_DIFFICULTY_H_
