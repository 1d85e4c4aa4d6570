// What a sensitivity detector reports: a type, where it is, and how sure the detector is. Never
// the matched value itself, so findings can be logged and returned to callers.
#ifndef SWITCHYARD_POLICIES_FINDING_H_
#define SWITCHYARD_POLICIES_FINDING_H_

#include <cstddef>
#include <string>

namespace switchyard::policies {

struct Finding {
  // A built-in type ("email", "phone", "credit_card", "iban", "us_ssn", "ip_address",
  // "secret.<subtype>"), or the name of a policy dictionary or pattern.
  std::string type;
  size_t message = 0;  // index into RequestFeatures::texts
  size_t start = 0;    // byte span [start, end) in that message
  size_t end = 0;
  double confidence = 0;  // in (0, 1]
  // Set by Classify when the decision's rule redacts this finding: remote targets receive a
  // placeholder in its place, and its level no longer counts for them.
  bool redacted = false;

  friend bool operator==(const Finding&, const Finding&) = default;
};

}  // namespace switchyard::policies

#endif  // SWITCHYARD_POLICIES_FINDING_H_
