// Where a node is picked: one worker's balancer, for its calls of both protocols (gRPC calls and
// REST requests). It owns the router state (health::NodeRouter over the node slots that take new
// calls) and reads, before each pick, each active slot's health verdict (HealthMetrics, published
// by the control thread) and the state of the protocol's pools (pool::SlotPools: a connection up,
// not in connect backoff, load). Passive health (ejection after failures in a row) is fed through
// OnAttemptEnd, by the calls' retry reports and the pools' connect failures.
//
//   pool::Balancer balancer(loop, random, metrics, health);
//   balancer.SetPools(pool::Protocol::kGrpc, &grpc_pools);
//   balancer.Rebuild(*table, config.health);        // at start and after each node set change
//   size_t slot = balancer.Pick(pool::Protocol::kGrpc);
//   std::optional<size_t> other = balancer.PickOtherThan(pool::Protocol::kGrpc, slot);
//   balancer.OnAttemptEnd(slot, /*failed=*/true);  // feeds passive ejection
//
// Picks and slots are node slots (config::NodeTable): the same index for the pools of both
// protocols, the retry budgets and the per-node metrics.
//
// Thread-safety: none; a Balancer belongs to one I/O worker and is used only on its thread.
#ifndef QPOOL_DAEMON_POOL_BALANCER_H_
#define QPOOL_DAEMON_POOL_BALANCER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "daemon/common/event_loop.h"
#include "daemon/config/config.h"
#include "daemon/config/node_table.h"
#include "daemon/health/health.h"
#include "daemon/pool/slot_pools.h"

namespace qpool::metrics {  // health_metrics.h, worker_metrics.h
class HealthMetrics;
class WorkerMetrics;
}  // namespace qpool::metrics

namespace qpool::pool {

// The protocol a call speaks upstream: which of a worker's pools a pick is made over.
enum class Protocol : uint8_t { kGrpc, kRest };

// health.* in the router's terms: ejection settings, and whether passive health is on
// (health.enabled and health.passive_enabled).
health::OutlierOptions OutlierOptionsOf(const config::HealthConfig& health);

class Balancer {
 public:
  // `loop`, `random` and `metrics` (the worker's: panic routes, ejections) must outlive the
  // balancer; `health` (the control thread's verdicts; null: every node counts as healthy) too.
  // No slot until Rebuild().
  Balancer(EventLoop& loop, Random& random, metrics::WorkerMetrics& metrics,
           const metrics::HealthMetrics* health);
  ~Balancer();

  Balancer(const Balancer&) = delete;
  Balancer& operator=(const Balancer&) = delete;

  // The pools `protocol`'s picks look at (null: none); they must outlive the balancer or the next
  // SetPools.
  void SetPools(Protocol protocol, const SlotPools* pools);
  // Starts over on `table`'s active slots with `health`'s settings: ejections are forgotten (a node
  // set change is rare, and a still failing node is ejected again after
  // health.consecutive_failures). `table` must outlive the balancer or the next Rebuild.
  void Rebuild(const config::NodeTable& table, const config::HealthConfig& health);

  // The slot for a new call (docs/architecture.md, "Balancing"): among the active slots healthy by
  // active checks and not ejected by passive ones (all of them in panic mode, counted), those with
  // a connection up, else those that may still connect; of two picked at random, the less loaded.
  // There must be an active slot (the loader admits no empty node set).
  size_t Pick(Protocol protocol);
  // For a hedge or a retry that should leave slot `except`: the least loaded active slot other
  // than it that is healthy, not ejected and has a connection up; nullopt when there is none. A
  // slot no longer active (removed meanwhile) has every active slot as an alternative.
  std::optional<size_t> PickOtherThan(Protocol protocol, size_t except);
  // Passive health: an upstream attempt on slot `slot` ended; `failed` for a connect failure, a
  // reset, a lost connection, UNAVAILABLE or a REST 503. A failure may eject the node (logged,
  // counted in its metrics); with one active slot nothing is ejected (nowhere else to go).
  void OnAttemptEnd(size_t slot, bool failed);

  // The pool of `protocol` for slot `slot`; null when the slot has none there.
  NodePool* pool(Protocol protocol, size_t slot) const {
    const SlotPools* pools = pools_[static_cast<size_t>(protocol)];
    return pools != nullptr ? pools->pool(slot) : nullptr;
  }
  // Slots that take new calls (more than one: a choice to make).
  size_t active_nodes() const { return active_.size(); }
  bool IsEjected(size_t slot) const;

 private:
  // The router's index of `slot`; -1 when the slot is not active.
  int RouterIndexOf(size_t slot) const;
  // Sets the router's view of each active slot (health, connection up, load) now.
  void Refresh(Protocol protocol);

  EventLoop& loop_;
  Random& random_;
  metrics::WorkerMetrics& metrics_;
  const metrics::HealthMetrics* const health_;
  const SlotPools* pools_[2] = {nullptr, nullptr};  // by Protocol
  const config::NodeTable* table_ = nullptr;
  uint32_t consecutive_failures_ = 0;  // health.consecutive_failures, for the log
  std::vector<size_t> active_;         // router index -> slot
  std::vector<int> router_index_;      // slot -> router index, -1 when inactive
  std::unique_ptr<health::NodeRouter> router_;
};

}  // namespace qpool::pool

#endif  // QPOOL_DAEMON_POOL_BALANCER_H_
