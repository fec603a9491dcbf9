// The active health schedule: per node, a medium probe every `medium.interval` and a deep probe
// every `deep.interval` (each spread by +-jitter), with a timeout each. Each tier's results feed
// its own ProbeTracker per node (a passing HealthCheck must not mask a failing read); the node is
// healthy while every enabled tier's tracker says so, and changes are published through
// HealthSink.
//
// The scheduler decides *when* and *what it means*; a ProbeRunner does the probing (in qpoold: it
// posts the probe to the I/O worker that owns a pool for the node, and the worker posts the result
// back). A probe starts every interval, measured from the previous start, so a node that hangs is
// marked unhealthy within unhealthy_threshold x interval + timeout (+ jitter) of its first missed
// probe; a tier never has two probes to one node in flight.
//
//   HealthScheduler scheduler(options, loop, random, runner, sink);
//   scheduler.Start();   // first probe of each node and tier within one interval
//   ...
//   scheduler.Stop();    // cancels timers; results that arrive later are dropped
//
// Thread-safety: none. The scheduler, its EventLoop and every callback it receives belong to one
// thread (qpoold's control thread, "qpool-health"; unit tests' thread with a FakeEventLoop). A
// ProbeRunner's `done` must be called on that thread.
#ifndef QPOOL_DAEMON_HEALTH_HEALTH_SCHEDULER_H_
#define QPOOL_DAEMON_HEALTH_HEALTH_SCHEDULER_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "daemon/common/event_loop.h"
#include "daemon/health/health.h"

namespace qpool::health {

enum class Tier : uint8_t { kFast = 0, kMedium = 1, kDeep = 2 };
inline constexpr size_t kTierCount = 3;
const char* TierName(Tier tier);  // "fast", "medium", "deep"

// What a probe found. `detail` says why it failed (for logs); `version` is the node's version when
// the probe reports one (the medium tier's qdrant HealthCheck).
struct ProbeResult {
  bool success = false;
  std::string detail;
  std::string version;
};

// Runs one probe. `done` is called exactly once, on the scheduler's thread, unless the scheduler
// is destroyed first; the runner enforces `timeout` itself (cancelling the probe's stream), and the
// scheduler counts a probe still unanswered at `timeout` as failed either way.
class ProbeRunner {
 public:
  virtual ~ProbeRunner() = default;
  virtual void Run(size_t node, Tier tier, Duration timeout,
                   std::function<void(ProbeResult)> done) = 0;
};

// Where results go. Called on the scheduler's thread.
class HealthSink {
 public:
  virtual ~HealthSink() = default;
  // One finished probe (timeouts included: success false, `took` = the timeout).
  virtual void OnCheck(size_t node, Tier tier, const ProbeResult& result, Duration took) = 0;
  // The node's active-health verdict changed (ProbeTracker thresholds).
  virtual void OnHealthChanged(size_t node, bool healthy) = 0;
};

struct TierSchedule {
  bool enabled = true;
  Duration interval = std::chrono::seconds(5);
  Duration timeout = std::chrono::seconds(1);
};

struct SchedulerOptions {
  size_t nodes = 1;
  TierSchedule medium;
  TierSchedule deep{true, std::chrono::seconds(30), std::chrono::seconds(2)};
  double jitter = 0.1;  // +-10% on each interval
  uint32_t unhealthy_threshold = 3;
  uint32_t healthy_threshold = 2;
};

class HealthScheduler {
 public:
  // `loop`, `random`, `runner` and `sink` must outlive the scheduler.
  HealthScheduler(SchedulerOptions options, EventLoop& loop, Random& random, ProbeRunner& runner,
                  HealthSink& sink);
  ~HealthScheduler();

  HealthScheduler(const HealthScheduler&) = delete;
  HealthScheduler& operator=(const HealthScheduler&) = delete;

  // Arms each enabled tier's first probe per node at a uniform offset in [0, interval), so nodes
  // and sidecars do not probe in step.
  void Start();
  // Cancels every timer; results of probes in flight are dropped when they come.
  void Stop();

  bool healthy(size_t node) const { return nodes_[node].healthy; }

 private:
  struct Slot {  // one tier of one node
    explicit Slot(uint32_t unhealthy, uint32_t healthy) : tracker(unhealthy, healthy) {}
    TierSchedule schedule;
    ProbeTracker tracker;
    std::unique_ptr<Timer> next;     // the next probe start
    std::unique_ptr<Timer> timeout;  // the probe in flight's timeout
    bool in_flight = false;
    bool due = false;         // the next start came while a probe was in flight: start at its end
    uint64_t generation = 0;  // tells a late result from the current probe's
    MonoTime started_at{};
  };
  struct Node {
    explicit Node(uint32_t unhealthy, uint32_t healthy)
        : slots{Slot(unhealthy, healthy), Slot(unhealthy, healthy), Slot(unhealthy, healthy)} {}
    std::array<Slot, kTierCount> slots;
    bool healthy = true;  // every tier's tracker healthy
  };

  void StartProbe(size_t node, Tier tier);
  void OnResult(size_t node, Tier tier, uint64_t generation, ProbeResult result);
  void OnTimeout(size_t node, Tier tier);
  void Finish(size_t node, Tier tier, const ProbeResult& result, Duration took);
  void ArmNext(size_t node, Tier tier, Duration after);

  const SchedulerOptions options_;
  EventLoop& loop_;
  Random& random_;
  ProbeRunner& runner_;
  HealthSink& sink_;
  std::vector<Node> nodes_;
  // Results of probes in flight hold this weakly: after the scheduler is gone they do nothing.
  std::shared_ptr<HealthScheduler*> self_;
  bool stopped_ = false;
};

}  // namespace qpool::health

#endif  // QPOOL_DAEMON_HEALTH_HEALTH_SCHEDULER_H_
