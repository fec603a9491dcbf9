// A log-bucketed latency histogram: exact below 64 ns, then 32 buckets per power of two, so any
// reported percentile is at most ~3% above the true value (it reports the bucket's upper bound,
// capped at the exact maximum). Fixed size (2,048 counters, 16 KiB), no allocation per sample.
// Not thread-safe: qpool-load records from its one event-loop thread.
//
//   LatencyHistogram h;
//   h.Record(12'345);            // nanoseconds
//   uint64_t p99 = h.Percentile(99.0);
#ifndef QPOOL_LOADTEST_LOAD_HISTOGRAM_H_
#define QPOOL_LOADTEST_LOAD_HISTOGRAM_H_

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

namespace qpool::load {

class LatencyHistogram {
 public:
  static constexpr int kSubBits = 5;            // 32 sub-buckets per power of two
  static constexpr int kExact = 2 << kSubBits;  // values below 64 have a bucket each
  static constexpr int kBuckets = kExact + (64 - kSubBits - 1) * (1 << kSubBits);

  void Record(uint64_t ns) {
    ++counts_[Index(ns)];
    ++count_;
    sum_ += ns;
    if (ns > max_) max_ = ns;
  }

  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }
  double mean() const { return count_ ? static_cast<double>(sum_) / count_ : 0.0; }

  // The smallest bucket bound with at least `pct`% of samples at or below it (0 when empty).
  uint64_t Percentile(double pct) const {
    if (count_ == 0) return 0;
    uint64_t rank = static_cast<uint64_t>(pct / 100.0 * count_ + 0.5);
    if (rank < 1) rank = 1;
    if (rank > count_) rank = count_;
    uint64_t seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) {
        const uint64_t upper = UpperBound(i);
        return upper < max_ ? upper : max_;
      }
    }
    return max_;
  }

  // Non-empty buckets as (upper bound in ns, count), ascending.
  std::vector<std::pair<uint64_t, uint64_t>> Buckets() const {
    std::vector<std::pair<uint64_t, uint64_t>> out;
    for (int i = 0; i < kBuckets; ++i) {
      if (counts_[i]) out.emplace_back(UpperBound(i), counts_[i]);
    }
    return out;
  }

  static int Index(uint64_t v) {
    if (v < static_cast<uint64_t>(kExact)) return static_cast<int>(v);
    const int msb = 63 - __builtin_clzll(v);
    const int shift = msb - kSubBits;
    const int sub = static_cast<int>((v >> shift) & ((1 << kSubBits) - 1));
    return kExact + (msb - kSubBits - 1) * (1 << kSubBits) + sub;
  }

  static uint64_t UpperBound(int index) {
    if (index < kExact) return static_cast<uint64_t>(index);
    const int rel = index - kExact;
    const int msb = rel / (1 << kSubBits) + kSubBits + 1;
    const int sub = rel % (1 << kSubBits);
    const int shift = msb - kSubBits;
    return ((static_cast<uint64_t>((1 << kSubBits) + sub + 1)) << shift) - 1;
  }

 private:
  std::array<uint64_t, kBuckets> counts_{};
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t max_ = 0;
};

}  // namespace qpool::load

#endif  // QPOOL_LOADTEST_LOAD_HISTOGRAM_H_
