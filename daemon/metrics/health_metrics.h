// The published health state and the health counters (docs/metrics.md, "Health").
//
// Written by qpoold's control thread ("qpool-health", the only writer of everything here except
// where noted); read by the I/O workers (healthy(), once per routed call, a relaxed load) and by
// the admin thread at scrape time. The fast tier (PING) runs on the workers and counts into their
// own NodeMetrics / WorkerMetrics (worker_metrics.h); the scrape merges both.
//
//   HealthMetrics health(nodes);
//   health.SetHealthy(0, false);          // control thread: node 0 failed its probes
//   if (health.healthy(0)) ...            // any thread
//   health.RecordCheck(0, kMediumTier, true, took);
//
// Thread-safety: healthy() and the getters, any thread; the writers, the control thread only
// (RelaxedCounter and DurationHistogram are single-writer). The version strings sit behind an
// annotated mutex, never held across a call out.
#ifndef QPOOL_DAEMON_METRICS_HEALTH_METRICS_H_
#define QPOOL_DAEMON_METRICS_HEALTH_METRICS_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "daemon/metrics/counters.h"

namespace qpool::metrics {

// The tiers the control thread counts: medium (health call) and deep (read probe). The fast tier
// is counted per worker (NodeMetrics::pings_*).
inline constexpr size_t kMediumTier = 0;
inline constexpr size_t kDeepTier = 1;
inline constexpr size_t kControlTierCount = 2;

class HealthMetrics {
 public:
  // Slots 0..node_count-1 start healthy; more come with ResetNode().
  explicit HealthMetrics(size_t node_count) {
    for (size_t i = 0; i < node_count && i < kMaxSlots; ++i) ResetNode(i);
  }

  bool healthy(size_t node) const { return slot(node).healthy.load(std::memory_order_relaxed); }
  size_t node_count() const { return node_count_.load(std::memory_order_acquire); }

  // Gives slot `node` (< kMaxSlots) a fresh verdict (healthy) and counters, for a node that takes
  // it after the node set changed. Old state stays allocated (readers may hold it). One thread
  // (the control thread) calls it, while nothing probes slot `node`.
  void ResetNode(size_t node) ABSL_LOCKS_EXCLUDED(mu_) {
    if (node >= kMaxSlots) return;
    absl::MutexLock lock(&mu_);
    owned_.push_back(std::make_unique<Node>());
    nodes_[node].store(owned_.back().get(), std::memory_order_release);
    if (versions_.size() <= node) versions_.resize(node + 1);
    versions_[node].clear();
    if (node >= node_count_.load(std::memory_order_relaxed)) {
      node_count_.store(node + 1, std::memory_order_release);
    }
  }

  void SetHealthy(size_t node, bool healthy) {
    slot(node).healthy.store(healthy, std::memory_order_relaxed);
  }
  void RecordCheck(size_t node, size_t tier, bool success, std::chrono::nanoseconds took) {
    slot(node).checks[tier][success ? 0 : 1].Add();
    check_duration_[tier].Observe(took);
  }
  void SetVersion(size_t node, const std::string& version) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (node < versions_.size()) versions_[node] = version;
  }

  uint64_t checks(size_t node, size_t tier, bool success) const {
    return slot(node).checks[tier][success ? 0 : 1].Get();
  }
  const DurationHistogram& check_duration(size_t tier) const { return check_duration_[tier]; }
  std::string version(size_t node) const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return node < versions_.size() ? versions_[node] : std::string();
  }

  static constexpr size_t kMaxSlots = 64;  // metrics::kMaxNodeSlots

 private:
  struct Node {
    std::atomic<bool> healthy{true};
    std::array<std::array<RelaxedCounter, 2>, kControlTierCount> checks;  // [tier][ok, failed]
  };
  Node& slot(size_t node) const { return *nodes_[node].load(std::memory_order_acquire); }

  std::array<std::atomic<Node*>, kMaxSlots> nodes_{};
  std::atomic<size_t> node_count_{0};
  std::array<DurationHistogram, kControlTierCount> check_duration_;
  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Node>> owned_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> versions_ ABSL_GUARDED_BY(mu_);  // per node, as last reported
};

}  // namespace qpool::metrics

#endif  // QPOOL_DAEMON_METRICS_HEALTH_METRICS_H_
