// Node health decisions, kept apart from sockets and threads so they are tested with a fake clock:
//  - ProbeTracker: active checks (any tier) flip a node unhealthy after `unhealthy_threshold`
//    consecutive failures and healthy again after `healthy_threshold` consecutive successes.
//  - OutlierDetector: passive ejection from live traffic, as Envoy's outlier detection does.
//    `consecutive_failures` connect failures, resets or UNAVAILABLE answers in a row eject a node
//    for base_ejection_time x (times ejected), at most max_ejection_time, +-10% jitter; at most
//    max_ejection_percent of the nodes are out at once (at least one may be); when no node is left
//    to route to, every node is eligible again (panic mode), rather than failing everything.
//  - PickPowerOfTwo: of two distinct random eligible nodes, the one with the lower load.
//  - Jittered: an interval spread by +-jitter, so probes from many sidecars do not align.
//
// Thread-safety: none; each object belongs to one thread (ProbeTracker: the control thread that
// runs the health schedule; OutlierDetector: one per I/O worker, fed by that worker's calls).
#ifndef QPOOL_DAEMON_HEALTH_HEALTH_H_
#define QPOOL_DAEMON_HEALTH_HEALTH_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "daemon/common/event_loop.h"

namespace qpool::health {

class ProbeTracker {
 public:
  // A node starts healthy: it is in the config, and connect failures show up at once anyway.
  ProbeTracker(uint32_t unhealthy_threshold, uint32_t healthy_threshold)
      : unhealthy_threshold_(unhealthy_threshold), healthy_threshold_(healthy_threshold) {}

  // Records one probe result; true when the node's health changed.
  bool OnProbeResult(bool success);
  bool healthy() const { return healthy_; }

 private:
  const uint32_t unhealthy_threshold_;
  const uint32_t healthy_threshold_;
  bool healthy_ = true;
  uint32_t consecutive_failures_ = 0;
  uint32_t consecutive_successes_ = 0;
};

struct OutlierOptions {
  uint32_t consecutive_failures = 5;                       // health.consecutive_failures
  Duration base_ejection_time = std::chrono::seconds(10);  // health.base_ejection_time
  Duration max_ejection_time = std::chrono::seconds(300);  // health.max_ejection_time
  uint32_t max_ejection_percent = 50;                      // health.max_ejection_percent
  double jitter = 0.1;                                     // health.jitter_percent / 100
};

class OutlierDetector {
 public:
  OutlierDetector(size_t nodes, OutlierOptions options, Random& random);

  void OnSuccess(size_t node);
  // A connect failure, a reset or an UNAVAILABLE answer. True when it ejected the node.
  bool OnFailure(size_t node, MonoTime now);

  bool IsEjected(size_t node, MonoTime now) const;
  // When the node's current ejection ends (meaningless when it is not ejected).
  MonoTime EjectedUntil(size_t node) const { return nodes_[node].ejected_until; }
  uint32_t times_ejected(size_t node) const { return nodes_[node].times_ejected; }

  // The nodes calls may go to: those `usable` (healthy by active checks, may be null for all)
  // and not ejected. When that leaves none, all nodes (panic mode: `panic` is set).
  std::vector<size_t> Eligible(MonoTime now, const std::vector<bool>* usable, bool* panic) const;
  // The same into `out` (cleared first), so a router can reuse one vector and allocate nothing.
  void Eligible(MonoTime now, const std::vector<bool>* usable, bool* panic,
                std::vector<size_t>* out) const;

 private:
  struct Node {
    uint32_t consecutive_failures = 0;
    uint32_t times_ejected = 0;
    MonoTime ejected_until{};
  };
  size_t EjectedCount(MonoTime now) const;
  size_t MaxEjected() const;

  OutlierOptions options_;
  Random& random_;
  std::vector<Node> nodes_;
};

// Of two distinct random members of `eligible` (indices into `load`), the one with the lower
// load; the only member when there is one. `eligible` must not be empty.
size_t PickPowerOfTwo(const std::vector<size_t>& eligible,
                      const std::function<double(size_t)>& load, Random& random);

// Where a new call goes: one per I/O worker, fed that worker's view of each node before each pick.
// Of the nodes healthy by active checks and not ejected by passive ones (OutlierDetector; every
// node in panic mode), those with a connection up are preferred, then those that may still
// connect; among them, power of two choices on `load` (streams in flight plus calls waiting).
//
//   NodeRouter router(3, outlier_options, /*passive=*/true, random);
//   router.node(i) = {healthy, live, usable, load};     // for each node
//   size_t node = router.Pick(now, &panic);
//   router.OnAttemptEnd(node, /*failed=*/true, now);    // feeds passive ejection
class NodeRouter {
 public:
  struct NodeState {
    bool healthy = true;  // active checks pass (HealthMetrics::healthy)
    bool live = false;    // a connection to it is up (ready or busy)
    bool usable = true;   // not in connect backoff with nothing up (NodePool::usable)
    uint32_t load = 0;    // streams in flight plus calls waiting
  };

  // `passive` false: nothing is ever ejected (health.passive_enabled, health.enabled).
  NodeRouter(size_t nodes, OutlierOptions options, bool passive, Random& random);

  NodeState& node(size_t i) { return states_[i]; }
  size_t size() const { return states_.size(); }

  // The node for a new call; `panic` is set when no node was healthy and not ejected.
  size_t Pick(MonoTime now, bool* panic);
  // For a hedge or a retry that should leave `except`: the least loaded node other than it that
  // is healthy, not ejected and has a connection up; nullopt when there is none (no panic mode:
  // only a real alternative will do).
  std::optional<size_t> PickOtherThan(size_t except, MonoTime now) const;
  // An upstream attempt on `node` ended: `failed` for a connect failure, a reset, a lost
  // connection or UNAVAILABLE. True when this failure ejected the node.
  bool OnAttemptEnd(size_t node, bool failed, MonoTime now);
  bool IsEjected(size_t node, MonoTime now) const { return outlier_.IsEjected(node, now); }

 private:
  const bool passive_;
  Random& random_;
  OutlierDetector outlier_;
  std::vector<NodeState> states_;
  // Scratch space, kept so that a pick allocates nothing.
  std::vector<bool> healthy_;
  std::vector<size_t> eligible_;
  std::vector<size_t> candidates_;
};

// `interval` x (1 + jitter x u), u uniform in [-1, 1).
Duration Jittered(Duration interval, double jitter, Random& random);

}  // namespace qpool::health

#endif  // QPOOL_DAEMON_HEALTH_HEALTH_H_
