// Config reload outcomes (SIGHUP), for qpool_config_reloads_total{result} and
// qpool_config_last_reload_success_timestamp_seconds.
//
//   ConfigReloadMetrics reloads;            // owned by main, outlives the admin server
//   reloads.RecordSuccess(absl::Now());     // the start-up load counts as the first success
//   reloads.RecordFailure();                // a reload that kept the old config
//   RenderScrapeText(input, version, &reloads);   // the two families, at scrape time (scrape.h)
//
// Thread-safety: Record* from the thread that reloads; the getters from any thread (relaxed
// atomics; each value is read on its own).
#ifndef QPOOL_DAEMON_METRICS_RELOAD_METRICS_H_
#define QPOOL_DAEMON_METRICS_RELOAD_METRICS_H_

#include <atomic>
#include <cstdint>

#include "absl/time/time.h"

namespace qpool::metrics {

class ConfigReloadMetrics {
 public:
  void RecordSuccess(absl::Time when) {
    successes_.fetch_add(1, std::memory_order_relaxed);
    last_success_seconds_.store(absl::ToDoubleSeconds(when - absl::UnixEpoch()),
                                std::memory_order_relaxed);
  }
  // The start-up load: sets the timestamp without counting a reload.
  void RecordInitialLoad(absl::Time when) {
    last_success_seconds_.store(absl::ToDoubleSeconds(when - absl::UnixEpoch()),
                                std::memory_order_relaxed);
  }
  void RecordFailure() { failures_.fetch_add(1, std::memory_order_relaxed); }

  uint64_t successes() const { return successes_.load(std::memory_order_relaxed); }
  uint64_t failures() const { return failures_.load(std::memory_order_relaxed); }
  double last_success_seconds() const {
    return last_success_seconds_.load(std::memory_order_relaxed);
  }

 private:
  std::atomic<uint64_t> successes_{0};
  std::atomic<uint64_t> failures_{0};
  std::atomic<double> last_success_seconds_{0};  // Unix time; 0 before the first load
};

}  // namespace qpool::metrics

#endif  // QPOOL_DAEMON_METRICS_RELOAD_METRICS_H_
