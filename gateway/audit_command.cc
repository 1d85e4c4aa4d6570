#include "gateway/audit_command.h"

#include <map>
#include <set>
#include <tuple>
#include <vector>

#include "absl/strings/str_format.h"
#include "gateway/decision_log.h"
#include "gateway/hash.h"
#include "nlohmann/json.hpp"
#include "policies/absl_compat.h"

namespace switchyard::gateway {
namespace {

using Json = nlohmann::ordered_json;

// Where requests went: locality ("denied" when nothing was sent) and target.
using Destination = std::pair<std::string, std::string>;
using Split = std::map<std::string, std::map<Destination, int64_t>>;

struct Spend {
  int64_t requests = 0;
  double cost_usd = 0;
  double savings_usd = 0;
};

Destination DestinationOf(const RequestRecord& record) {
  if (record.denied || record.locality.empty()) return {"denied", ""};
  return {record.locality, record.served_by.empty() ? record.target : record.served_by};
}

Json SplitJson(const Split& split) {
  Json out = Json::object();
  for (const auto& [key, destinations] : split) {
    Json rows = Json::array();
    for (const auto& [destination, count] : destinations) {
      rows.push_back(
          {{"locality", destination.first}, {"target", destination.second}, {"requests", count}});
    }
    out[key] = std::move(rows);
  }
  return out;
}

void PrintSplit(std::ostream& out, std::string_view title, const Split& split) {
  out << title << ":\n";
  if (split.empty()) out << "  (none)\n";
  for (const auto& [key, destinations] : split) {
    for (const auto& [destination, count] : destinations) {
      out << absl::StrFormat("  %-16s %-7s %-20s %8d\n", key, destination.first,
                             destination.second.empty() ? "-" : destination.second, count);
    }
  }
}

}  // namespace

int RunAudit(const AuditOptions& options, std::ostream& out, std::ostream& err) {
  absl::StatusOr<std::vector<std::string>> read = ReadDecisionLogLines(options.log_path);
  if (!read.ok()) {
    err << "switchyard: " << read.status().message() << "\n";
    return 2;
  }
  const std::vector<std::string> lines = *std::move(read);
  const std::optional<ChainBreak> broken = VerifyDecisionLogChain(lines);

  Split by_level;
  Split by_finding;
  std::map<std::string, Spend> by_tenant;
  int64_t routed = 0;
  int64_t denied = 0;
  int64_t unreadable = 0;
  std::optional<absl::Time> first;
  std::optional<absl::Time> last;
  if (!broken) {
    for (const std::string& line : lines) {
      absl::StatusOr<RequestRecord> record = ParseDecisionLogLine(line);
      if (!record.ok()) {
        ++unreadable;
        continue;
      }
      const absl::Time time = absl::FromChrono(record->time);
      if ((options.from && time < *options.from) || (options.to && time >= *options.to)) continue;
      if (!first || time < *first) first = time;
      if (!last || time > *last) last = time;
      const Destination destination = DestinationOf(*record);
      (destination.first == "denied" ? denied : routed) += 1;
      by_level[record->level.empty() ? "-" : record->level][destination] += 1;
      for (const std::string& type :
           std::set<std::string>(record->finding_types.begin(), record->finding_types.end())) {
        by_finding[type][destination] += 1;
      }
      Spend& spend = by_tenant[record->tenant];
      spend.requests += 1;
      spend.cost_usd += record->cost_usd;
      spend.savings_usd += record->savings_usd;
    }
  }
  auto time_text = [](const std::optional<absl::Time>& time) {
    return time ? absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", *time, absl::UTCTimeZone())
                : std::string();
  };

  if (options.json) {
    Json chain = {{"ok", !broken.has_value()}, {"lines", lines.size()}};
    if (broken) {
      chain["line"] = broken->line;
      chain["reason"] = broken->reason;
    } else if (!lines.empty()) {
      chain["head"] = Sha256Hex(lines.back());
    }
    Json report = {{"log", options.log_path}, {"chain", std::move(chain)}};
    if (!broken) {
      Json tenants = Json::object();
      for (const auto& [tenant, spend] : by_tenant) {
        tenants[tenant] = {{"requests", spend.requests},
                           {"cost_usd", spend.cost_usd},
                           {"savings_usd", spend.savings_usd}};
      }
      report["range"] = {{"from", time_text(options.from)}, {"to", time_text(options.to)},
                         {"first", time_text(first)}, {"last", time_text(last)}};
      report["requests"] = {{"total", routed + denied},
                            {"routed", routed},
                            {"denied", denied},
                            {"unreadable", unreadable}};
      report["by_level"] = SplitJson(by_level);
      report["by_finding_type"] = SplitJson(by_finding);
      report["spend_by_tenant"] = std::move(tenants);
    }
    out << report.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
  } else if (broken) {
    out << options.log_path << ": chain BROKEN at line " << broken->line << ": " << broken->reason
        << "\n";
  } else {
    out << options.log_path << ": chain ok (" << lines.size() << " lines";
    if (!lines.empty()) out << ", head " << Sha256Hex(lines.back()).substr(0, 16);
    out << ")\n";
    out << "range: " << (options.from ? time_text(options.from) : "start") << " .. "
        << (options.to ? time_text(options.to) : "end") << ": " << routed + denied
        << " requests (" << routed << " routed, " << denied << " denied)";
    if (unreadable > 0) out << ", " << unreadable << " unreadable lines";
    out << "\n";
    PrintSplit(out, "by level (level, locality, target, requests)", by_level);
    PrintSplit(out, "by finding type (type, locality, target, requests)", by_finding);
    out << "spend by tenant (tenant, requests, cost_usd, savings_usd):\n";
    if (by_tenant.empty()) out << "  (none)\n";
    for (const auto& [tenant, spend] : by_tenant) {
      out << absl::StrFormat("  %-16s %8d %12.6f %12.6f\n", tenant.empty() ? "-" : tenant,
                             spend.requests, spend.cost_usd, spend.savings_usd);
    }
  }
  out.flush();
  return broken ? 1 : 0;
}

}  // namespace switchyard::gateway
