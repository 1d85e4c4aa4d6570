#include "tests/load/histogram.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace switchyard::load {
namespace {

TEST(HistogramTest, SmallValuesAreExact) {
  Histogram h;
  for (int64_t v = 0; v < 128; ++v) h.Record(v);
  EXPECT_EQ(h.count(), 128);
  EXPECT_EQ(h.min(), 0);
  EXPECT_EQ(h.max(), 127);
  EXPECT_EQ(h.Percentile(0.5), 63);
  EXPECT_EQ(h.Percentile(1.0), 127);
  EXPECT_DOUBLE_EQ(h.mean(), 63.5);
}

TEST(HistogramTest, EveryBucketHoldsItsValuesWithinOnePart128) {
  for (int64_t v : {int64_t{128}, int64_t{129}, int64_t{255}, int64_t{256}, int64_t{1000},
                    int64_t{123456}, int64_t{40'000'000}, int64_t{987'654'321'012}}) {
    const int64_t index = Histogram::Index(v);
    const int64_t upper = Histogram::UpperEdge(index);
    EXPECT_GE(upper, v) << v;
    EXPECT_LE(upper - v, v / 128) << v;
    // The next value above the edge falls in the next bucket.
    EXPECT_EQ(Histogram::Index(upper + 1), index + 1) << v;
  }
}

TEST(HistogramTest, PercentilesMatchSortedSamplesWithinResolution) {
  std::mt19937_64 random(42);
  std::lognormal_distribution<double> latency(11.0, 1.2);  // ~60 us median, long tail
  std::vector<int64_t> samples;
  Histogram h;
  for (int i = 0; i < 100000; ++i) {
    const int64_t v = static_cast<int64_t>(latency(random));
    samples.push_back(v);
    h.Record(v);
  }
  std::sort(samples.begin(), samples.end());
  for (double q : {0.5, 0.9, 0.99, 0.999}) {
    const int64_t exact = samples[static_cast<size_t>(q * samples.size()) - 1];
    const int64_t reported = h.Percentile(q);
    EXPECT_GE(reported, exact) << q;
    EXPECT_LE(reported, exact + exact / 128 + 1) << q;
  }
  EXPECT_EQ(h.Percentile(1.0), samples.back());
}

TEST(HistogramTest, MergeAddsCountsAndKeepsExtremes) {
  Histogram a, b;
  a.Record(10);
  a.Record(1'000'000);
  b.Record(5);
  b.Record(2'000'000'000);
  a.Merge(b);
  EXPECT_EQ(a.count(), 4);
  EXPECT_EQ(a.min(), 5);
  EXPECT_EQ(a.max(), 2'000'000'000);
  EXPECT_EQ(a.Percentile(0.5), 10);
  EXPECT_EQ(Histogram().Percentile(0.99), 0);
}

TEST(HistogramTest, CountAboveCountsLaterBuckets) {
  Histogram h;
  for (int64_t v : {100, 1000, 39'000'000, 41'000'000, 45'000'000}) h.Record(v);
  EXPECT_EQ(h.CountAbove(40'000'000), 2);
  EXPECT_EQ(h.CountAbove(99), 5);
  EXPECT_EQ(h.CountAbove(50'000'000), 0);
}

}  // namespace
}  // namespace switchyard::load
