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
  explicit HealthMetrics(size_t node_count) : versions_(node_count) {
    for (size_t i = 0; i < node_count; ++i) nodes_.push_back(std::make_unique<Node>());
  }

  // Any thread: the node's active-health verdict (true until probes say otherwise).
  bool healthy(size_t node) const { return nodes_[node]->healthy.load(std::memory_order_relaxed); }
  size_t node_count() const { return nodes_.size(); }

  // Control thread. ------------------------------------------------------------------------------
  void SetHealthy(size_t node, bool healthy) {
    nodes_[node]->healthy.store(healthy, std::memory_order_relaxed);
  }
  void RecordCheck(size_t node, size_t tier, bool success, std::chrono::nanoseconds took) {
    nodes_[node]->checks[tier][success ? 0 : 1].Add();
    check_duration_[tier].Observe(took);
  }
  void SetVersion(size_t node, const std::string& version) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    versions_[node] = version;
  }

  // Any thread. ----------------------------------------------------------------------------------
  uint64_t checks(size_t node, size_t tier, bool success) const {
    return nodes_[node]->checks[tier][success ? 0 : 1].Get();
  }
  const DurationHistogram& check_duration(size_t tier) const { return check_duration_[tier]; }
  // The version the node last reported; empty before its first qdrant HealthCheck answer.
  std::string version(size_t node) const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return versions_[node];
  }

 private:
  struct Node {
    std::atomic<bool> healthy{true};
    std::array<std::array<RelaxedCounter, 2>, kControlTierCount> checks;  // [tier][ok, failed]
  };
  std::vector<std::unique_ptr<Node>> nodes_;
  std::array<DurationHistogram, kControlTierCount> check_duration_;
  mutable absl::Mutex mu_;
  std::vector<std::string> versions_ ABSL_GUARDED_BY(mu_);  // per node, as last reported
};

}  // namespace qpool::metrics

#endif  // QPOOL_DAEMON_METRICS_HEALTH_METRICS_H_
