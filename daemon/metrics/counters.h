// The data path's metric primitives: counters and histograms that one thread (an I/O worker)
// writes and any thread (the admin endpoint, at scrape time) reads.
//
//   worker_metrics.calls.Add();                      // worker thread: a relaxed load and store
//   histogram.Observe(std::chrono::milliseconds(3)); // worker thread: one bucket, count-free
//   uint64_t n = worker_metrics.calls.Get();         // any thread
//
// Single writer: Add() is a relaxed load plus a relaxed store, not a read-modify-write, so it costs
// what a plain increment costs; only the owning thread may call it. Readers see a value at most a
// few increments old. A histogram keeps per-bucket (not cumulative) counts; its count is the sum of
// its buckets when read, so a scrape never shows a count that disagrees with the +Inf bucket.
#ifndef QPOOL_DAEMON_METRICS_COUNTERS_H_
#define QPOOL_DAEMON_METRICS_COUNTERS_H_

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace qpool::metrics {

class RelaxedCounter {
 public:
  // Owner thread only.
  void Add(uint64_t n = 1) {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  // Any thread.
  uint64_t Get() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// Upper bounds of a histogram's buckets, in seconds, ascending; +Inf is implicit.
using BucketBounds = std::vector<double>;

// Latencies of calls and attempts: 0.5 ms .. 30 s.
const BucketBounds& CallDurationBounds();
// Waits for a stream and connect latencies: 0 (served at once) .. 10 s.
const BucketBounds& WaitBounds();

class DurationHistogram {
 public:
  static constexpr size_t kMaxBuckets = 20;  // bounds plus +Inf

  explicit DurationHistogram(const BucketBounds& bounds = CallDurationBounds());

  // Owner thread only.
  void Observe(std::chrono::nanoseconds value) {
    const int64_t ns = value.count() < 0 ? 0 : value.count();
    size_t i = 0;
    while (i < bound_count_ && ns > bounds_ns_[i]) ++i;
    buckets_[i].Add();
    sum_ns_.Add(static_cast<uint64_t>(ns));
  }

  // Any thread. --------------------------------------------------------------------------------
  const BucketBounds& bounds() const { return *bounds_; }
  // Non-cumulative count of bucket `i` (i == bounds().size() is +Inf).
  uint64_t BucketCount(size_t i) const { return buckets_[i].Get(); }
  double SumSeconds() const { return static_cast<double>(sum_ns_.Get()) * 1e-9; }

 private:
  const BucketBounds* bounds_;
  size_t bound_count_;
  std::array<int64_t, kMaxBuckets> bounds_ns_{};
  std::array<RelaxedCounter, kMaxBuckets> buckets_;
  RelaxedCounter sum_ns_;
};

}  // namespace qpool::metrics

#endif  // QPOOL_DAEMON_METRICS_COUNTERS_H_
