// `switchyard audit`: verifies a decision log's hash chain and summarises where requests went.
#ifndef SWITCHYARD_GATEWAY_AUDIT_COMMAND_H_
#define SWITCHYARD_GATEWAY_AUDIT_COMMAND_H_

#include <optional>
#include <ostream>
#include <string>

#include "absl/time/time.h"

namespace switchyard::gateway {

struct AuditOptions {
  std::string log_path;
  std::optional<absl::Time> from;  // inclusive
  std::optional<absl::Time> to;    // exclusive
  bool json = false;
};

// Verifies the whole chain, then reports over the records in [from, to): requests per
// sensitivity level and per finding type by locality and target, and spend per tenant.
// Returns 0 when the chain is whole, 1 when it is broken (the report names the first bad line
// and why), 2 when the file cannot be read.
int RunAudit(const AuditOptions& options, std::ostream& out, std::ostream& err);

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_AUDIT_COMMAND_H_
