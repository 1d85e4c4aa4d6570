// One multi-pattern scan per message: the built-in detectors, every dictionary term and every
// policy regex are compiled into a single Hyperscan database at load time, so a request costs
// one pass over its text however many patterns the policy holds. Internal to policies/.
//
// Thread-safety: Scan is const and may run on many threads at once; each thread keeps its own
// Hyperscan scratch space.
#ifndef SWITCHYARD_POLICIES_SCANNER_H_
#define SWITCHYARD_POLICIES_SCANNER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "policies/detectors.h"
#include "policies/finding.h"

struct hs_database;
namespace re2 {
class RE2;
}  // namespace re2

namespace switchyard::policies {

class Scanner {
 public:
  // A dictionary term: matched case-insensitively (ASCII) as a whole word or phrase; the words
  // of a phrase may be separated by any run of whitespace. Word boundaries are required only
  // where the term itself begins or ends with a word character.
  struct TermSpec {
    std::string term;
    int group = 0;
  };
  // A policy regex in RE2 syntax, already validated by the caller, that cannot match the empty
  // string.
  struct RegexSpec {
    std::string regex;
    int group = 0;
  };
  // A term or regex match, reported under the caller's group number.
  struct Hit {
    int group = 0;
    size_t start = 0;
    size_t end = 0;
  };
  struct Result {
    // Validated built-in findings, without overlaps, ordered by start; `message` is left 0.
    std::vector<Finding> findings;
    // Term hits, and regex hits merged per group so overlapping matches form one span.
    std::vector<Hit> hits;
  };

  // `builtin_types` selects the built-in detectors to run (types from BuiltinTypes()).
  static absl::StatusOr<std::unique_ptr<const Scanner>> Build(
      const std::vector<std::string_view>& builtin_types, const std::vector<TermSpec>& terms,
      const std::vector<RegexSpec>& regexes);

  ~Scanner();
  Scanner(const Scanner&) = delete;
  Scanner& operator=(const Scanner&) = delete;

  // Appends what `text` holds to `out` (cleared first). `text` must be valid UTF-8, as the
  // gateway's JSON parsers and protobuf make every message; policy regexes see it as UTF-8.
  // Fails when Hyperscan does (out of memory) or, with a policy regex, on invalid UTF-8;
  // callers must then treat the text as unscanned.
  absl::Status Scan(std::string_view text, Result& out) const;

  // How many policy regexes Hyperscan could not take and RE2 scans separately.
  size_t re2_fallback_count() const;

 private:
  enum class Kind { kBuiltin, kTerm, kRegex };
  struct Entry {
    Kind kind;
    int index;
  };
  struct Term {
    std::vector<std::string> words;  // lower case
    int group = 0;
    bool word_start = false;
    bool word_end = false;
  };
  struct Regex {
    int group = 0;
    std::unique_ptr<re2::RE2> fallback;  // set when Hyperscan rejected the pattern
  };
  struct Raw {
    unsigned id;
    size_t start;
    size_t end;
  };
  struct MatchContext;

  Scanner();
  static int OnMatch(unsigned int id, unsigned long long from, unsigned long long to,
                     unsigned int flags, void* context);
  void Resolve(std::string_view text, std::vector<Raw>& raw, Result& out) const;

  const uint64_t id_;  // unique per Scanner, keys the per-thread scratch cache
  hs_database* database_ = nullptr;
  std::vector<Entry> entries_;  // by Hyperscan id
  std::vector<const BuiltinPattern*> builtins_;
  std::vector<Term> terms_;
  std::vector<Regex> regexes_;
  bool utf8_ = false;  // there are policy regexes, so the text must be checked
};

}  // namespace switchyard::policies

#endif  // SWITCHYARD_POLICIES_SCANNER_H_
