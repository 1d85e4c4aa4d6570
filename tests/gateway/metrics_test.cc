#include "gateway/metrics.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <latch>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace switchyard::gateway {
namespace {

TEST(MetricsTest, CounterRendersChildrenSortedByLabelValues) {
  MetricsRegistry registry;
  Family<Counter>& requests = registry.AddCounter(
      "switchyard_requests_total", "Requests by backend, policy and outcome.",
      {"backend", "policy", "outcome"});
  requests.WithLabels({"remote", "default", "ok"}).Increment(3);
  requests.WithLabels({"local", "default", "ok"}).Increment();
  requests.WithLabels({"local", "default", "error"}).Increment(2);

  EXPECT_EQ(registry.Render(), R"EOF(# HELP switchyard_requests_total Requests by backend, policy and outcome.
# TYPE switchyard_requests_total counter
switchyard_requests_total{backend="local",policy="default",outcome="error"} 2
switchyard_requests_total{backend="local",policy="default",outcome="ok"} 1
switchyard_requests_total{backend="remote",policy="default",outcome="ok"} 3
)EOF");
}

TEST(MetricsTest, WithLabelsReturnsTheSameChildEveryTime) {
  MetricsRegistry registry;
  Family<Counter>& family = registry.AddCounter("x_total", "x", {"a"});
  Counter& first = family.WithLabels({"v"});
  std::string value = "v";  // a different buffer with equal contents
  EXPECT_EQ(&first, &family.WithLabels({value}));
  EXPECT_NE(&first, &family.WithLabels({"w"}));
}

TEST(MetricsTest, FamiliesSortByNameAndUnlabelledOnesStartAtZero) {
  MetricsRegistry registry;
  registry.AddGauge("switchyard_b", "B.");
  registry.AddCounter("switchyard_a_total", "A.");
  // A labelled family with no child yet has nothing to show and is left out.
  registry.AddCounter("switchyard_c_total", "C.", {"kind"});

  EXPECT_EQ(registry.Render(), R"EOF(# HELP switchyard_a_total A.
# TYPE switchyard_a_total counter
switchyard_a_total 0
# HELP switchyard_b B.
# TYPE switchyard_b gauge
switchyard_b 0
)EOF");
}

TEST(MetricsTest, GaugeSetAddAndNumberFormatting) {
  MetricsRegistry registry;
  Family<Gauge>& family = registry.AddGauge("g", "Values.", {"case"});
  family.WithLabels({"a_int"}).Set(42);
  family.WithLabels({"b_negative"}).Set(-7);
  family.WithLabels({"c_fraction"}).Set(0.25);
  family.WithLabels({"d_big_int"}).Set(1e15);
  family.WithLabels({"e_huge"}).Set(1e300);
  family.WithLabels({"f_tiny"}).Set(1.5e-7);
  family.WithLabels({"g_nan"}).Set(std::numeric_limits<double>::quiet_NaN());
  family.WithLabels({"h_inf"}).Set(std::numeric_limits<double>::infinity());
  family.WithLabels({"i_minus_inf"}).Set(-std::numeric_limits<double>::infinity());
  Gauge& moved = family.WithLabels({"j_add"});
  moved.Increment();
  moved.Increment();
  moved.Decrement();
  moved.Add(0.5);
  family.WithLabels({"k_negative_zero"}).Set(-0.0);

  EXPECT_EQ(registry.Render(), R"EOF(# HELP g Values.
# TYPE g gauge
g{case="a_int"} 42
g{case="b_negative"} -7
g{case="c_fraction"} 0.25
g{case="d_big_int"} 1000000000000000
g{case="e_huge"} 1e+300
g{case="f_tiny"} 1.5e-07
g{case="g_nan"} NaN
g{case="h_inf"} +Inf
g{case="i_minus_inf"} -Inf
g{case="j_add"} 1.5
g{case="k_negative_zero"} 0
)EOF");
}

TEST(MetricsTest, CounterAcceptsFractionsAndIgnoresNegativeOrNaN) {
  Counter counter;
  counter.Increment();
  counter.Increment(0.25);
  counter.Increment(2.0);
  counter.Increment(-5.0);
  counter.Increment(std::numeric_limits<double>::quiet_NaN());
  EXPECT_DOUBLE_EQ(counter.Value(), 3.25);
}

TEST(MetricsTest, HistogramRendersCumulativeBucketsSumAndCount) {
  MetricsRegistry registry;
  Family<Histogram>& family =
      registry.AddHistogram("switchyard_request_duration_seconds", "Request latency.",
                            {"backend"}, {0.005, 0.1, 1, 10});
  Histogram& local = family.WithLabels({"local"});
  local.Observe(0.003);
  local.Observe(0.05);
  local.Observe(0.07);
  local.Observe(20);
  family.WithLabels({"remote"}).Observe(2.5);

  EXPECT_EQ(registry.Render(), R"EOF(# HELP switchyard_request_duration_seconds Request latency.
# TYPE switchyard_request_duration_seconds histogram
switchyard_request_duration_seconds_bucket{backend="local",le="0.005"} 1
switchyard_request_duration_seconds_bucket{backend="local",le="0.1"} 3
switchyard_request_duration_seconds_bucket{backend="local",le="1"} 3
switchyard_request_duration_seconds_bucket{backend="local",le="10"} 3
switchyard_request_duration_seconds_bucket{backend="local",le="+Inf"} 4
switchyard_request_duration_seconds_sum{backend="local"} 20.123
switchyard_request_duration_seconds_count{backend="local"} 4
switchyard_request_duration_seconds_bucket{backend="remote",le="0.005"} 0
switchyard_request_duration_seconds_bucket{backend="remote",le="0.1"} 0
switchyard_request_duration_seconds_bucket{backend="remote",le="1"} 0
switchyard_request_duration_seconds_bucket{backend="remote",le="10"} 1
switchyard_request_duration_seconds_bucket{backend="remote",le="+Inf"} 1
switchyard_request_duration_seconds_sum{backend="remote"} 2.5
switchyard_request_duration_seconds_count{backend="remote"} 1
)EOF");
}

TEST(MetricsTest, UnlabelledHistogramRendersOnlyLe) {
  MetricsRegistry registry;
  registry.AddHistogram("h_bytes", "Sizes.", {}, {1024}).WithLabels({}).Observe(100);
  EXPECT_EQ(registry.Render(), R"EOF(# HELP h_bytes Sizes.
# TYPE h_bytes histogram
h_bytes_bucket{le="1024"} 1
h_bytes_bucket{le="+Inf"} 1
h_bytes_sum 100
h_bytes_count 1
)EOF");
}

TEST(MetricsTest, HistogramValueOnABoundCountsInThatBucket) {
  Histogram histogram({1, 2, 4});
  for (double v : {1.0, 2.0, 4.0, std::nextafter(1.0, 2.0), std::nextafter(4.0, 0.0), 0.0,
                   -3.0, std::nextafter(4.0, 5.0)}) {
    histogram.Observe(v);
  }
  const Histogram::Snapshot snapshot = histogram.Collect();
  // <=1: 1, 0, -3; (1,2]: next(1), 2; (2,4]: next-below(4), 4; +Inf: next(4).
  EXPECT_THAT(snapshot.cumulative_counts, ::testing::ElementsAre(3, 5, 7, 8));
  EXPECT_EQ(snapshot.count, 8u);
}

TEST(MetricsTest, HistogramPutsNaNInInfBucketAndDropsExplicitInfBound) {
  Histogram histogram({1, std::numeric_limits<double>::infinity()});
  EXPECT_THAT(histogram.bounds(), ::testing::ElementsAre(1.0));
  histogram.Observe(std::numeric_limits<double>::quiet_NaN());
  const Histogram::Snapshot snapshot = histogram.Collect();
  EXPECT_THAT(snapshot.cumulative_counts, ::testing::ElementsAre(0, 1));
  EXPECT_TRUE(std::isnan(snapshot.sum));
}

TEST(MetricsTest, BucketHelpers) {
  EXPECT_THAT(ExponentialBuckets(0.001, 10, 4), ::testing::ElementsAre(0.001, 0.01, 0.1, 1.0));
  EXPECT_THAT(LinearBuckets(1, 2, 3), ::testing::ElementsAre(1.0, 3.0, 5.0));
  EXPECT_TRUE(LinearBuckets(1, 2, 0).empty());
}

TEST(MetricsTest, EscapesHelpAndLabelValues) {
  MetricsRegistry registry;
  registry.AddCounter("e_total", "Back\\slash, \"quotes\" stay,\nnew line.", {"model"})
      .WithLabels({"a\\b \"c\"\nd"})
      .Increment();
  EXPECT_EQ(registry.Render(),
            "# HELP e_total Back\\\\slash, \"quotes\" stay,\\nnew line.\n"
            "# TYPE e_total counter\n"
            "e_total{model=\"a\\\\b \\\"c\\\"\\nd\"} 1\n");
}

TEST(MetricsTest, ConcurrentUpdatesSumExactly) {
  MetricsRegistry registry;
  Family<Counter>& counters = registry.AddCounter("c_total", "c", {"k"});
  Gauge& gauge = registry.AddGauge("g", "g").WithLabels({});
  Histogram& histogram = registry.AddHistogram("h", "h", {}, {0.5}).WithLabels({});
  Counter& shared = counters.WithLabels({"shared"});

  constexpr int kThreads = 4;
  constexpr int kIterations = 200000;
  // Released together, so the loops overlap instead of running one after another.
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      // Every thread also creates children concurrently; they must all get the same one.
      Counter& lazily_created = counters.WithLabels({"lazy"});
      for (int i = 0; i < kIterations; ++i) {
        shared.Increment();
        lazily_created.Increment(0.5);  // exact in binary, exercises the CAS path
        gauge.Add(t % 2 == 0 ? 1.0 : -1.0);
        histogram.Observe(i % 2 == 0 ? 0.25 : 1.0);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();

  constexpr double kTotal = static_cast<double>(kThreads) * kIterations;
  EXPECT_EQ(shared.Value(), kTotal);
  EXPECT_EQ(counters.WithLabels({"lazy"}).Value(), kTotal * 0.5);
  EXPECT_EQ(gauge.Value(), 0.0);
  const Histogram::Snapshot snapshot = histogram.Collect();
  EXPECT_THAT(snapshot.cumulative_counts,
              ::testing::ElementsAre(static_cast<uint64_t>(kTotal / 2),
                                     static_cast<uint64_t>(kTotal)));
  EXPECT_EQ(snapshot.sum, kTotal / 2 * 0.25 + kTotal / 2 * 1.0);
}

TEST(MetricsTest, CallbackFamiliesReadAtScrapeTimeAndCanBeRemoved) {
  MetricsRegistry registry;
  CallbackFamily& depth =
      registry.AddCallbackGauge("switchyard_queue_depth", "Queued requests.", {"model"});
  CallbackFamily& tokens =
      registry.AddCallbackCounter("switchyard_engine_tokens_total", "Tokens decoded.");
  int queued = 3;
  depth.Set({"tiny"}, [&queued] { return static_cast<double>(queued); });
  depth.Set({"big"}, [] { return 0.0; });
  tokens.Set({}, [] { return 1234.0; });

  EXPECT_EQ(registry.Render(), R"EOF(# HELP switchyard_engine_tokens_total Tokens decoded.
# TYPE switchyard_engine_tokens_total counter
switchyard_engine_tokens_total 1234
# HELP switchyard_queue_depth Queued requests.
# TYPE switchyard_queue_depth gauge
switchyard_queue_depth{model="big"} 0
switchyard_queue_depth{model="tiny"} 3
)EOF");

  queued = 5;
  depth.Remove({"big"});
  depth.Remove({"never_set"});
  tokens.Remove({});
  EXPECT_EQ(registry.Render(), R"EOF(# HELP switchyard_queue_depth Queued requests.
# TYPE switchyard_queue_depth gauge
switchyard_queue_depth{model="tiny"} 5
)EOF");
}

TEST(MetricsTest, BuildInfo) {
  MetricsRegistry registry;
  AddBuildInfo(registry, "0.1.0");
  EXPECT_EQ(registry.Render(), R"EOF(# HELP switchyard_build_info Build information; the value is always 1.
# TYPE switchyard_build_info gauge
switchyard_build_info{version="0.1.0"} 1
)EOF");
}

TEST(MetricsTest, AppendToReusesTheCallersBuffer) {
  MetricsRegistry registry;
  registry.AddGauge("g", "g");
  std::string out = "prefix\n";
  registry.AppendTo(&out);
  EXPECT_EQ(out, "prefix\n# HELP g g\n# TYPE g gauge\ng 0\n");
}

using MetricsDeathTest = ::testing::Test;

TEST_F(MetricsDeathTest, RegistrationMistakesAbortNamingTheMetric) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  MetricsRegistry registry;
  EXPECT_DEATH(registry.AddCounter("requests", "r"), "requests: counter names must end in _total");
  EXPECT_DEATH(registry.AddGauge("in_flight_total", "r"), "only counter names");
  EXPECT_DEATH(registry.AddGauge("1bad", "r"), "1bad: invalid metric name");
  EXPECT_DEATH(registry.AddGauge("g", "r", {"bad-label"}), "invalid label name 'bad-label'");
  EXPECT_DEATH(registry.AddGauge("g", "r", {"__reserved"}), "invalid label name");
  EXPECT_DEATH(registry.AddGauge("g", "r", {"a", "a"}), "duplicate label name 'a'");
  EXPECT_DEATH(registry.AddHistogram("h", "r", {"le"}, {1}), "'le' is reserved");
  EXPECT_DEATH(registry.AddHistogram("h", "r", {}, {2, 1}), "h: .*strictly increasing");
  EXPECT_DEATH(registry.AddHistogram("h", "r", {}, {1, 1}), "strictly increasing");
  EXPECT_DEATH(registry.AddGauge("g_count", "r"), "may not end in _count");
  registry.AddGauge("g", "r", {"a", "b"});
  EXPECT_DEATH(registry.AddGauge("g", "r"), "g: registered twice");
}

TEST_F(MetricsDeathTest, WrongNumberOfLabelValuesAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  MetricsRegistry registry;
  Family<Counter>& family = registry.AddCounter("x_total", "x", {"a", "b"});
  EXPECT_DEATH(family.WithLabels({"only_one"}), "x_total: got 1 label values for 2 label names");
}

// The strongest check of the format we have: Prometheus' own parser and linter.
TEST(MetricsTest, PromtoolAcceptsEveryKind) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool not installed";
  }
  MetricsRegistry registry;
  AddBuildInfo(registry, "0.1.0-test");
  Family<Counter>& requests = registry.AddCounter(
      "switchyard_requests_total", "Requests \"by\" outcome.\nSecond line \\ here.",
      {"backend", "outcome"});
  requests.WithLabels({"local", "ok"}).Increment(7);
  requests.WithLabels({"we\"ird\\name\n", "error"}).Increment(0.5);
  registry.AddCounter("switchyard_requests_rejected_total", "Rejected requests.");
  Family<Gauge>& in_flight =
      registry.AddGauge("switchyard_requests_in_flight", "Requests in flight.", {"backend"});
  in_flight.WithLabels({"local"}).Set(2);
  in_flight.WithLabels({"nan"}).Set(std::numeric_limits<double>::quiet_NaN());
  in_flight.WithLabels({"inf"}).Set(-std::numeric_limits<double>::infinity());
  Family<Histogram>& latency =
      registry.AddHistogram("switchyard_request_duration_seconds", "Request latency.",
                            {"backend"}, ExponentialBuckets(0.001, 4, 8));
  latency.WithLabels({"local"}).Observe(0.02);
  latency.WithLabels({"remote"}).Observe(100);
  registry.AddHistogram("switchyard_prompt_tokens", "Prompt sizes.", {}, {16, 256, 4096})
      .WithLabels({})
      .Observe(300);
  registry.AddCallbackGauge("switchyard_queue_depth", "Queued requests.", {"model"})
      .Set({"tiny"}, [] { return 4.0; });
  registry.AddCallbackCounter("switchyard_engine_decoded_tokens_total", "Decoded tokens.")
      .Set({}, [] { return 1e6; });

  const std::string path = ::testing::TempDir() + "/metrics_promtool_" +
                           std::to_string(::getpid()) + ".txt";
  {
    std::ofstream file(path);
    file << registry.Render();
    ASSERT_TRUE(file.good());
  }
  const std::string command = "promtool check metrics < '" + path + "' 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[256];
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  const int status = ::pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), 0) << output << "\n--- input ---\n" << registry.Render();
  std::remove(path.c_str());
}

}  // namespace
}  // namespace switchyard::gateway
