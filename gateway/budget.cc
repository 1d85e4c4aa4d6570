#include "gateway/budget.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/civil_time.h"
#include "gateway/log.h"
#include "nlohmann/json.hpp"

namespace switchyard::gateway {
namespace {

class RealClock : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

int64_t MinuteOf(absl::Time now) {
  const int64_t seconds = absl::ToUnixSeconds(now);
  return seconds >= 0 ? seconds / 60 : (seconds - 59) / 60;
}

double SecondsToNextMinute(absl::Time now, int64_t minute) {
  return std::max(1.0,
                  std::ceil(absl::ToDoubleSeconds(absl::FromUnixSeconds((minute + 1) * 60) - now)));
}

std::string Usd(double value) { return absl::StrFormat("%.4f", value); }

bool HasUsdLimit(const Limits& limits) {
  return limits.usd_per_day.has_value() || limits.usd_per_month.has_value();
}

}  // namespace

const Clock& SystemClock() {
  static const RealClock* const clock = new RealClock();
  return *clock;
}

Reservation::Reservation(std::shared_ptr<Ledger> ledger, std::vector<BudgetScope> scopes,
                         double estimated_usd, int64_t estimated_tokens, int64_t minute)
    : ledger_(std::move(ledger)),
      scopes_(std::move(scopes)),
      estimated_usd_(estimated_usd),
      estimated_tokens_(estimated_tokens),
      minute_(minute),
      reserved_usd_(estimated_usd) {}

Reservation::~Reservation() { Settle(0, 0); }

bool Reservation::Running(double running_usd) {
  bool limited = false;
  for (const BudgetScope& scope : scopes_) limited = limited || HasUsdLimit(scope.limits);
  if (!limited) return true;
  return ledger_->RunningCheck(*this, running_usd);
}

void Reservation::Settle(double actual_usd, int64_t actual_tokens) {
  ledger_->Release(*this, actual_usd, actual_tokens);
}

std::shared_ptr<Ledger> Ledger::Create(const Clock& clock) {
  return std::shared_ptr<Ledger>(new Ledger(clock));
}

Ledger::ScopeState& Ledger::StateLocked(const std::string& id, absl::Time now) {
  ScopeState& state = scopes_[id];
  const absl::TimeZone utc = absl::UTCTimeZone();
  const std::string day = absl::FormatCivilTime(absl::ToCivilDay(now, utc));
  const std::string month = absl::FormatCivilTime(absl::ToCivilMonth(now, utc));
  if (state.day != day) {
    state.day = day;
    state.day_usd = 0;
  }
  if (state.month != month) {
    state.month = month;
    state.month_usd = 0;
  }
  const int64_t minute = MinuteOf(now);
  if (state.minute != minute) {
    state.minute = minute;
    state.minute_requests = 0;
    state.minute_tokens = 0;
  }
  return state;
}

Admission Ledger::Admit(std::vector<BudgetScope> scopes, double estimated_usd,
                        int64_t estimated_tokens, bool waive_usd) {
  Admission admission;
  const absl::Time now = clock_.Now();
  const int64_t minute = MinuteOf(now);
  absl::MutexLock lock(&mu_);
  auto refuse = [&](Admission::Verdict verdict, const BudgetScope& scope, std::string message) {
    admission.verdict = verdict;
    admission.scope_id = scope.id;
    admission.message = std::move(message);
    admission.on_exhausted = scope.limits.on_exhausted;
    return std::move(admission);
  };
  for (const BudgetScope& scope : scopes) {
    ScopeState& state = StateLocked(scope.id, now);
    const Limits& limits = scope.limits;
    if (limits.max_concurrent && state.concurrent >= *limits.max_concurrent) {
      admission.retry_after_seconds = 1;
      return refuse(
          Admission::Verdict::kRateLimited, scope,
          absl::StrCat(scope.label, " reached its max_concurrent limit: ", state.concurrent, " of ",
                       *limits.max_concurrent, " requests in flight"));
    }
    if (limits.requests_per_minute && state.minute_requests >= *limits.requests_per_minute) {
      admission.retry_after_seconds = SecondsToNextMinute(now, minute);
      return refuse(Admission::Verdict::kRateLimited, scope,
                    absl::StrCat(scope.label,
                                 " reached its requests_per_minute limit: ", state.minute_requests,
                                 " of ", *limits.requests_per_minute, " requests this minute"));
    }
    if (limits.tokens_per_minute && state.minute_tokens >= *limits.tokens_per_minute) {
      admission.retry_after_seconds = SecondsToNextMinute(now, minute);
      return refuse(
          Admission::Verdict::kRateLimited, scope,
          absl::StrCat(scope.label, " reached its tokens_per_minute limit: ", state.minute_tokens,
                       " of ", *limits.tokens_per_minute, " tokens this minute"));
    }
  }
  if (!waive_usd) {
    for (const BudgetScope& scope : scopes) {
      ScopeState& state = scopes_[scope.id];
      struct Window {
        const char* name;
        const std::optional<double>& limit;
        double spent;
      };
      for (const Window& window :
           {Window{"usd_per_day", scope.limits.usd_per_day, state.day_usd},
            Window{"usd_per_month", scope.limits.usd_per_month, state.month_usd}}) {
        if (!window.limit) continue;
        const double committed = window.spent + state.reserved_usd;
        if (committed >= *window.limit) {
          return refuse(Admission::Verdict::kBudgetExhausted, scope,
                        absl::StrCat(scope.label, " exhausted its ", window.name, " budget: spent ",
                                     Usd(window.spent), " USD (", Usd(state.reserved_usd),
                                     " USD more reserved by requests in flight) of the ",
                                     Usd(*window.limit), " USD limit"));
        }
      }
    }
  }
  for (const BudgetScope& scope : scopes) {
    ScopeState& state = scopes_[scope.id];
    state.concurrent += 1;
    state.minute_requests += 1;
    state.minute_tokens += estimated_tokens;
    state.reserved_usd += estimated_usd;
  }
  admission.reservation.reset(new Reservation(shared_from_this(), std::move(scopes), estimated_usd,
                                              estimated_tokens, minute));
  return admission;
}

bool Ledger::RunningCheck(Reservation& reservation, double running_usd) {
  const absl::Time now = clock_.Now();
  absl::MutexLock lock(&mu_);
  if (reservation.settled_) return true;
  const double raise = std::max(0.0, running_usd - reservation.reserved_usd_);
  const double delta = running_usd - reservation.running_usd_;
  reservation.reserved_usd_ += raise;
  reservation.running_usd_ = running_usd;
  bool within = true;
  for (const BudgetScope& scope : reservation.scopes_) {
    ScopeState& state = StateLocked(scope.id, now);
    state.reserved_usd += raise;
    state.running_usd += delta;
    const Limits& limits = scope.limits;
    if ((limits.usd_per_day && state.day_usd + state.running_usd >= *limits.usd_per_day) ||
        (limits.usd_per_month && state.month_usd + state.running_usd >= *limits.usd_per_month)) {
      within = false;
    }
  }
  return within;
}

void Ledger::Release(Reservation& reservation, double actual_usd, int64_t actual_tokens) {
  // A request never pays back: a negative (or NaN) cost from a bad usage count would give its
  // tenant budget it never had.
  if (!(actual_usd > 0)) actual_usd = 0;
  actual_tokens = std::max<int64_t>(0, actual_tokens);
  const absl::Time now = clock_.Now();
  std::function<void()> on_change;
  {
    absl::MutexLock lock(&mu_);
    if (reservation.settled_) return;
    reservation.settled_ = true;
    for (const BudgetScope& scope : reservation.scopes_) {
      ScopeState& state = StateLocked(scope.id, now);
      state.concurrent -= 1;
      state.reserved_usd -= reservation.reserved_usd_;
      state.running_usd -= reservation.running_usd_;
      // Sums of doubles drift: an idle scope holds no reservation.
      if (state.concurrent == 0 || state.reserved_usd < 0) state.reserved_usd = 0;
      if (state.concurrent == 0 || state.running_usd < 0) state.running_usd = 0;
      state.day_usd += actual_usd;
      state.month_usd += actual_usd;
      if (state.minute == reservation.minute_) {
        state.minute_tokens = std::max<int64_t>(
            0, state.minute_tokens + actual_tokens - reservation.estimated_tokens_);
      }
    }
    if (actual_usd > 0) on_change = on_change_;
  }
  if (on_change) on_change();
}

double Ledger::SpentToday(std::string_view scope_id) const {
  const absl::Time now = clock_.Now();
  absl::MutexLock lock(&mu_);
  auto it = scopes_.find(scope_id);
  if (it == scopes_.end()) return 0;
  return const_cast<Ledger*>(this)->StateLocked(it->first, now).day_usd;
}

double Ledger::SpentThisMonth(std::string_view scope_id) const {
  const absl::Time now = clock_.Now();
  absl::MutexLock lock(&mu_);
  auto it = scopes_.find(scope_id);
  if (it == scopes_.end()) return 0;
  return const_cast<Ledger*>(this)->StateLocked(it->first, now).month_usd;
}

void Ledger::SetOnChange(std::function<void()> on_change) {
  absl::MutexLock lock(&mu_);
  on_change_ = std::move(on_change);
}

std::string Ledger::Serialize() const {
  nlohmann::ordered_json scopes = nlohmann::ordered_json::object();
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, state] : scopes_) {
      if (state.day_usd == 0 && state.month_usd == 0) continue;
      scopes[id] = {{"day", state.day},
                    {"day_usd", state.day_usd},
                    {"month", state.month},
                    {"month_usd", state.month_usd}};
    }
  }
  return nlohmann::ordered_json{{"version", 1}, {"scopes", std::move(scopes)}}.dump(2) + "\n";
}

absl::Status Ledger::Restore(std::string_view text) {
  nlohmann::json root = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError("not a JSON object");
  }
  if (!root.contains("version") || root["version"] != 1) {
    return absl::InvalidArgumentError("'version' must be 1");
  }
  const nlohmann::json& scopes = root["scopes"];
  if (!scopes.is_object()) return absl::InvalidArgumentError("'scopes' must be an object");
  std::map<std::string, ScopeState, std::less<>> restored;
  for (const auto& [id, entry] : scopes.items()) {
    const bool valid = entry.is_object() && entry.contains("day") && entry["day"].is_string() &&
                       entry.contains("month") && entry["month"].is_string() &&
                       entry.contains("day_usd") && entry["day_usd"].is_number() &&
                       entry.contains("month_usd") && entry["month_usd"].is_number();
    if (!valid) {
      return absl::InvalidArgumentError(absl::StrCat(
          "scope '", id, "' needs string 'day' and 'month' and numbers 'day_usd' and 'month_usd'"));
    }
    ScopeState& state = restored[id];
    state.day = entry["day"].get<std::string>();
    state.month = entry["month"].get<std::string>();
    state.day_usd = entry["day_usd"].get<double>();
    state.month_usd = entry["month_usd"].get<double>();
    // Spend is never negative: such a file was edited or damaged, and taking it as 0 would
    // quietly hand the scope its budget back.
    if (state.day_usd < 0 || state.month_usd < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("scope '", id, "': 'day_usd' and 'month_usd' must not be negative"));
    }
  }
  absl::MutexLock lock(&mu_);
  for (auto& [id, state] : restored) {
    ScopeState& target = scopes_[id];
    target.day = state.day;
    target.day_usd = state.day_usd;
    target.month = state.month;
    target.month_usd = state.month_usd;
  }
  return absl::OkStatus();
}

LedgerFile::LedgerFile(std::string path, std::shared_ptr<Ledger> ledger)
    : path_(std::move(path)), ledger_(std::move(ledger)) {}

absl::StatusOr<std::unique_ptr<LedgerFile>> LedgerFile::Open(std::string path,
                                                             std::shared_ptr<Ledger> ledger) {
  // Only a file that does not exist yet starts empty: one that exists but cannot be read (no
  // permission, a folder) must stop the start, or the first write below would replace the
  // spend it holds with nothing and reset every budget.
  std::ifstream in(path, std::ios::binary);
  if (!in && errno != ENOENT) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": cannot read the metering state: ", std::strerror(errno)));
  }
  if (in) {
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": cannot read the metering state: ", std::strerror(errno)));
    }
    if (absl::Status status = ledger->Restore(text.str()); !status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": cannot read the metering state: ", status.message()));
    }
  }
  std::unique_ptr<LedgerFile> file(new LedgerFile(std::move(path), ledger));
  // Fail at start, not at the first request, when the file cannot be written.
  if (absl::Status status = file->Write(); !status.ok()) return status;
  file->thread_ = std::thread([raw = file.get()] { raw->Run(); });
  ledger->SetOnChange([raw = file.get()] { raw->MarkDirty(); });
  return file;
}

LedgerFile::~LedgerFile() {
  if (!thread_.joinable()) return;  // Open failed: nothing was loaded or changed
  ledger_->SetOnChange(nullptr);
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
  if (absl::Status status = Write(); !status.ok()) Log(LogLevel::kError, status.message());
}

void LedgerFile::MarkDirty() {
  absl::MutexLock lock(&mu_);
  dirty_ = true;
}

void LedgerFile::Run() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return dirty_ || stop_; };
      mu_.Await(absl::Condition(&ready));
      if (stop_) return;
      dirty_ = false;
    }
    if (absl::Status status = Write(); !status.ok()) Log(LogLevel::kError, status.message());
    absl::MutexLock lock(&mu_);
    auto stopped = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
    mu_.AwaitWithTimeout(absl::Condition(&stopped), absl::Milliseconds(100));
  }
}

absl::Status LedgerFile::Write() {
  absl::MutexLock lock(&write_mu_);
  const std::string text = ledger_->Serialize();
  const std::string temp = path_ + ".tmp";
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat(temp, ": cannot write the metering state: ", std::strerror(errno)));
  }
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = errno;
      ::close(fd);
      return absl::UnavailableError(
          absl::StrCat(temp, ": cannot write the metering state: ", std::strerror(error)));
    }
    written += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced || ::rename(temp.c_str(), path_.c_str()) != 0) {
    return absl::UnavailableError(
        absl::StrCat(path_, ": cannot replace the metering state: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace switchyard::gateway
