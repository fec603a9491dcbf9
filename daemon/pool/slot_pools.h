// One worker's pools for the node slots (config::NodeTable) in one protocol: a NodePool per slot
// that has an endpoint, with its connection factory and observer. A config reload or a node set
// change (DNS discovery) hands it the next table, and Apply() brings the pools in line: a slot
// that became active gets a pool, a slot no longer active (or given to another node) has its pool
// retired (no new calls; calls in flight and queued finish; freed once gone), and the surviving
// pools take the new bounds and timings. Each worker holds two: its gRPC pools (server::Worker)
// and its REST pools (rest::RestWorker); what differs between them is the SlotPoolParts.
//
//   pool::SlotPools pools(std::make_unique<GrpcParts>(worker), pending_budget, loop, random);
//   pools.Apply(*table);       // pools for the active slots
//   pools.Start();             // on the worker's thread: each opens min_connections
//   pools.Apply(*next_table);  // a reload: create, retire, update
//   pool::NodePool* p = pools.pool(slot);
//
// Thread-safety: none; a SlotPools belongs to one I/O worker and is used only on its thread, like
// its pools.
#ifndef QPOOL_DAEMON_POOL_SLOT_POOLS_H_
#define QPOOL_DAEMON_POOL_SLOT_POOLS_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "daemon/common/event_loop.h"
#include "daemon/config/node_table.h"
#include "daemon/pool/node_pool.h"

namespace qpool::pool {

// A worker's share of a per-node bound (max_connections, min_connections, max_pending): `total`
// split over `count` workers, remainders to the first ones.
uint32_t WorkerShare(uint32_t total, uint32_t index, uint32_t count);

// What upstream.* sets alike for every pool, gRPC or REST: node_name ("host:port" of `endpoint`),
// acquire_timeout, connect backoff, max_connection_age and max_requests_per_connection. The
// protocol sets its bounds and idle timeout.
NodePoolOptions UpstreamPoolOptions(const config::UpstreamConfig& upstream,
                                    const config::NodeAddress& endpoint);

// The connection factory of one slot's pool. It follows its slot across reloads that keep the
// slot's node.
class SlotConnectionFactory : public ConnectionFactory {
 public:
  // A reload kept the slot's node: connections opened from now on use `slot`'s settings (a new
  // TLS context store, say). Default: nothing to follow.
  virtual void Update(const config::NodeSlot& slot) {}
};

// What one protocol's pools are made of. Called on the worker's thread, from SlotPools only.
class SlotPoolParts {
 public:
  virtual ~SlotPoolParts() = default;
  // The slot's endpoint in this protocol (NodeSlot::grpc or NodeSlot::rest); an empty host: the
  // slot gets no pool here.
  virtual const config::NodeAddress& EndpointOf(const config::NodeSlot& slot) const = 0;
  // The options of the slot's pool under the config in force now (asked again on each Apply).
  virtual NodePoolOptions OptionsFor(const config::NodeSlot& slot) const = 0;
  // The factory and the observer (may be null) of a new pool for slot `index`.
  virtual std::unique_ptr<SlotConnectionFactory> NewFactory(size_t index,
                                                            const config::NodeSlot& slot) = 0;
  virtual std::unique_ptr<PoolObserver> NewObserver(size_t index) = 0;
};

class SlotPools {
 public:
  // `budget` (upstream.max_pending, shared by a worker's pools), `loop` and `random` must outlive
  // the SlotPools. No pool yet: Apply() makes them.
  SlotPools(std::unique_ptr<SlotPoolParts> parts, PendingBudget& budget, EventLoop& loop,
            Random& random);
  ~SlotPools();

  SlotPools(const SlotPools&) = delete;
  SlotPools& operator=(const SlotPools&) = delete;

  // Opens each pool's min_connections; pools Apply() makes from now on start at once.
  void Start();
  // Brings the pools in line with `table` (see the top of this file); no call in flight fails.
  // A slot keeps its pool while its generation stays; a retired pool of a slot given to another
  // node is freed once gone, and the new node's pool comes with the first Apply() after that.
  // Nothing after Shutdown().
  void Apply(const config::NodeTable& table);
  // Shuts every pool down (waiters fail with kUnavailable) and frees them: pool() is null and
  // size() 0 from now on; endpoint_name() stays.
  void Shutdown();

  // The pool of slot `index`; null when it has none.
  NodePool* pool(size_t index) const { return index < pools_.size() ? pools_[index] : nullptr; }
  // Every slot's pool, by slot; null where a slot has none.
  const std::vector<NodePool*>& pools() const { return pools_; }
  size_t size() const { return pools_.size(); }
  // "host:port" of slot `index`'s endpoint when its pool was made; empty before.
  const std::string& endpoint_name(size_t index) const { return slots_[index].endpoint_name; }
  // Per slot: no pool, or a retired one with no connection and no waiter left.
  std::vector<bool> DrainedSlots() const;
  // New credentials for slot `index`'s node: its connections are recycled gently within
  // `spread` (NodePool::RecycleAll).
  void RecycleAll(size_t index, Duration spread);

 private:
  struct Slot {
    uint64_t generation = 0;  // the table generation its pool was made for; 0: none yet
    std::string endpoint_name;
    std::unique_ptr<SlotConnectionFactory> factory;
    // Declared before pool: a pool reports to its observer until it is destroyed.
    std::unique_ptr<PoolObserver> observer;
    std::unique_ptr<NodePool> pool;
  };
  // Makes slot `index`'s pool (when the slot has an endpoint here), started when Start() was.
  void Create(size_t index, const config::NodeSlot& node);
  void Free(size_t index);

  const std::unique_ptr<SlotPoolParts> parts_;
  PendingBudget& budget_;
  EventLoop& loop_;
  Random& random_;
  std::vector<Slot> slots_;
  std::vector<NodePool*> pools_;  // slots_[i].pool.get(), for pools()
  bool started_ = false;
  bool shut_down_ = false;
};

}  // namespace qpool::pool

#endif  // QPOOL_DAEMON_POOL_SLOT_POOLS_H_
