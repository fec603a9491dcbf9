// LatencyHistogram: every value lands in a bucket whose upper bound is within 1/32 above it, and
// percentiles of a known distribution come out within that error.
#include "histogram.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace qpool::load {
namespace {

TEST(LatencyHistogramTest, BucketUpperBoundIsAtMostOneThirtySecondAboveTheValue) {
  for (uint64_t v = 0; v < 5'000'000; v = v < 200 ? v + 1 : v + v / 97) {
    const uint64_t upper = LatencyHistogram::UpperBound(LatencyHistogram::Index(v));
    ASSERT_GE(upper, v);
    ASSERT_LE(upper - v, v / 32 + 1) << v;
  }
  const uint64_t big = ~0ull >> 1;
  EXPECT_LT(LatencyHistogram::Index(big), LatencyHistogram::kBuckets);
  EXPECT_LT(LatencyHistogram::Index(~0ull), LatencyHistogram::kBuckets);
}

TEST(LatencyHistogramTest, PercentilesOfAUniformRangeAreWithinBucketError) {
  LatencyHistogram h;
  for (uint64_t v = 1; v <= 100'000; ++v) h.Record(v * 1000);  // 1 µs .. 100 ms
  EXPECT_EQ(h.count(), 100'000u);
  EXPECT_EQ(h.max(), 100'000'000u);
  EXPECT_NEAR(h.mean(), 50'000'500.0, 1.0);
  for (double pct : {50.0, 90.0, 99.0, 99.9}) {
    const double want = pct * 1'000'000.0;  // ns
    EXPECT_GE(static_cast<double>(h.Percentile(pct)), want * 0.999) << pct;
    EXPECT_LE(static_cast<double>(h.Percentile(pct)), want * (1 + 1.0 / 32)) << pct;
  }
  EXPECT_EQ(h.Percentile(100), h.max());
}

TEST(LatencyHistogramTest, EmptyHistogramReportsZero) {
  LatencyHistogram h;
  EXPECT_EQ(h.Percentile(99), 0u);
  EXPECT_EQ(h.count(), 0u);
  EXPECT_TRUE(h.Buckets().empty());
}

}  // namespace
}  // namespace qpool::load
