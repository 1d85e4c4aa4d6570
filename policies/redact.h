// Redaction: replace findings with typed placeholders ("<EMAIL_1>") before a request leaves for
// a remote target, and put the original values back into the answer, streaming included.
//
// Pure logic; the gateway decides when to redact. Placeholders are numbered per label in order
// of first appearance, and the same value always gets the same placeholder, so the model can
// still tell "the same address" from "another address". A text that already contains a string
// shaped like a placeholder is left as is and would be restored too; labels are upper case with
// '_' (`secret.aws_access_key` -> `SECRET_AWS_ACCESS_KEY`).
//
// Thread-safety: Redact is a pure function; a Restorer belongs to one response stream.
#ifndef SWITCHYARD_POLICIES_REDACT_H_
#define SWITCHYARD_POLICIES_REDACT_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "policies/finding.h"

namespace switchyard::policies {

struct Redaction {
  std::vector<std::string> texts;  // one per input text, findings replaced
  // Placeholder -> original value, in order of first appearance.
  std::vector<std::pair<std::string, std::string>> restore;
};

// `findings` index `texts` (Finding::message) and hold byte spans into them, as in a Decision.
// Overlapping spans become one placeholder (labelled by the first) covering all of them; spans
// outside their text are skipped. Every finding given is redacted: pass only the ones to hide.
Redaction Redact(const std::vector<std::string_view>& texts, const std::vector<Finding>& findings);

// Turns placeholders in a stream of output deltas back into the original values. A delta that
// ends inside what may be a placeholder ("...<EMA") holds those bytes back until the next delta
// shows whether it is one; Finish() releases whatever is still held.
class Restorer {
 public:
  explicit Restorer(std::vector<std::pair<std::string, std::string>> restore);

  // Returns the text that is safe to emit now.
  std::string Push(std::string_view delta);
  // Returns the held-back tail at the end of the stream.
  std::string Finish();

 private:
  std::vector<std::pair<std::string, std::string>> restore_;
  size_t longest_ = 0;
  std::string held_;
};

}  // namespace switchyard::policies

#endif  // SWITCHYARD_POLICIES_REDACT_H_
