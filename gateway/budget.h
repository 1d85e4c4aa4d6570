// Spend budgets and rate limits per tenant and per API key.
//
// A request is admitted against every scope it belongs to (its tenant, its key): its estimated
// cost is reserved at admission and replaced by the actual cost when it settles, so concurrent
// requests racing for the last dollar overshoot a budget by at most one request's estimate (a
// budget is exhausted once spent + reserved reaches the limit; the last request admitted before
// that may carry the total past it by its own estimate).
//
// Windows: usd_per_day and usd_per_month are UTC calendar days and months; tokens_per_minute and
// requests_per_minute count fixed one-minute windows (UTC minute boundaries). The clock is
// injected so window rolls are testable. Spend per day and month survives restarts through
// Serialize/Restore (rate windows and reservations do not: they are short-lived by design).
//
// Threads: every method is thread-safe; one mutex guards all state (admission is a few map
// look-ups).
#ifndef SWITCHYARD_GATEWAY_BUDGET_H_
#define SWITCHYARD_GATEWAY_BUDGET_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "backends/retry_after.h"

namespace switchyard::gateway {

// Per-tenant or per-key limits; an unset limit is no limit. Normalised at load time.
struct Limits {
  std::optional<double> usd_per_day;    // UTC calendar day
  std::optional<double> usd_per_month;  // UTC calendar month
  std::optional<int64_t> tokens_per_minute;
  std::optional<int64_t> requests_per_minute;
  std::optional<int64_t> max_concurrent;
  // What happens once a USD budget is spent: refuse (429), or route to a local target the
  // policy clears. Rate and concurrency limits always refuse.
  enum class OnExhausted { kReject, kDowngrade } on_exhausted = OnExhausted::kReject;

  bool operator==(const Limits&) const = default;
};

// A refusal by a rate or concurrency limit carries the seconds to wait (backends/retry_after.h,
// shared with remote backends that pass on an upstream's Retry-After).
using backends::kRetryAfterPayload;
using backends::RetryAfterSeconds;
using backends::WithRetryAfter;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

// absl::Now().
const Clock& SystemClock();

// One scope a request is charged to. `id` is the ledger key ("tenant:acme", "key:ci-bot");
// `label` names it in messages ("tenant 'acme'").
struct BudgetScope {
  std::string id;
  std::string label;
  Limits limits;
};

class Ledger;

// What one admitted request holds until it settles. Settling (or destroying) it releases the
// concurrency slot and turns the reservation into spend.
class Reservation {
 public:
  ~Reservation();
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;

  // The request's cost so far (while it generates). Raises its reservation to at least
  // `running_usd`, and returns false once a USD budget of one of its scopes is reached by what is
  // spent plus the running cost of every request in flight (this one included). Reservations of
  // others do not count here: they are estimates, bounded at admission.
  bool Running(double running_usd);

  // Charges the actual cost and tokens; later calls do nothing.
  void Settle(double actual_usd, int64_t actual_tokens);

  double estimated_usd() const { return estimated_usd_; }

 private:
  friend class Ledger;
  Reservation(std::shared_ptr<Ledger> ledger, std::vector<BudgetScope> scopes, double estimated_usd,
              int64_t estimated_tokens, int64_t minute);

  const std::shared_ptr<Ledger> ledger_;
  const std::vector<BudgetScope> scopes_;
  const double estimated_usd_;
  const int64_t estimated_tokens_;
  const int64_t minute_;    // the rate window the estimate was counted in
  double reserved_usd_;     // guarded by the ledger's mutex
  double running_usd_ = 0;  // guarded by the ledger's mutex
  bool settled_ = false;    // guarded by the ledger's mutex
};

struct Admission {
  enum class Verdict { kAdmitted, kRateLimited, kBudgetExhausted } verdict = Verdict::kAdmitted;
  std::unique_ptr<Reservation> reservation;  // when admitted
  // When refused: a message naming the scope, the limit and the values (safe to show a client),
  // the scope's label and id, and for a budget what its config says to do.
  std::string message;
  std::string scope_id;
  double retry_after_seconds = 0;  // rate and concurrency limits
  Limits::OnExhausted on_exhausted = Limits::OnExhausted::kReject;
};

class Ledger : public std::enable_shared_from_this<Ledger> {
 public:
  static std::shared_ptr<Ledger> Create(const Clock& clock = SystemClock());

  // Checks rate and concurrency limits, then USD budgets (unless `waive_usd`: a request already
  // downgraded to a target that is charged but not refused), and reserves on success.
  Admission Admit(std::vector<BudgetScope> scopes, double estimated_usd, int64_t estimated_tokens,
                  bool waive_usd = false) ABSL_LOCKS_EXCLUDED(mu_);

  // USD spent in the current day or month window of a scope (0 when unknown).
  double SpentToday(std::string_view scope_id) const ABSL_LOCKS_EXCLUDED(mu_);
  double SpentThisMonth(std::string_view scope_id) const ABSL_LOCKS_EXCLUDED(mu_);

  // The persistent part (spend per scope and window) as JSON, and back. Restore replaces the
  // spend of the scopes it names; windows other than the current ones are dropped on next use.
  std::string Serialize() const ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status Restore(std::string_view json) ABSL_LOCKS_EXCLUDED(mu_);

  // Called (outside the lock) after spend changes, e.g. to schedule a state-file write.
  void SetOnChange(std::function<void()> on_change) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  friend class Reservation;
  struct ScopeState {
    std::string day;  // "2026-11-23"
    double day_usd = 0;
    std::string month;  // "2026-11"
    double month_usd = 0;
    double reserved_usd = 0;
    double running_usd = 0;  // cost so far of the requests in flight
    int64_t minute = 0;
    int64_t minute_requests = 0;
    int64_t minute_tokens = 0;
    int64_t concurrent = 0;
  };
  explicit Ledger(const Clock& clock) : clock_(clock) {}
  // The state of a scope with its windows rolled to now.
  ScopeState& StateLocked(const std::string& id, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Release(Reservation& reservation, double actual_usd, int64_t actual_tokens)
      ABSL_LOCKS_EXCLUDED(mu_);
  bool RunningCheck(Reservation& reservation, double running_usd) ABSL_LOCKS_EXCLUDED(mu_);

  const Clock& clock_;
  mutable absl::Mutex mu_;
  mutable std::map<std::string, ScopeState, std::less<>> scopes_ ABSL_GUARDED_BY(mu_);
  std::function<void()> on_change_ ABSL_GUARDED_BY(mu_);
};

// Keeps a ledger's spend in a file: loaded at start, rewritten atomically (a temp file in the
// same folder, then rename) by a background thread shortly after each change and at destruction.
class LedgerFile {
 public:
  // Loads `path` into `ledger` if it exists; a file that cannot be parsed is an error naming it.
  static absl::StatusOr<std::unique_ptr<LedgerFile>> Open(std::string path,
                                                          std::shared_ptr<Ledger> ledger);
  ~LedgerFile();

  // Schedules a write (coalesced: at most one write per 100 ms).
  void MarkDirty() ABSL_LOCKS_EXCLUDED(mu_);
  // Writes now; the error names the file.
  absl::Status Write();

 private:
  LedgerFile(std::string path, std::shared_ptr<Ledger> ledger);
  void Run();

  const std::string path_;
  const std::shared_ptr<Ledger> ledger_;
  absl::Mutex mu_;
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Mutex write_mu_;  // one write at a time
  std::thread thread_;
};

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_BUDGET_H_
