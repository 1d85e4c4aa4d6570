// A compact log-linear latency histogram in the spirit of HdrHistogram: every power of two of
// nanoseconds is split into 128 linear buckets, so any recorded value is reported within 1/128
// (< 0.8%) of itself, from 1 ns to about 18 minutes, in 5,248 counters (41 KiB).
//
// Not thread-safe: each thread records into its own histogram; Merge() combines them.
#ifndef SWITCHYARD_TESTS_LOAD_HISTOGRAM_H_
#define SWITCHYARD_TESTS_LOAD_HISTOGRAM_H_

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <limits>

namespace switchyard::load {

class Histogram {
 public:
  static constexpr int kSubBits = 7;
  static constexpr int64_t kSubBuckets = int64_t{1} << kSubBits;
  static constexpr int kMaxExponent = 40;  // values >= 2^(40+7) ns are clamped
  static constexpr int64_t kBuckets = (kMaxExponent + 1) * kSubBuckets;

  void Record(int64_t nanos) {
    nanos = std::max<int64_t>(nanos, 0);
    counts_[static_cast<size_t>(Index(nanos))] += 1;
    ++count_;
    sum_ += static_cast<double>(nanos);
    min_ = std::min(min_, nanos);
    max_ = std::max(max_, nanos);
  }

  void Merge(const Histogram& other) {
    for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
    count_ += other.count_;
    sum_ += other.sum_;
    min_ = std::min(min_, other.min_);
    max_ = std::max(max_, other.max_);
  }

  int64_t count() const { return count_; }
  int64_t min() const { return count_ == 0 ? 0 : min_; }
  int64_t max() const { return max_; }
  double mean() const { return count_ == 0 ? 0 : sum_ / static_cast<double>(count_); }

  // The smallest recorded value v such that at least `quantile` of all values are <= v, as the
  // upper edge of its bucket (clamped to the exact maximum). 0 when empty.
  int64_t Percentile(double quantile) const {
    if (count_ == 0) return 0;
    const double wanted = std::clamp(quantile, 0.0, 1.0) * static_cast<double>(count_);
    int64_t target = static_cast<int64_t>(wanted);
    if (static_cast<double>(target) < wanted) ++target;
    target = std::max<int64_t>(target, 1);
    int64_t seen = 0;
    for (int64_t i = 0; i < kBuckets; ++i) {
      seen += counts_[static_cast<size_t>(i)];
      if (seen >= target) return std::min(UpperEdge(i), max_);
    }
    return max_;
  }

  // Recorded values in buckets above the one `nanos` falls in (i.e. above it, within 0.8%).
  int64_t CountAbove(int64_t nanos) const {
    int64_t above = 0;
    for (int64_t i = Index(nanos) + 1; i < kBuckets; ++i) above += counts_[static_cast<size_t>(i)];
    return above;
  }

  // Exposed for tests: the bucket of a value and that bucket's largest value.
  static int64_t Index(int64_t nanos) {
    const uint64_t v = static_cast<uint64_t>(nanos);
    if (v < static_cast<uint64_t>(kSubBuckets)) return nanos;
    const int exponent = std::bit_width(v) - 1 - kSubBits;  // >= 0
    if (exponent >= kMaxExponent) return kBuckets - 1;
    const int64_t sub = static_cast<int64_t>(v >> exponent) - kSubBuckets;  // [0, 128)
    return (exponent + 1) * kSubBuckets + sub;
  }
  static int64_t UpperEdge(int64_t index) {
    if (index < kSubBuckets) return index;
    const int exponent = static_cast<int>(index / kSubBuckets) - 1;
    const int64_t sub = index % kSubBuckets + kSubBuckets;
    return ((sub + 1) << exponent) - 1;
  }

 private:
  std::array<int64_t, static_cast<size_t>(kBuckets)> counts_{};
  int64_t count_ = 0;
  double sum_ = 0;
  int64_t min_ = std::numeric_limits<int64_t>::max();
  int64_t max_ = 0;
};

}  // namespace switchyard::load

#endif  // SWITCHYARD_TESTS_LOAD_HISTOGRAM_H_
