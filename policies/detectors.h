// The built-in sensitivity detectors: one Hyperscan pattern per textual format, each with a
// validator that confirms (or drops) a candidate and may move its span. Internal to policies/.
#ifndef SWITCHYARD_POLICIES_DETECTORS_H_
#define SWITCHYARD_POLICIES_DETECTORS_H_

#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

namespace switchyard::policies {

// Confirms a candidate [start, end) of `text`, possibly narrowing or widening the span and
// adjusting the confidence. `text` is the whole message so validators can read context.
using Validator = bool (*)(std::string_view text, size_t& start, size_t& end, double& confidence);

// The leftmost start of a match of the pattern that ends at `end`, as HS_FLAG_SOM_LEFTMOST
// would report it, or npos if none does.
using StartFinder = size_t (*)(std::string_view text, size_t end);

struct BuiltinPattern {
  std::string_view type;
  // Hyperscan syntax.
  std::string_view regex;
  bool caseless;
  // Whether Hyperscan must track where matches start (HS_FLAG_SOM_LEFTMOST). Start tracking
  // can cost more than the rest of the scan, so patterns whose validator can find the start
  // from the end (the '@' of an e-mail, the '+' of a phone number) go without; their
  // validators receive start == end.
  bool som;
  // When two candidates overlap the higher priority wins, then the longer one: a JWT inside a
  // `token=` assignment is reported as a JWT.
  int priority;
  double confidence;
  Validator validate;
  // When set (and `som` is not), Hyperscan reports ends only and this finds each match's
  // start: for fixed-shape patterns a few byte compares cost far less than start tracking
  // inside the scan. Candidates are then grouped by start exactly as with `som`.
  StartFinder find_start;
};

std::span<const BuiltinPattern> BuiltinPatterns();

// The distinct finding types of the built-in patterns, in table order.
const std::vector<std::string_view>& BuiltinTypes();

}  // namespace switchyard::policies

#endif  // SWITCHYARD_POLICIES_DETECTORS_H_
