// What the metrics hot path and one scrape cost. Run by hand; not part of ctest.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "gateway/metrics.h"

namespace switchyard::gateway {
namespace {

void BM_CounterIncrementCached(benchmark::State& state) {
  static MetricsRegistry* registry = new MetricsRegistry;
  static Counter* counter = &registry
                                 ->AddCounter("bench_requests_total", "r",
                                              {"backend", "policy", "outcome"})
                                 .WithLabels({"local", "default", "ok"});
  for (auto _ : state) counter->Increment();
  benchmark::DoNotOptimize(counter->Value());
}
BENCHMARK(BM_CounterIncrementCached)->Threads(1)->Threads(2);

void BM_CounterIncrementFraction(benchmark::State& state) {
  static MetricsRegistry* registry = new MetricsRegistry;
  static Counter* counter =
      &registry->AddCounter("bench_seconds_total", "s", {"backend"}).WithLabels({"local"});
  for (auto _ : state) counter->Increment(0.001);
  benchmark::DoNotOptimize(counter->Value());
}
BENCHMARK(BM_CounterIncrementFraction)->Threads(1)->Threads(2);

// For comparison: what a caller pays when it does not cache the child.
void BM_CounterWithLabelsLookup(benchmark::State& state) {
  MetricsRegistry registry;
  Family<Counter>& family =
      registry.AddCounter("bench_requests_total", "r", {"backend", "policy", "outcome"});
  for (int i = 0; i < 20; ++i) family.WithLabels({absl::StrCat("b", i), "default", "ok"});
  for (auto _ : state) family.WithLabels({"b7", "default", "ok"}).Increment();
}
BENCHMARK(BM_CounterWithLabelsLookup);

void BM_HistogramObserve(benchmark::State& state) {
  MetricsRegistry registry;
  Histogram& histogram =
      registry.AddHistogram("bench_duration_seconds", "d", {}, ExponentialBuckets(0.001, 2, 16))
          .WithLabels({});
  double value = 0.0;
  for (auto _ : state) {
    histogram.Observe(value);
    value = value > 60 ? 0.0 : value + 0.37;
  }
}
BENCHMARK(BM_HistogramObserve);

// 200 series: 100 counters, 56 gauges, 4 histograms with 8 bounds (11 series each).
void FillMixed200(MetricsRegistry& registry) {
  Family<Counter>& requests =
      registry.AddCounter("bench_requests_total", "Requests.", {"backend", "policy", "outcome"});
  for (int i = 0; i < 100; ++i) {
    requests.WithLabels({absl::StrCat("backend_", i / 10), absl::StrCat("policy_", i % 10), "ok"})
        .Increment(i * 1000 + 17);
  }
  Family<Gauge>& in_flight = registry.AddGauge("bench_in_flight", "In flight.", {"backend"});
  for (int i = 0; i < 56; ++i) in_flight.WithLabels({absl::StrCat("backend_", i)}).Set(i * 0.5);
  Family<Histogram>& latency = registry.AddHistogram(
      "bench_duration_seconds", "Latency.", {"backend"}, ExponentialBuckets(0.005, 4, 8));
  for (int i = 0; i < 4; ++i) {
    Histogram& h = latency.WithLabels({absl::StrCat("backend_", i)});
    for (int j = 0; j < 100; ++j) h.Observe(j * 0.0731);
  }
}

void BM_RenderMixed200(benchmark::State& state) {
  MetricsRegistry registry;
  FillMixed200(registry);
  std::string out;
  for (auto _ : state) {
    out.clear();
    registry.AppendTo(&out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * out.size()));
  state.counters["bytes"] = static_cast<double>(out.size());
}
BENCHMARK(BM_RenderMixed200);

void BM_Render200Counters(benchmark::State& state) {
  MetricsRegistry registry;
  Family<Counter>& requests =
      registry.AddCounter("bench_requests_total", "Requests.", {"backend", "policy", "outcome"});
  for (int i = 0; i < 200; ++i) {
    requests.WithLabels({absl::StrCat("backend_", i / 20), absl::StrCat("policy_", i % 20), "ok"})
        .Increment(i * 1000 + 17);
  }
  for (auto _ : state) {
    std::string out = registry.Render();  // fresh string each time, the pessimistic case
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_Render200Counters);

}  // namespace
}  // namespace switchyard::gateway

BENCHMARK_MAIN();
