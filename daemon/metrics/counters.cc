#include "daemon/metrics/counters.h"

#include <cmath>

namespace qpool::metrics {

const BucketBounds& CallDurationBounds() {
  static const BucketBounds* const bounds = new BucketBounds{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
  return *bounds;
}

const BucketBounds& WaitBounds() {
  static const BucketBounds* const bounds = new BucketBounds{
      0, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  return *bounds;
}

DurationHistogram::DurationHistogram(const BucketBounds& bounds)
    : bounds_(&bounds),
      bound_count_(bounds.size() < kMaxBuckets ? bounds.size() : kMaxBuckets - 1) {
  for (size_t i = 0; i < bound_count_; ++i) {
    bounds_ns_[i] = static_cast<int64_t>(std::llround(bounds[i] * 1e9));
  }
}

}  // namespace qpool::metrics
