// A worker's upstream pools and their bookkeeping: its gRPC pools by node slot (a pool::SlotPools
// of HTTP/2 connections, their options from upstream.* and this worker's share of each bound),
// the upstream.max_pending budget its gRPC and REST pools share, each gRPC node's readiness mirror
// (NodeMetrics::live / failing, as /readyz reads it), and what reloads, the admin thread and the
// secrets thread ask of both protocols' pools: apply a node table, per-slot gauges, which slots
// are drained, recycle the connections whose TLS material changed.
//
//   WorkerPools pools(index, count, loop, random, metrics, connect, on_connect_failed);
//   pools.Apply(config, table);   // at start and at each reload: the budget, then the pools
//   pools.Start();                // on the worker's thread: each pool opens min_connections
//   std::vector<metrics::NodePoolGauges> gauges = pools.PoolGauges();
//
// What it asks of its owner, as callbacks: `connect` makes a connection to a slot's gRPC endpoint
// and starts connecting it (the worker: an UpstreamConnection on its ConnectionContext);
// `on_connect_failed` hears of each failed connect, after the metrics (the worker: passive
// health). The REST pools are the RestWorker's; SetRestPools() shows them to the bookkeeping.
// Thread-safety: none; it belongs to one worker's thread, like its pools.
#ifndef QPOOL_DAEMON_SERVER_WORKER_POOLS_H_
#define QPOOL_DAEMON_SERVER_WORKER_POOLS_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "daemon/common/event_loop.h"
#include "daemon/config/node_table.h"
#include "daemon/pool/slot_pools.h"

namespace qpool::config {
struct Config;  // config.h
}  // namespace qpool::config

namespace qpool::metrics {  // worker_metrics.h, scrape.h
struct NodePoolGauges;
class WorkerMetrics;
}  // namespace qpool::metrics

namespace qpool::tls {
class ContextStore;  // context_store.h
}  // namespace qpool::tls

namespace qpool::server {

// How long the connections of a node whose TLS material changed take to be recycled: each drains
// at a moment drawn uniformly in this window, so they do not all reconnect at once.
inline constexpr Duration kTlsRecycleSpread = std::chrono::seconds(2);

// The slots of `table` whose gRPC endpoint (the REST one when `rest`) takes its TLS from `store`
// at one of the indexes `nodes` (NodeSlot::tls_index): DNS discovery may have made several slots
// of one upstream.nodes entry. A store a reload replaced names no slot.
std::vector<size_t> SlotsUsingTls(const config::NodeTable& table, const tls::ContextStore* store,
                                  const std::vector<size_t>& nodes, bool rest);

class WorkerPools {
 public:
  // Makes slot `slot`'s connection to `node`, reporting to `events`, and starts connecting it.
  using Connect = std::function<std::shared_ptr<pool::PoolConnection>(
      const config::NodeAddress& node, size_t slot, pool::PoolConnectionEvents& events)>;

  // Worker `index` of `count` (its share of each bound). `loop`, `random` and `metrics` must
  // outlive the pools. No pool until Apply().
  WorkerPools(uint32_t index, uint32_t count, EventLoop& loop, Random& random,
              metrics::WorkerMetrics& metrics, Connect connect,
              std::function<void(size_t slot)> on_connect_failed);
  ~WorkerPools();
  WorkerPools(const WorkerPools&) = delete;
  WorkerPools& operator=(const WorkerPools&) = delete;

  // Runs `hook` after each failed connect too (the Proxy nudges DNS discovery); set before
  // Start(). It must be cheap and thread-safe.
  void SetConnectFailureHook(std::function<void()> hook) {
    connect_failure_hook_ = std::move(hook);
  }
  // The RestWorker's pools (null, the default: REST is off), for the gauges, the drained slots and
  // TLS recycling; they share budget().
  void SetRestPools(pool::SlotPools* rest) { rest_ = rest; }

  // The config and node table in force from now on: the budget takes this worker's share of
  // upstream.max_pending, then the gRPC pools follow `table` (SlotPools::Apply: new slots get
  // pools, removed ones retire, the rest take the new bounds and timings).
  void Apply(std::shared_ptr<const config::Config> config,
             std::shared_ptr<const config::NodeTable> table);
  // Each gRPC pool opens its min_connections.
  void Start();
  // Shuts the gRPC pools down (aborts what is still open).
  void Shutdown();

  pool::SlotPools& grpc() { return grpc_; }
  pool::PendingBudget& budget() { return budget_; }

  // Each slot's gRPC pool gauges now, by slot (a slot with no pool: present false); a node's
  // readiness is this worker's mirror.
  std::vector<metrics::NodePoolGauges> PoolGauges() const;
  // The same for the REST pools; empty when REST is off.
  std::vector<metrics::NodePoolGauges> RestPoolGauges() const;
  // Per slot, whether this worker holds nothing for it any more (no pool, or a retired pool with
  // no connection and no waiter, gRPC and REST alike).
  std::vector<bool> DrainedSlots() const;
  // New TLS material in `store` for its nodes `nodes` (the REST endpoints' store when `rest`):
  // the slots using them (SlotsUsingTls) recycle their connections over kTlsRecycleSpread.
  void RecycleTlsNodes(const tls::ContextStore* store, const std::vector<size_t>& nodes, bool rest);

 private:
  class Parts;
  // Re-evaluates slot `slot`'s readiness mirror from its pool.
  void UpdateUsable(size_t slot);

  const uint32_t index_;
  const uint32_t count_;
  EventLoop& loop_;
  metrics::WorkerMetrics& metrics_;
  const Connect connect_;
  const std::function<void(size_t)> on_connect_failed_;
  std::function<void()> connect_failure_hook_;
  std::shared_ptr<const config::Config> config_;  // Apply()'s
  std::shared_ptr<const config::NodeTable> table_;
  pool::PendingBudget budget_;
  pool::SlotPools grpc_;
  pool::SlotPools* rest_ = nullptr;
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_WORKER_POOLS_H_
