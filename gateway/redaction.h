// Sends one routed request to its targets as the policy says each may see it: the original text
// to local targets, and to remote targets of a redacting decision a copy whose redacted findings
// are typed placeholders ("<EMAIL_1>"), with the placeholders in the answer turned back into the
// original values before the client sees them (streaming included: a placeholder split across
// deltas is held back until it is whole).
//
// Thread-safety: a Sender is immutable after construction and may be shared by the attempts of a
// fallback run; the restoring sink it hands a backend belongs to that one call.
#ifndef SWITCHYARD_GATEWAY_REDACTION_H_
#define SWITCHYARD_GATEWAY_REDACTION_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "backends/backend.h"
#include "policies/policy_set.h"

namespace switchyard::gateway {

class Sender {
 public:
  // Redacts `chat` once, up front, when `decision` redacts any finding. Keeps `policy` alive (it
  // owns no threads, so any thread may drop it).
  Sender(std::shared_ptr<const policies::PolicySet> policy, policies::Decision decision,
         backends::ChatRequest chat);

  // Whether `target` may receive the request as this sender would send it there.
  bool MayReceive(std::string_view target) const;

  // Starts the request on `backend` (the backend of `target`): redacted for a remote target of a
  // redacting decision, with `sink` seeing the restored answer; the original otherwise.
  std::unique_ptr<backends::Call> Start(backends::Backend& backend, std::string_view target,
                                        std::shared_ptr<backends::ChatSink> sink) const;

  // The redacted copy remote targets receive; nullopt when nothing is redacted.
  const std::optional<backends::ChatRequest>& redacted() const { return redacted_; }

 private:
  std::shared_ptr<const policies::PolicySet> policy_;
  policies::Decision decision_;
  backends::ChatRequest chat_;
  std::optional<backends::ChatRequest> redacted_;
  std::vector<std::pair<std::string, std::string>> restore_;
};

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_REDACTION_H_
