// A small Prometheus registry and text exposition (format 0.0.4) for the gateway's /metrics.
//
// We keep our own because prometheus-cpp is not packaged for the target OS, and we only need the
// part of it a gateway uses: counters, gauges, fixed-bucket histograms, values computed at scrape
// time, and one text renderer.
//
// Threads: every method here is safe to call from any thread. The hot path (Counter::Increment,
// Gauge::Set, Histogram::Observe on a child already obtained) takes no lock; looking up or creating
// a child by label values takes the family's lock, so callers on a hot path look a child up once
// and keep the reference. Children live as long as their registry and never move.
//
// Registration mistakes (an invalid or duplicate name, a counter without `_total`, unsorted
// buckets, the wrong number of label values) are bugs in our code, not in traffic: they abort
// with a message naming the metric, so they show up in the first test that registers them.
// Label values may come from traffic and are escaped, never rejected.
//
// Example:
//   MetricsRegistry registry;
//   Family<Counter>& requests = registry.AddCounter(
//       "switchyard_requests_total", "Requests by route and outcome.",
//       {"backend", "policy", "outcome"});
//   Counter& ok = requests.WithLabels({"local", "default", "ok"});  // cache this
//   ok.Increment();
//   std::string body = registry.Render();
#ifndef SWITCHYARD_GATEWAY_METRICS_H_
#define SWITCHYARD_GATEWAY_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

namespace switchyard::gateway {

// The Content-Type header to send with Render()'s output.
inline constexpr std::string_view kPrometheusContentType =
    "text/plain; version=0.0.4; charset=utf-8";

// A monotonically increasing value. Whole increments (the common case: requests, tokens) take
// one atomic integer add, exact and free of retry loops under contention; fractional ones
// (seconds) go through a compare-and-swap loop on a separate double.
class Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  void Increment() { whole_.fetch_add(1, std::memory_order_relaxed); }
  // Ignores negative and NaN deltas: a counter that went down would read as a process restart
  // to rate(), which is worse than a lost sample.
  void Increment(double delta);
  double Value() const;

 private:
  std::atomic<uint64_t> whole_{0};
  std::atomic<double> fraction_{0.0};
};

// A value that goes up and down (in-flight requests, loaded models).
class Gauge {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double delta);
  void Increment() { Add(1.0); }
  void Decrement() { Add(-1.0); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Counts observations into fixed buckets. Bucket i counts values v with
// bounds[i-1] < v <= bounds[i] (a value equal to a bound lands in that bound's bucket, as
// Prometheus' `le` says); the implicit last bucket is +Inf. Per-bucket counts are stored
// non-cumulatively so Observe touches one counter; Render accumulates them.
class Histogram {
 public:
  // `bounds` must be strictly increasing and free of NaN; a trailing +Inf is dropped since
  // +Inf is always present. MetricsRegistry::AddHistogram checks this before constructing one.
  explicit Histogram(std::vector<double> bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  void Observe(double value);

  struct Snapshot {
    std::vector<uint64_t> cumulative_counts;  // one per bound, then +Inf (== count)
    double sum = 0.0;
    uint64_t count = 0;
  };
  // Not atomic across buckets: a concurrent Observe may be half-visible (in sum but not yet in
  // its bucket). Count is derived from the buckets so `_count` always equals the `+Inf` bucket.
  Snapshot Collect() const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1 entries
  std::atomic<double> sum_{0.0};
};

// Bucket helpers, as in the Go client: `count` bounds start, start*factor, ... and
// start, start+width, ...
std::vector<double> ExponentialBuckets(double start, double factor, int count);
std::vector<double> LinearBuckets(double start, double width, int count);

enum class MetricType { kCounter, kGauge, kHistogram };

// What MetricsRegistry keeps per metric name. Internal to the registry and its renderer.
class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, MetricType type,
             std::vector<std::string> label_names);
  virtual ~FamilyBase() = default;
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;

  const std::string& name() const { return name_; }
  MetricType type() const { return type_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

  // Appends `# HELP`, `# TYPE` and one line per sample; appends nothing if the family has no
  // series yet, like the Go client, so unused labelled families don't clutter the output.
  void AppendTo(std::string* out) const;

 protected:
  // Orders label-value lists lexicographically, comparing stored std::string lists with lookup
  // spans of string_view without building a key (the lookup path stays allocation-free).
  struct LabelValuesLess {
    using is_transparent = void;
    bool operator()(absl::Span<const std::string> a, absl::Span<const std::string> b) const;
    bool operator()(absl::Span<const std::string> a, absl::Span<const std::string_view> b) const;
    bool operator()(absl::Span<const std::string_view> a, absl::Span<const std::string> b) const;
  };
  // Hash and equality over the same two forms, for the children's hash map: a request's
  // lookups are a hash and one comparison rather than a walk down a tree of comparisons.
  struct LabelValuesHash {
    using is_transparent = void;
    size_t operator()(absl::Span<const std::string> values) const;
    size_t operator()(absl::Span<const std::string_view> values) const;
  };
  struct LabelValuesEq {
    using is_transparent = void;
    bool operator()(absl::Span<const std::string> a, absl::Span<const std::string> b) const;
    bool operator()(absl::Span<const std::string> a, absl::Span<const std::string_view> b) const;
    bool operator()(absl::Span<const std::string_view> a, absl::Span<const std::string> b) const;
  };

  // Aborts naming the family unless `values` has one entry per label name.
  void CheckArity(size_t num_values) const;
  // Appends the samples of every child, in label-value order.
  virtual void AppendSamples(std::string* out) const = 0;
  // Appends `name{l1="v1",...,extra_name="extra_value"} value\n`.
  void AppendSample(std::string_view suffix, absl::Span<const std::string> label_values,
                    std::string_view extra_label, std::string_view extra_value, double value,
                    std::string* out) const;

 private:
  const std::string name_;
  const std::string help_;
  const MetricType type_;
  const std::vector<std::string> label_names_;
};

// All series of one metric: the children of a family differ only in their label values.
// T is Counter, Gauge or Histogram.
template <typename T>
class Family final : public FamilyBase {
 public:
  Family(std::string name, std::string help, MetricType type,
         std::vector<std::string> label_names, std::function<std::unique_ptr<T>()> make_child);

  // Returns the child for these label values (one per label name, in order), creating it at
  // zero on first use. The reference stays valid for the registry's lifetime.
  T& WithLabels(absl::Span<const std::string_view> values) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void AppendSamples(std::string* out) const override ABSL_LOCKS_EXCLUDED(mu_);

  const std::function<std::unique_ptr<T>()> make_child_;
  mutable absl::Mutex mu_;
  // Unordered; a scrape sorts the series by label values.
  absl::flat_hash_map<std::vector<std::string>, std::unique_ptr<T>, LabelValuesHash, LabelValuesEq>
      children_ ABSL_GUARDED_BY(mu_);
};

extern template class Family<Counter>;
extern template class Family<Gauge>;
extern template class Family<Histogram>;

// A counter or gauge family whose values are read at scrape time from callbacks, for numbers
// another component already keeps (queue depth, KV-cache use, slots busy).
//
// Contract: callbacks run on the scraping thread while the family's lock is held, so they must
// be thread-safe, quick, and must not call into the registry. After Remove() returns, the
// removed callback is not running and will not run again, so its owner may then be destroyed.
class CallbackFamily final : public FamilyBase {
 public:
  using FamilyBase::FamilyBase;

  // Installs or replaces the callback for these label values.
  void Set(absl::Span<const std::string_view> values, std::function<double()> callback)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Remove(absl::Span<const std::string_view> values) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void AppendSamples(std::string* out) const override ABSL_LOCKS_EXCLUDED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, std::function<double()>, LabelValuesLess> callbacks_
      ABSL_GUARDED_BY(mu_);
};

// Owns metric families and renders them. Families are rendered sorted by name, children sorted
// by label values, so the output does not depend on which component registered first.
// Families without labels get their single child at registration, so they render as 0 from the
// first scrape (rate() needs the zero).
class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Counter names must end in `_total` (Prometheus convention; promtool flags them otherwise).
  Family<Counter>& AddCounter(std::string name, std::string help,
                              std::vector<std::string> label_names = {})
      ABSL_LOCKS_EXCLUDED(mu_);
  Family<Gauge>& AddGauge(std::string name, std::string help,
                          std::vector<std::string> label_names = {}) ABSL_LOCKS_EXCLUDED(mu_);
  // `bounds` as for Histogram; `le` is reserved and may not be a label name.
  Family<Histogram>& AddHistogram(std::string name, std::string help,
                                  std::vector<std::string> label_names,
                                  std::vector<double> bounds) ABSL_LOCKS_EXCLUDED(mu_);
  CallbackFamily& AddCallbackGauge(std::string name, std::string help,
                                   std::vector<std::string> label_names = {})
      ABSL_LOCKS_EXCLUDED(mu_);
  CallbackFamily& AddCallbackCounter(std::string name, std::string help,
                                     std::vector<std::string> label_names = {})
      ABSL_LOCKS_EXCLUDED(mu_);

  // Appends the text exposition of every family to `out`; reuse one string across scrapes to
  // avoid regrowing it.
  void AppendTo(std::string* out) const ABSL_LOCKS_EXCLUDED(mu_);
  std::string Render() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // Aborts if `name` is invalid or taken, or a label name is invalid; otherwise takes ownership.
  FamilyBase& Insert(std::unique_ptr<FamilyBase> family) ABSL_LOCKS_EXCLUDED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<FamilyBase>, std::less<>> families_ ABSL_GUARDED_BY(mu_);
};

// Registers `switchyard_build_info{version="..."} 1`, the usual way to export a version: join on
// it in PromQL instead of repeating the version on every series.
void AddBuildInfo(MetricsRegistry& registry, std::string_view version);

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_METRICS_H_
