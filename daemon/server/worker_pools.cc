#include "daemon/server/worker_pools.h"

#include <algorithm>
#include <utility>

#include "daemon/config/config.h"
#include "daemon/metrics/scrape.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/tls/context_store.h"

namespace qpool::server {
namespace {

// Makes the connections of one slot's gRPC pool through the owner's `connect`.
class GrpcFactory : public pool::SlotConnectionFactory {
 public:
  GrpcFactory(const WorkerPools::Connect& connect, config::NodeAddress node, size_t slot)
      : connect_(connect), node_(std::move(node)), slot_(slot) {}

  std::shared_ptr<pool::PoolConnection> Connect(pool::PoolConnectionEvents& events) override {
    return connect_(node_, slot_, events);
  }

 private:
  const WorkerPools::Connect& connect_;
  const config::NodeAddress node_;
  const size_t slot_;
};

// The pool's metrics observer, which also tells the owner (passive health) and the hook about
// connect failures.
class GrpcObserver : public metrics::PoolMetricsObserver {
 public:
  GrpcObserver(metrics::NodeMetrics& metrics, EventLoop& loop, std::function<void()> on_change,
               const std::function<void(size_t)>& on_connect_failed,
               const std::function<void()>& hook, size_t slot)
      : PoolMetricsObserver(metrics, loop, std::move(on_change)),
        on_connect_failed_(on_connect_failed),
        hook_(hook),
        slot_(slot) {}
  void OnConnectFailed(const absl::Status& reason) override {
    PoolMetricsObserver::OnConnectFailed(reason);
    if (on_connect_failed_) on_connect_failed_(slot_);
    if (hook_) hook_();
  }

 private:
  const std::function<void(size_t)>& on_connect_failed_;
  const std::function<void()>& hook_;
  const size_t slot_;
};

// The gauges of `pools`, by slot, for the scrape and /pool; `usable` answers for slot s's pool.
template <typename Usable>
std::vector<metrics::NodePoolGauges> GaugesOf(const pool::SlotPools& pools, Usable usable) {
  std::vector<metrics::NodePoolGauges> gauges(pools.size());
  for (size_t s = 0; s < pools.size(); ++s) {
    const pool::NodePool* pool = pools.pool(s);
    metrics::NodePoolGauges& g = gauges[s];
    if (pool == nullptr || pool->gone()) {
      g.present = false;
      continue;
    }
    g.removed = pool->retired();
    static_cast<pool::NodePoolStats&>(g) = pool->stats();
    g.usable = usable(s, *pool);
    g.longest_wait_seconds = std::chrono::duration<double>(pool->LongestWait()).count();
    for (const pool::NodePool::ConnectionInfo& c : pool->Connections()) {
      g.connections.push_back({pool::ConnectionStateName(c.state), c.streams, c.stream_cap});
    }
  }
  return gauges;
}

}  // namespace

// The gRPC side of pool::SlotPools: a slot's gRPC endpoint, its pool options under upstream.*
// (this worker's share of the bounds), connections from the owner's `connect`, and an observer
// that keeps the node's readiness mirror and reports connect failures.
class WorkerPools::Parts : public pool::SlotPoolParts {
 public:
  explicit Parts(WorkerPools& pools) : pools_(pools) {}

  const config::NodeAddress& EndpointOf(const config::NodeSlot& slot) const override {
    return slot.grpc;
  }

  pool::NodePoolOptions OptionsFor(const config::NodeSlot& slot) const override {
    const config::UpstreamConfig& upstream = pools_.config_->upstream;
    const uint32_t index = pools_.index_;
    const uint32_t count = pools_.count_;
    pool::NodePoolOptions options = pool::UpstreamPoolOptions(upstream, slot.grpc);
    options.min_connections = pool::WorkerShare(upstream.min_connections, index, count);
    options.max_connections = pool::WorkerShare(upstream.max_connections, index, count);
    options.max_streams_per_connection = upstream.max_streams_per_connection;
    options.idle_timeout = absl::ToChronoNanoseconds(upstream.idle_timeout);
    options.max_connection_share = upstream.max_connection_share;
    return options;
  }

  std::unique_ptr<pool::SlotConnectionFactory> NewFactory(size_t index,
                                                          const config::NodeSlot& slot) override {
    return std::make_unique<GrpcFactory>(pools_.connect_, slot.grpc, index);
  }

  // Readiness is re-evaluated on a later turn of the loop, once the pool is done with the event.
  std::unique_ptr<pool::PoolObserver> NewObserver(size_t index) override {
    WorkerPools& pools = pools_;
    return std::make_unique<GrpcObserver>(
        pools.metrics_.node(index), pools.loop_,
        [&pools, index] { pools.loop_.Post([&pools, index] { pools.UpdateUsable(index); }); },
        pools.on_connect_failed_, pools.connect_failure_hook_, index);
  }

 private:
  WorkerPools& pools_;
};

std::vector<size_t> SlotsUsingTls(const config::NodeTable& table, const tls::ContextStore* store,
                                  const std::vector<size_t>& nodes, bool rest) {
  std::vector<size_t> slots;
  for (size_t s = 0; s < table.slots.size(); ++s) {
    const config::NodeSlot& slot = table.slots[s];
    if ((rest ? slot.rest_tls.get() : slot.tls.get()) != store) continue;
    if (std::find(nodes.begin(), nodes.end(), slot.tls_index) == nodes.end()) continue;
    slots.push_back(s);
  }
  return slots;
}

WorkerPools::WorkerPools(uint32_t index, uint32_t count, EventLoop& loop, Random& random,
                         metrics::WorkerMetrics& metrics, Connect connect,
                         std::function<void(size_t)> on_connect_failed)
    : index_(index),
      count_(count),
      loop_(loop),
      metrics_(metrics),
      connect_(std::move(connect)),
      on_connect_failed_(std::move(on_connect_failed)),
      grpc_(std::make_unique<Parts>(*this), budget_, loop, random) {}

WorkerPools::~WorkerPools() = default;

void WorkerPools::Apply(std::shared_ptr<const config::Config> config,
                        std::shared_ptr<const config::NodeTable> table) {
  config_ = std::move(config);
  table_ = std::move(table);
  budget_.limit = pool::WorkerShare(config_->upstream.max_pending, index_, count_);
  grpc_.Apply(*table_);
}

void WorkerPools::Start() { grpc_.Start(); }

void WorkerPools::Shutdown() { grpc_.Shutdown(); }

std::vector<metrics::NodePoolGauges> WorkerPools::PoolGauges() const {
  // A gRPC node's readiness is the worker's mirror (UpdateUsable), as /readyz reads it.
  return GaugesOf(
      grpc_, [this](size_t s, const pool::NodePool&) { return metrics_.node(s).UsableHere(); });
}

std::vector<metrics::NodePoolGauges> WorkerPools::RestPoolGauges() const {
  if (rest_ == nullptr) return {};
  return GaugesOf(*rest_, [](size_t, const pool::NodePool& pool) { return pool.usable(); });
}

std::vector<bool> WorkerPools::DrainedSlots() const {
  std::vector<bool> drained(table_ != nullptr ? table_->slots.size() : 0, true);
  auto both = [&drained](const std::vector<bool>& these) {
    for (size_t s = 0; s < drained.size() && s < these.size(); ++s) {
      drained[s] = drained[s] && these[s];
    }
  };
  both(grpc_.DrainedSlots());
  if (rest_ != nullptr) both(rest_->DrainedSlots());
  return drained;
}

void WorkerPools::RecycleTlsNodes(const tls::ContextStore* store, const std::vector<size_t>& nodes,
                                  bool rest) {
  if (table_ == nullptr) return;
  for (size_t s : SlotsUsingTls(*table_, store, nodes, rest)) {
    if (rest) {
      if (rest_ != nullptr) rest_->RecycleAll(s, kTlsRecycleSpread);
    } else {
      grpc_.RecycleAll(s, kTlsRecycleSpread);
    }
  }
}

void WorkerPools::UpdateUsable(size_t slot) {
  const pool::NodePool* const found = grpc_.pool(slot);
  if (found == nullptr) return;  // stopping, or freed
  const pool::NodePool& pool = *found;
  // See NodeMetrics::live / failing: a node in backoff between failed attempts stays "failing"
  // rather than flapping with every attempt.
  const bool live = pool.has_live_connection();
  metrics_.node(slot).live.store(live, std::memory_order_relaxed);
  metrics_.node(slot).failing.store(!live && pool.stats().consecutive_connect_failures > 0,
                                    std::memory_order_relaxed);
}

}  // namespace qpool::server
