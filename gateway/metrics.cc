#include "gateway/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "absl/hash/hash.h"

// No absl string helpers here: Debian's abseil is built with its own absl::string_view, which
// does not accept std::string_view, and std::string's appends are all this needs.

namespace switchyard::gateway {
namespace {

static_assert(std::atomic<double>::is_always_lock_free,
              "the metrics hot path relies on lock-free atomic<double>");

// Registration errors are programming errors (see metrics.h), found at startup.
[[noreturn]] void Fail(std::string_view metric, std::string_view problem) {
  std::fprintf(stderr, "switchyard metrics: %.*s: %.*s\n", static_cast<int>(metric.size()),
               metric.data(), static_cast<int>(problem.size()), problem.data());
  std::abort();
}

// libstdc++ 12 has atomic<double>::fetch_add, but spelling out the loop keeps the relaxed
// ordering explicit and works on any standard library.
void AtomicAdd(std::atomic<double>& target, double delta) {
  double current = target.load(std::memory_order_relaxed);
  while (!target.compare_exchange_weak(current, current + delta, std::memory_order_relaxed,
                                       std::memory_order_relaxed)) {
  }
}

bool IsValidMetricName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

bool IsValidLabelName(std::string_view name) {
  // Names starting with "__" are reserved for Prometheus' own use.
  if (name.empty() || name.starts_with("__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

// Prometheus' value syntax is Go's ParseFloat: integers print without an exponent (a counter of
// 1e6 requests reads as 1000000), everything else as the shortest string that round-trips.
void AppendValue(double value, std::string* out) {
  if (std::isnan(value)) {
    out->append("NaN");
    return;
  }
  if (std::isinf(value)) {
    out->append(value > 0 ? "+Inf" : "-Inf");
    return;
  }
  // 2^63 bounds the int64 conversion; every double in range that equals its truncation is an
  // integer that int64 holds exactly.
  constexpr double kTwoTo63 = 9223372036854775808.0;
  char buffer[32];
  std::to_chars_result result;
  if (value == std::trunc(value) && std::fabs(value) < kTwoTo63) {
    result = std::to_chars(buffer, buffer + sizeof(buffer), static_cast<int64_t>(value));
  } else {
    result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  }
  out->append(buffer, result.ptr);
}

// Exposition format 0.0.4: HELP text escapes backslash and newline; label values also escape the
// double quote that delimits them.
void AppendEscaped(std::string_view text, bool escape_quote, std::string* out) {
  for (const char c : text) {
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == '\n') {
      out->append("\\n");
    } else if (c == '"' && escape_quote) {
      out->append("\\\"");
    } else {
      out->push_back(c);
    }
  }
}

void AppendEscapedHelp(std::string_view help, std::string* out) { AppendEscaped(help, false, out); }

void AppendEscapedLabelValue(std::string_view value, std::string* out) {
  AppendEscaped(value, true, out);
}

std::string_view TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

template <typename A, typename B>
bool LexicographicLess(absl::Span<const A> a, absl::Span<const B> b) {
  return std::lexicographical_compare(
      a.begin(), a.end(), b.begin(), b.end(),
      [](std::string_view x, std::string_view y) { return x < y; });
}

// Validates bucket bounds and drops a trailing +Inf, which is always rendered anyway.
std::vector<double> NormalizeBounds(std::string_view metric, std::vector<double> bounds) {
  if (!bounds.empty() && std::isinf(bounds.back()) && bounds.back() > 0) bounds.pop_back();
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (std::isnan(bounds[i])) Fail(metric, "histogram bound is NaN");
    if (i > 0 && !(bounds[i - 1] < bounds[i])) {
      Fail(metric, "histogram bounds must be strictly increasing");
    }
  }
  return bounds;
}

}  // namespace

void Counter::Increment(double delta) {
  if (!(delta >= 0)) return;  // also rejects NaN
  // Whole deltas below 2^53 stay on the exact integer path; only fractions pay for the CAS loop.
  constexpr double kTwoTo53 = 9007199254740992.0;
  if (delta < kTwoTo53 && delta == std::trunc(delta)) {
    whole_.fetch_add(static_cast<uint64_t>(delta), std::memory_order_relaxed);
  } else {
    AtomicAdd(fraction_, delta);
  }
}

double Counter::Value() const {
  return static_cast<double>(whole_.load(std::memory_order_relaxed)) +
         fraction_.load(std::memory_order_relaxed);
}

void Gauge::Add(double delta) { AtomicAdd(value_, delta); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(NormalizeBounds("histogram", std::move(bounds))),
      counts_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {}

void Histogram::Observe(double value) {
  // First bound >= value, so a value equal to a bound counts in that bound's bucket. NaN
  // compares false with everything and would land in the first bucket; the Go client puts it in
  // +Inf, and so do we (it also turns the sum into NaN, which is honest).
  const size_t index =
      std::isnan(value)
          ? bounds_.size()
          : static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) -
                                bounds_.begin());
  counts_[index].fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(sum_, value);
}

Histogram::Snapshot Histogram::Collect() const {
  Snapshot snapshot;
  snapshot.cumulative_counts.resize(bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    snapshot.cumulative_counts[i] = running;
  }
  snapshot.count = running;
  snapshot.sum = sum_.load(std::memory_order_relaxed);
  return snapshot;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> bounds;
  bounds.reserve(count > 0 ? count : 0);
  double bound = start;
  for (int i = 0; i < count; ++i) {
    bounds.push_back(bound);
    bound *= factor;
  }
  return bounds;
}

std::vector<double> LinearBuckets(double start, double width, int count) {
  std::vector<double> bounds;
  bounds.reserve(count > 0 ? count : 0);
  for (int i = 0; i < count; ++i) bounds.push_back(start + width * i);
  return bounds;
}

FamilyBase::FamilyBase(std::string name, std::string help, MetricType type,
                       std::vector<std::string> label_names)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      label_names_(std::move(label_names)) {}

bool FamilyBase::LabelValuesLess::operator()(absl::Span<const std::string> a,
                                             absl::Span<const std::string> b) const {
  return LexicographicLess(a, b);
}
bool FamilyBase::LabelValuesLess::operator()(absl::Span<const std::string> a,
                                             absl::Span<const std::string_view> b) const {
  return LexicographicLess(a, b);
}
bool FamilyBase::LabelValuesLess::operator()(absl::Span<const std::string_view> a,
                                             absl::Span<const std::string> b) const {
  return LexicographicLess(a, b);
}

template <typename S>
size_t HashLabelValues(absl::Span<const S> values) {
  size_t hash = values.size();
  for (const S& value : values) {
    hash = absl::HashOf(hash, absl::string_view(value.data(), value.size()));
  }
  return hash;
}

template <typename A, typename B>
bool EqualLabelValues(absl::Span<const A> a, absl::Span<const B> b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](std::string_view x, std::string_view y) { return x == y; });
}

size_t FamilyBase::LabelValuesHash::operator()(absl::Span<const std::string> values) const {
  return HashLabelValues(values);
}
size_t FamilyBase::LabelValuesHash::operator()(absl::Span<const std::string_view> values) const {
  return HashLabelValues(values);
}
bool FamilyBase::LabelValuesEq::operator()(absl::Span<const std::string> a,
                                           absl::Span<const std::string> b) const {
  return EqualLabelValues(a, b);
}
bool FamilyBase::LabelValuesEq::operator()(absl::Span<const std::string> a,
                                           absl::Span<const std::string_view> b) const {
  return EqualLabelValues(a, b);
}
bool FamilyBase::LabelValuesEq::operator()(absl::Span<const std::string_view> a,
                                           absl::Span<const std::string> b) const {
  return EqualLabelValues(a, b);
}

void FamilyBase::CheckArity(size_t num_values) const {
  if (num_values != label_names_.size()) {
    Fail(name_, "got " + std::to_string(num_values) + " label values for " +
                    std::to_string(label_names_.size()) + " label names");
  }
}

void FamilyBase::AppendTo(std::string* out) const {
  // Write the header first and take it back if no sample follows, rather than rendering the
  // samples into a temporary and copying them.
  const size_t start = out->size();
  out->append("# HELP ").append(name_).push_back(' ');
  AppendEscapedHelp(help_, out);
  out->append("\n# TYPE ").append(name_).append(" ").append(TypeName(type_)).push_back('\n');
  const size_t header_end = out->size();
  AppendSamples(out);
  if (out->size() == header_end) out->resize(start);
}

void FamilyBase::AppendSample(std::string_view suffix, absl::Span<const std::string> label_values,
                              std::string_view extra_label, std::string_view extra_value,
                              double value, std::string* out) const {
  out->append(name_).append(suffix);
  if (!label_values.empty() || !extra_label.empty()) {
    out->push_back('{');
    for (size_t i = 0; i < label_values.size(); ++i) {
      if (i > 0) out->push_back(',');
      out->append(label_names_[i]).append("=\"");
      AppendEscapedLabelValue(label_values[i], out);
      out->push_back('"');
    }
    if (!extra_label.empty()) {
      if (!label_values.empty()) out->push_back(',');
      out->append(extra_label).append("=\"").append(extra_value).push_back('"');
    }
    out->push_back('}');
  }
  out->push_back(' ');
  AppendValue(value, out);
  out->push_back('\n');
}

template <typename T>
Family<T>::Family(std::string name, std::string help, MetricType type,
                  std::vector<std::string> label_names,
                  std::function<std::unique_ptr<T>()> make_child)
    : FamilyBase(std::move(name), std::move(help), type, std::move(label_names)),
      make_child_(std::move(make_child)) {}

template <typename T>
T& Family<T>::WithLabels(absl::Span<const std::string_view> values) {
  CheckArity(values.size());
  absl::MutexLock lock(&mu_);
  auto it = children_.find(values);
  if (it == children_.end()) {
    it = children_.emplace(std::vector<std::string>(values.begin(), values.end()), make_child_())
             .first;
  }
  return *it->second;
}

template <typename T>
void Family<T>::AppendSamples(std::string* out) const {
  absl::MutexLock lock(&mu_);
  std::vector<const typename decltype(children_)::value_type*> sorted;
  sorted.reserve(children_.size());
  for (const auto& entry : children_) sorted.push_back(&entry);
  std::sort(sorted.begin(), sorted.end(), [](const auto* a, const auto* b) {
    return LabelValuesLess()(a->first, b->first);
  });
  for (const auto* entry : sorted) {
    const std::vector<std::string>& label_values = entry->first;
    const std::unique_ptr<T>& child = entry->second;
    if constexpr (std::is_same_v<T, Histogram>) {
      const Histogram::Snapshot snapshot = child->Collect();
      const std::vector<double>& bounds = child->bounds();
      std::string le;
      for (size_t i = 0; i < bounds.size(); ++i) {
        le.clear();
        AppendValue(bounds[i], &le);
        AppendSample("_bucket", label_values, "le", le,
                     static_cast<double>(snapshot.cumulative_counts[i]), out);
      }
      AppendSample("_bucket", label_values, "le", "+Inf", static_cast<double>(snapshot.count),
                   out);
      AppendSample("_sum", label_values, "", "", snapshot.sum, out);
      AppendSample("_count", label_values, "", "", static_cast<double>(snapshot.count), out);
    } else {
      AppendSample("", label_values, "", "", child->Value(), out);
    }
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

void CallbackFamily::Set(absl::Span<const std::string_view> values,
                         std::function<double()> callback) {
  CheckArity(values.size());
  absl::MutexLock lock(&mu_);
  auto it = callbacks_.find(values);
  if (it == callbacks_.end()) {
    callbacks_.emplace(std::vector<std::string>(values.begin(), values.end()),
                       std::move(callback));
  } else {
    it->second = std::move(callback);
  }
}

void CallbackFamily::Remove(absl::Span<const std::string_view> values) {
  CheckArity(values.size());
  absl::MutexLock lock(&mu_);
  auto it = callbacks_.find(values);
  if (it != callbacks_.end()) callbacks_.erase(it);
}

void CallbackFamily::AppendSamples(std::string* out) const {
  // The lock is held across the calls so that Remove() can promise the callback is done.
  absl::MutexLock lock(&mu_);
  for (const auto& [label_values, callback] : callbacks_) {
    AppendSample("", label_values, "", "", callback(), out);
  }
}

FamilyBase& MetricsRegistry::Insert(std::unique_ptr<FamilyBase> family) {
  const std::string& name = family->name();
  if (!IsValidMetricName(name)) Fail(name, "invalid metric name");
  // promtool lints these suffixes: `_total` marks counters only, and the histogram suffixes
  // would collide with a histogram's own series.
  if (family->type() == MetricType::kCounter && !name.ends_with("_total")) {
    Fail(name, "counter names must end in _total");
  }
  if (family->type() != MetricType::kCounter && name.ends_with("_total")) {
    Fail(name, "only counter names may end in _total");
  }
  for (std::string_view suffix : {"_bucket", "_count", "_sum"}) {
    if (name.ends_with(suffix)) Fail(name, "names may not end in " + std::string(suffix));
  }
  std::set<std::string_view> seen;
  for (const std::string& label : family->label_names()) {
    if (!IsValidLabelName(label)) Fail(name, "invalid label name '" + label + "'");
    if (!seen.insert(label).second) Fail(name, "duplicate label name '" + label + "'");
    if (family->type() == MetricType::kHistogram && label == "le") {
      Fail(name, "'le' is reserved in histograms");
    }
  }
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = families_.emplace(name, std::move(family));
  if (!inserted) Fail(it->first, "registered twice");
  return *it->second;
}

Family<Counter>& MetricsRegistry::AddCounter(std::string name, std::string help,
                                             std::vector<std::string> label_names) {
  auto& family = static_cast<Family<Counter>&>(Insert(std::make_unique<Family<Counter>>(
      std::move(name), std::move(help), MetricType::kCounter, std::move(label_names),
      [] { return std::make_unique<Counter>(); })));
  if (family.label_names().empty()) family.WithLabels({});
  return family;
}

Family<Gauge>& MetricsRegistry::AddGauge(std::string name, std::string help,
                                         std::vector<std::string> label_names) {
  auto& family = static_cast<Family<Gauge>&>(Insert(std::make_unique<Family<Gauge>>(
      std::move(name), std::move(help), MetricType::kGauge, std::move(label_names),
      [] { return std::make_unique<Gauge>(); })));
  if (family.label_names().empty()) family.WithLabels({});
  return family;
}

Family<Histogram>& MetricsRegistry::AddHistogram(std::string name, std::string help,
                                                 std::vector<std::string> label_names,
                                                 std::vector<double> bounds) {
  // Validate here so the message names the metric rather than "histogram".
  auto normalized = std::make_shared<const std::vector<double>>(
      NormalizeBounds(name, std::move(bounds)));
  auto& family = static_cast<Family<Histogram>&>(Insert(std::make_unique<Family<Histogram>>(
      std::move(name), std::move(help), MetricType::kHistogram, std::move(label_names),
      [normalized] { return std::make_unique<Histogram>(*normalized); })));
  if (family.label_names().empty()) family.WithLabels({});
  return family;
}

CallbackFamily& MetricsRegistry::AddCallbackGauge(std::string name, std::string help,
                                                  std::vector<std::string> label_names) {
  return static_cast<CallbackFamily&>(Insert(std::make_unique<CallbackFamily>(
      std::move(name), std::move(help), MetricType::kGauge, std::move(label_names))));
}

CallbackFamily& MetricsRegistry::AddCallbackCounter(std::string name, std::string help,
                                                    std::vector<std::string> label_names) {
  return static_cast<CallbackFamily&>(Insert(std::make_unique<CallbackFamily>(
      std::move(name), std::move(help), MetricType::kCounter, std::move(label_names))));
}

void MetricsRegistry::AppendTo(std::string* out) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [name, family] : families_) family->AppendTo(out);
}

std::string MetricsRegistry::Render() const {
  std::string out;
  AppendTo(&out);
  return out;
}

void AddBuildInfo(MetricsRegistry& registry, std::string_view version) {
  registry
      .AddGauge("switchyard_build_info", "Build information; the value is always 1.",
                {"version"})
      .WithLabels({version})
      .Set(1);
}

}  // namespace switchyard::gateway
