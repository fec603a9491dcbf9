// One worker's part in node health: the medium and deep probes the health thread asks it to run
// on its gRPC pools (HealthProbe, one per request, owned here until it reports), and the fast
// tier's PING interval per node slot, which its UpstreamConnections read and back off after a
// GOAWAY too_many_pings. The verdicts are decided on the health thread (HealthChecker); passive
// ejection is the balancer's (pool::Balancer).
//
//   NodeProbes probes(worker, grpc_pools);
//   probes.Configure(config.health, table);   // at start and on each reload
//   probes.StartProbe(node, spec, timeout, done);
//
// Thread-safety: none; it belongs to one worker and is used on its thread only.
#ifndef QPOOL_DAEMON_SERVER_NODE_PROBES_H_
#define QPOOL_DAEMON_SERVER_NODE_PROBES_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <unordered_map>
#include <vector>

#include "daemon/common/event_loop.h"
#include "daemon/config/config.h"
#include "daemon/config/node_table.h"
#include "daemon/pool/slot_pools.h"
#include "daemon/server/ping_keepalive.h"

namespace qpool::health {
struct ProbeResult;  // health_scheduler.h
}  // namespace qpool::health

namespace qpool::server {

class HealthProbe;  // health_probe.h
struct ProbeSpec;
class Worker;

class NodeProbes final : public PingSchedule {
 public:
  // `worker` runs the probes (their loop, API keys, deferred deletion) and `pools` are its gRPC
  // pools, by slot; both must outlive this. PINGs are off until Configure().
  NodeProbes(Worker& worker, const pool::SlotPools& pools);
  ~NodeProbes();

  NodeProbes(const NodeProbes&) = delete;
  NodeProbes& operator=(const NodeProbes&) = delete;

  // health.* and the node table in force from now on (`table` must outlive this or the next
  // call): every slot's PING interval starts over at health.fast_interval (zero: no PINGs, when
  // health or its fast tier is off).
  void Configure(const config::HealthConfig& health, const config::NodeTable& table);

  // Medium and deep tiers: probes node `node` on this worker's pool for it; `done` runs once, on
  // this thread (at once when the slot has no pool or a retired one).
  void StartProbe(size_t node, const ProbeSpec& spec, Duration timeout,
                  std::function<void(health::ProbeResult)> done);
  // A probe reported; it is deleted on a later turn.
  void OnProbeDone(HealthProbe* probe);
  // Frees every probe; after the pools shut down (a pool forgets its queued waiters then).
  void Clear();

  // Fast tier (PingSchedule, for each UpstreamConnection's PingKeepalive): the PING interval for
  // idle connections to `node` (zero: no PINGs), its back-off after a GOAWAY too_many_pings
  // (doubles, up to 32x health.fast_interval), and health.fast_timeout.
  Duration PingInterval(size_t node) const override { return ping_interval_[node]; }
  Duration PingTimeout() const override { return fast_timeout_; }
  void BackOffPings(size_t node);

 private:
  Worker& worker_;
  const pool::SlotPools& pools_;
  const config::NodeTable* table_ = nullptr;
  Duration fast_interval_{};
  Duration fast_timeout_{};
  std::vector<Duration> ping_interval_;  // by slot
  // Probes in flight, and those finished this turn (deleted on the next).
  std::unordered_map<HealthProbe*, std::unique_ptr<HealthProbe>> probes_;
  std::vector<std::unique_ptr<HealthProbe>> finished_probes_;
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_NODE_PROBES_H_
