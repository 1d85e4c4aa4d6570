#include "gateway/budget.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/civil_time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace switchyard::gateway {
namespace {

using ::testing::HasSubstr;

class FakeClock : public Clock {
 public:
  explicit FakeClock(absl::Time now) : now_(now) {}
  absl::Time Now() const override { return now_; }
  void Advance(absl::Duration by) { now_ += by; }
  void Set(absl::Time now) { now_ = now; }

 private:
  absl::Time now_;
};

absl::Time Utc(int y, int m, int d, int hh, int mm, int ss) {
  return absl::FromCivil(absl::CivilSecond(y, m, d, hh, mm, ss), absl::UTCTimeZone());
}

BudgetScope Tenant(Limits limits) { return {"tenant:acme", "tenant 'acme'", limits}; }

class BudgetTest : public ::testing::Test {
 protected:
  FakeClock clock_{Utc(2026, 11, 23, 10, 0, 5)};
  std::shared_ptr<Ledger> ledger_ = Ledger::Create(clock_);
};

TEST_F(BudgetTest, ReservesTheEstimateAndSettlesTheActualCost) {
  Limits limits;
  limits.usd_per_day = 1.0;
  Admission first = ledger_->Admit({Tenant(limits)}, 0.4, 100);
  ASSERT_EQ(first.verdict, Admission::Verdict::kAdmitted);
  Admission second = ledger_->Admit({Tenant(limits)}, 0.4, 100);
  ASSERT_EQ(second.verdict, Admission::Verdict::kAdmitted);
  Admission third = ledger_->Admit({Tenant(limits)}, 0.4, 100);
  ASSERT_EQ(third.verdict, Admission::Verdict::kAdmitted);  // 0.8 < 1.0: not yet exhausted
  // 1.2 reserved: exhausted, by at most one estimate past the limit.
  Admission fourth = ledger_->Admit({Tenant(limits)}, 0.4, 100);
  ASSERT_EQ(fourth.verdict, Admission::Verdict::kBudgetExhausted);
  EXPECT_EQ(fourth.on_exhausted, Limits::OnExhausted::kReject);
  EXPECT_EQ(fourth.message,
            "tenant 'acme' exhausted its usd_per_day budget: spent 0.0000 USD (1.2000 USD more "
            "reserved by requests in flight) of the 1.0000 USD limit");
  EXPECT_EQ(ledger_->SpentToday("tenant:acme"), 0);

  // Actual costs were lower than estimated: the reservations turn into the real spend.
  first.reservation->Settle(0.1, 50);
  second.reservation->Settle(0.1, 50);
  third.reservation->Settle(0.1, 50);
  EXPECT_DOUBLE_EQ(ledger_->SpentToday("tenant:acme"), 0.3);
  EXPECT_DOUBLE_EQ(ledger_->SpentThisMonth("tenant:acme"), 0.3);
  EXPECT_EQ(ledger_->Admit({Tenant(limits)}, 0.4, 100).verdict, Admission::Verdict::kAdmitted);
}

TEST_F(BudgetTest, ADestroyedReservationReleasesWithoutCharging) {
  Limits limits;
  limits.usd_per_day = 1.0;
  limits.max_concurrent = 1;
  {
    Admission admitted = ledger_->Admit({Tenant(limits)}, 5.0, 10);
    ASSERT_EQ(admitted.verdict, Admission::Verdict::kAdmitted);
  }
  EXPECT_EQ(ledger_->SpentToday("tenant:acme"), 0);
  EXPECT_EQ(ledger_->Admit({Tenant(limits)}, 0.1, 10).verdict, Admission::Verdict::kAdmitted);
}

// A bad usage count must not turn into budget handed back.
TEST_F(BudgetTest, ANegativeOrNanCostIsSettledAsNothing) {
  Limits limits;
  limits.usd_per_day = 1.0;
  Admission paid = ledger_->Admit({Tenant(limits)}, 0.1, 10);
  ASSERT_EQ(paid.verdict, Admission::Verdict::kAdmitted);
  paid.reservation->Settle(0.5, 10);
  for (double bad : {-1000.0, std::nan("")}) {
    Admission admitted = ledger_->Admit({Tenant(limits)}, 0.1, 10);
    ASSERT_EQ(admitted.verdict, Admission::Verdict::kAdmitted);
    admitted.reservation->Settle(bad, -1'000'000'000);
    EXPECT_DOUBLE_EQ(ledger_->SpentToday("tenant:acme"), 0.5);
    EXPECT_DOUBLE_EQ(ledger_->SpentThisMonth("tenant:acme"), 0.5);
  }
}

TEST_F(BudgetTest, DayAndMonthWindowsRollAtUtcBoundaries) {
  Limits limits;
  limits.usd_per_day = 1.0;
  limits.usd_per_month = 1.5;
  ledger_->Admit({Tenant(limits)}, 0, 0).reservation->Settle(1.0, 0);
  Admission refused = ledger_->Admit({Tenant(limits)}, 0, 0);
  ASSERT_EQ(refused.verdict, Admission::Verdict::kBudgetExhausted);
  EXPECT_THAT(refused.message, HasSubstr("usd_per_day"));

  clock_.Set(Utc(2026, 11, 23, 23, 59, 59));
  EXPECT_EQ(ledger_->Admit({Tenant(limits)}, 0, 0).verdict, Admission::Verdict::kBudgetExhausted);
  clock_.Set(Utc(2026, 11, 24, 0, 0, 0));  // a new day, the same month
  EXPECT_EQ(ledger_->SpentToday("tenant:acme"), 0);
  EXPECT_DOUBLE_EQ(ledger_->SpentThisMonth("tenant:acme"), 1.0);
  ledger_->Admit({Tenant(limits)}, 0, 0).reservation->Settle(0.6, 0);
  refused = ledger_->Admit({Tenant(limits)}, 0, 0);
  ASSERT_EQ(refused.verdict, Admission::Verdict::kBudgetExhausted);
  EXPECT_THAT(refused.message, HasSubstr("usd_per_month budget: spent 1.6000 USD"));

  clock_.Set(Utc(2026, 12, 1, 0, 0, 0));
  EXPECT_EQ(ledger_->SpentThisMonth("tenant:acme"), 0);
  EXPECT_EQ(ledger_->Admit({Tenant(limits)}, 0, 0).verdict, Admission::Verdict::kAdmitted);
}

TEST_F(BudgetTest, RequestsAndTokensPerMinuteRefuseWithRetryAfterUntilTheNextMinute) {
  Limits limits;
  limits.requests_per_minute = 2;
  std::vector<std::unique_ptr<Reservation>> held;
  for (int i = 0; i < 2; ++i) {
    Admission admitted = ledger_->Admit({Tenant(limits)}, 0, 0);
    ASSERT_EQ(admitted.verdict, Admission::Verdict::kAdmitted);
    admitted.reservation->Settle(0, 0);
  }
  Admission refused = ledger_->Admit({Tenant(limits)}, 0, 0);
  ASSERT_EQ(refused.verdict, Admission::Verdict::kRateLimited);
  EXPECT_EQ(refused.message,
            "tenant 'acme' reached its requests_per_minute limit: 2 of 2 requests this minute");
  EXPECT_EQ(refused.retry_after_seconds, 55);  // 10:00:05 -> 10:01:00
  clock_.Advance(absl::Seconds(55));
  EXPECT_EQ(ledger_->Admit({Tenant(limits)}, 0, 0).verdict, Admission::Verdict::kAdmitted);

  Limits tokens;
  tokens.tokens_per_minute = 1000;
  BudgetScope scope{"key:k", "key 'k' of tenant 'acme'", tokens};
  Admission big = ledger_->Admit({scope}, 0, 900);
  ASSERT_EQ(big.verdict, Admission::Verdict::kAdmitted);
  // The estimate is corrected by the actual count within the same minute.
  big.reservation->Settle(0, 300);
  Admission more = ledger_->Admit({scope}, 0, 800);
  ASSERT_EQ(more.verdict, Admission::Verdict::kAdmitted);
  Admission over = ledger_->Admit({scope}, 0, 10);
  ASSERT_EQ(over.verdict, Admission::Verdict::kRateLimited);
  EXPECT_THAT(over.message, HasSubstr("key 'k' of tenant 'acme' reached its tokens_per_minute "
                                      "limit: 1100 of 1000"));
  EXPECT_GE(over.retry_after_seconds, 1);
}

TEST_F(BudgetTest, MaxConcurrentCountsRequestsInFlight) {
  Limits limits;
  limits.max_concurrent = 2;
  Admission a = ledger_->Admit({Tenant(limits)}, 0, 0);
  Admission b = ledger_->Admit({Tenant(limits)}, 0, 0);
  ASSERT_EQ(b.verdict, Admission::Verdict::kAdmitted);
  Admission c = ledger_->Admit({Tenant(limits)}, 0, 0);
  ASSERT_EQ(c.verdict, Admission::Verdict::kRateLimited);
  EXPECT_EQ(c.retry_after_seconds, 1);
  EXPECT_THAT(c.message, HasSubstr("max_concurrent limit: 2 of 2 requests in flight"));
  a.reservation->Settle(0, 0);
  EXPECT_EQ(ledger_->Admit({Tenant(limits)}, 0, 0).verdict, Admission::Verdict::kAdmitted);
}

TEST_F(BudgetTest, EveryScopeMustAdmitAndOnlyThenIsAnyCharged) {
  Limits open;
  Limits key_limit;
  key_limit.usd_per_day = 0.5;
  key_limit.on_exhausted = Limits::OnExhausted::kDowngrade;
  BudgetScope key{"key:ci", "key 'ci' of tenant 'acme'", key_limit};
  ledger_->Admit({Tenant(open), key}, 0, 0).reservation->Settle(0.5, 0);
  EXPECT_DOUBLE_EQ(ledger_->SpentToday("tenant:acme"), 0.5);
  Admission refused = ledger_->Admit({Tenant(open), key}, 0.1, 0);
  ASSERT_EQ(refused.verdict, Admission::Verdict::kBudgetExhausted);
  EXPECT_EQ(refused.scope_id, "key:ci");
  EXPECT_EQ(refused.on_exhausted, Limits::OnExhausted::kDowngrade);
  // Downgraded requests are still charged (and rate-limited), never refused for USD.
  Admission waived = ledger_->Admit({Tenant(open), key}, 0.0, 0, /*waive_usd=*/true);
  ASSERT_EQ(waived.verdict, Admission::Verdict::kAdmitted);
  waived.reservation->Settle(0.01, 0);
  EXPECT_DOUBLE_EQ(ledger_->SpentToday("key:ci"), 0.51);
}

TEST_F(BudgetTest, RunningCostStopsAStreamAtTheCap) {
  Limits limits;
  limits.usd_per_day = 1.0;
  Admission other = ledger_->Admit({Tenant(limits)}, 0.3, 0);
  Admission stream = ledger_->Admit({Tenant(limits)}, 0.2, 0);
  ASSERT_EQ(stream.verdict, Admission::Verdict::kAdmitted);
  // Others' reservations are estimates: only what they actually ran up counts against a stream.
  EXPECT_TRUE(stream.reservation->Running(0.75));
  EXPECT_TRUE(other.reservation->Running(0.2));
  EXPECT_TRUE(stream.reservation->Running(0.79));
  EXPECT_FALSE(stream.reservation->Running(0.8));  // 0.2 run up elsewhere + 0.8 = the cap
  // The running cost raised the reservation: nothing else fits now.
  EXPECT_EQ(ledger_->Admit({Tenant(limits)}, 0.0, 0).verdict, Admission::Verdict::kBudgetExhausted);
  stream.reservation->Settle(0.8, 0);
  other.reservation->Settle(0.2, 0);
  EXPECT_DOUBLE_EQ(ledger_->SpentToday("tenant:acme"), 1.0);
}

TEST_F(BudgetTest, ConcurrentAdmissionsOvershootByAtMostOneEstimate) {
  Limits limits;
  limits.usd_per_day = 1.0;
  constexpr double kEstimate = 0.03;
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        Admission admission = ledger_->Admit({Tenant(limits)}, kEstimate, 0);
        if (admission.verdict != Admission::Verdict::kAdmitted) continue;
        admitted.fetch_add(1);
        admission.reservation->Settle(kEstimate, 0);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const double spent = ledger_->SpentToday("tenant:acme");
  EXPECT_GE(spent, 1.0);
  EXPECT_LT(spent, 1.0 + kEstimate + 1e-9);
  EXPECT_EQ(admitted.load(), 34);  // ceil(1.0 / 0.03)
}

TEST_F(BudgetTest, SpendSurvivesSerializeAndRestoreAndRollsAfterward) {
  Limits limits;
  limits.usd_per_day = 10;
  ledger_->Admit({Tenant(limits)}, 0, 0).reservation->Settle(2.5, 0);
  const std::string state = ledger_->Serialize();
  EXPECT_THAT(state, HasSubstr("\"tenant:acme\""));
  EXPECT_THAT(state, HasSubstr("\"day\": \"2026-11-23\""));

  std::shared_ptr<Ledger> restored = Ledger::Create(clock_);
  ASSERT_TRUE(restored->Restore(state).ok());
  EXPECT_DOUBLE_EQ(restored->SpentToday("tenant:acme"), 2.5);
  clock_.Set(Utc(2026, 11, 24, 0, 0, 1));
  EXPECT_EQ(restored->SpentToday("tenant:acme"), 0);
  EXPECT_DOUBLE_EQ(restored->SpentThisMonth("tenant:acme"), 2.5);

  EXPECT_THAT(restored->Restore("{").message(), HasSubstr("not a JSON object"));
  EXPECT_THAT(restored->Restore(R"({"version":1,"scopes":{"tenant:x":{"day":1}}})").message(),
              HasSubstr("scope 'tenant:x'"));
  EXPECT_THAT(restored
                  ->Restore(R"({"version":1,"scopes":{"tenant:x":{"day":"2026-01-02",)"
                            R"("month":"2026-01","day_usd":-5,"month_usd":1}}})")
                  .message(),
              HasSubstr("scope 'tenant:x': 'day_usd' and 'month_usd' must not be negative"));
}

TEST_F(BudgetTest, LedgerFileWritesAtomicallyAndLoadsAtOpen) {
  const std::string dir = ::testing::TempDir() + "/budget_test_state";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/metering.json";
  Limits limits;
  limits.usd_per_day = 10;
  {
    absl::StatusOr<std::unique_ptr<LedgerFile>> file = LedgerFile::Open(path, ledger_);
    ASSERT_TRUE(file.ok()) << file.status();
    ledger_->Admit({Tenant(limits)}, 0, 0).reservation->Settle(1.25, 0);
  }  // destruction writes the final state
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  std::shared_ptr<Ledger> next = Ledger::Create(clock_);
  absl::StatusOr<std::unique_ptr<LedgerFile>> file = LedgerFile::Open(path, next);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_DOUBLE_EQ(next->SpentToday("tenant:acme"), 1.25);

  {
    std::ofstream out(path);
    out << "garbage";
  }
  absl::StatusOr<std::unique_ptr<LedgerFile>> broken =
      LedgerFile::Open(path, Ledger::Create(clock_));
  ASSERT_FALSE(broken.ok());
  EXPECT_THAT(broken.status().message(), HasSubstr(path + ": cannot read the metering state"));
  absl::StatusOr<std::unique_ptr<LedgerFile>> unwritable =
      LedgerFile::Open(dir + "/missing/metering.json", Ledger::Create(clock_));
  ASSERT_FALSE(unwritable.ok());
  EXPECT_THAT(unwritable.status().message(), HasSubstr("cannot write the metering state"));
}

// A state file that exists but cannot be read stops the start and is left as it is: treating it
// as missing would write an empty state over it and reset every budget.
TEST_F(BudgetTest, LedgerFileThatCannotBeReadIsNotReplaced) {
  const std::string dir = ::testing::TempDir() + "/budget_test_unreadable";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  // A symbolic link to itself cannot be opened (ELOOP), even by root, who can read any mode.
  const std::string loop = dir + "/loop.json";
  std::filesystem::create_symlink("loop.json", loop);
  absl::StatusOr<std::unique_ptr<LedgerFile>> looped =
      LedgerFile::Open(loop, Ledger::Create(clock_));
  ASSERT_FALSE(looped.ok());
  EXPECT_THAT(looped.status().message(), HasSubstr(loop + ": cannot read the metering state"));
  EXPECT_TRUE(std::filesystem::is_symlink(loop));

  if (::geteuid() == 0) return;  // the mode below does not stop root
  const std::string path = dir + "/metering.json";
  const std::string saved =
      R"({"version":1,"scopes":{"tenant:acme":{"day":"2026-01-02","month":"2026-01",)"
      R"("day_usd":0.9,"month_usd":42}}})";
  {
    std::ofstream out(path);
    out << saved;
  }
  std::filesystem::permissions(path, std::filesystem::perms::owner_write);
  absl::StatusOr<std::unique_ptr<LedgerFile>> unreadable =
      LedgerFile::Open(path, Ledger::Create(clock_));
  ASSERT_FALSE(unreadable.ok());
  EXPECT_THAT(unreadable.status().message(), HasSubstr(path + ": cannot read the metering state"));
  std::filesystem::permissions(path, std::filesystem::perms::owner_read |
                                         std::filesystem::perms::owner_write);
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), saved);
}

TEST(RetryAfterTest, RoundTripsThroughTheStatusPayload) {
  absl::Status status = WithRetryAfter(absl::ResourceExhaustedError("slow down"), 12.2);
  EXPECT_EQ(RetryAfterSeconds(status), 13);
  EXPECT_EQ(RetryAfterSeconds(absl::ResourceExhaustedError("x")), std::nullopt);
}

}  // namespace
}  // namespace switchyard::gateway
