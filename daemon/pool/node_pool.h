// A bounded pool of HTTP/2 connections to one Qdrant node, as seen by one I/O worker.
//
// Callers (calls on their way upstream) ask for a stream slot. The pool hands out a slot on a ready
// connection with spare stream capacity, opens a new connection when every open one is at its cap
// and the node is below its bound, or queues the caller in a bounded FIFO for at most
// `acquire_timeout`. Connections move through one transition function between four lists, as
// Envoy's and PgBouncer's pools do:
//
//   connecting --SETTINGS--> ready <--stream released / stream taken--> busy
//        |                     |                                          |
//        | connect failed      +-- GOAWAY / Shutdown() / recycled / idle -+--> draining --> (gone)
//        v                                                                      (last stream ends)
//      (gone, backoff)
//
// The pool never holds more than `max_connections` connections in any state, draining ones
// included: the bound is on TCP connections to the node, whatever the load.
//
// Recycling: the pool itself drains a connection that reached its age (`max_connection_age`, with
// +-10% jitter), that was handed its `max_requests_per_connection`-th stream, or that sat with no
// stream for `idle_timeout` while more than `min_connections` are up. A recycled connection drains
// (GOAWAY; its in-flight streams finish) and a replacement opens if min_connections or waiting
// calls need one and the bound allows it. At the bound (say max_connections 1) the replacement
// opens only once the drained connection has closed: meanwhile new calls wait in the queue, for
// at most acquire_timeout as always, and are served by the replacement.
//
// The pool knows nothing of sockets or HTTP/2: connections come from a ConnectionFactory and report
// back through PoolConnectionEvents, so unit tests drive it with fake connections and a fake clock.
//
// Thread-safety: none. A NodePool belongs to one I/O worker and is used only on its thread.
// Callbacks (StreamWaiter, observer) are invoked synchronously from the pool's methods, never while
// the pool is in an inconsistent state; they may call back into the pool.
#ifndef QPOOL_DAEMON_POOL_NODE_POOL_H_
#define QPOOL_DAEMON_POOL_NODE_POOL_H_

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "daemon/common/event_loop.h"

namespace qpool::pool {

// One pooled connection, as the pool drives it. Implemented by the HTTP/2 upstream connection
// and by unit tests' fakes.
class PoolConnection {
 public:
  virtual ~PoolConnection() = default;
  // Stop taking new streams; close once the last in-flight stream ends (HTTP/2 GOAWAY). The
  // connection later reports OnClosed. Idempotent.
  virtual void Drain() = 0;
  // Close now, failing whatever is in flight. Before returning, the connection reports
  // OnConnectFailed (if it was still connecting) or OnClosed, and then nothing more. Idempotent.
  virtual void Abort() = 0;
};

// What a connection reports to its pool. Every connection reports exactly one of OnConnectFailed
// (before it was ready) or OnClosed (after), once; after that it makes no further calls.
class PoolConnectionEvents {
 public:
  virtual ~PoolConnectionEvents() = default;
  // The HTTP/2 handshake finished; `peer_max_streams` is the peer's
  // SETTINGS_MAX_CONCURRENT_STREAMS (UINT32_MAX when it set none).
  virtual void OnConnected(PoolConnection* conn, uint32_t peer_max_streams) = 0;
  // The peer changed SETTINGS_MAX_CONCURRENT_STREAMS later on.
  virtual void OnPeerMaxStreams(PoolConnection* conn, uint32_t peer_max_streams) = 0;
  virtual void OnConnectFailed(PoolConnection* conn, const absl::Status& reason) = 0;
  // The peer sent GOAWAY: no new streams; in-flight ones may finish.
  virtual void OnGoAway(PoolConnection* conn) = 0;
  // A stream that the pool handed out has ended (any way).
  virtual void OnStreamClosed(PoolConnection* conn) = 0;
  // The connection is gone. `reason` is OK for a drain that finished.
  virtual void OnClosed(PoolConnection* conn, const absl::Status& reason) = 0;
};

// Opens connections. The returned connection is "connecting" and reports through `events`, never
// from inside Connect itself (a failure to even start is reported on a later turn of the loop).
class ConnectionFactory {
 public:
  virtual ~ConnectionFactory() = default;
  virtual std::shared_ptr<PoolConnection> Connect(PoolConnectionEvents& events) = 0;
};

// What one app connection holds of its worker's pools, for fair sharing (docs/security.md): owned
// by the connection, shared by its calls' waiters (StreamWaiter::set_account), and it must outlive
// them. Counts over all of the worker's pools.
struct ShareAccount {
  uint32_t streams = 0;  // upstream stream slots its calls hold
  uint32_t queued = 0;   // its calls waiting in the pools' queues
};

// A caller waiting for a stream slot. Exactly one of the two callbacks runs, once, unless the
// caller cancels first (NodePool::CancelWait). A queued waiter must stay alive until then, or
// until the pool is destroyed (the destructor unlinks queued waiters without calling them).
class StreamWaiter {
 public:
  // A waiter destroyed while it still holds a slot gives its account's share back.
  virtual ~StreamWaiter() {
    if (holds_share_) account_->streams--;
  }
  // Marks the waiter as a health probe's: it never waits behind app calls. It takes a free slot
  // even while app calls are queued, or, with every connection at
  // upstream.max_streams_per_connection, a slot above that cap while the node's own
  // SETTINGS_MAX_CONCURRENT_STREAMS allows one (the reserved headroom); only at the node's own
  // limit does it wait, ahead of every app call. Probes are few (one per node per health interval),
  // so this takes nothing from the apps.
  void set_probe() { probe_ = true; }
  // The app connection the caller belongs to, for fair sharing: the pools serve their queues one
  // account at a time, and hold an account to upstream.max_connection_share of the slots and of
  // the queue. Null (the default): the caller shares one anonymous account with the others
  // without one.
  void set_account(ShareAccount* account) { account_ = account; }
  ShareAccount* account() const { return account_; }
  // A slot on `conn` is reserved for the caller, who must open its stream now, and release the
  // slot through the connection's OnStreamClosed (or NodePool::ReleaseUnused if it cannot).
  virtual void OnStreamReady(PoolConnection* conn) = 0;
  // No slot could be had: kUnavailable (acquire_timeout, no connection possible) or
  // kResourceExhausted. The message names the limit and its config key.
  virtual void OnAcquireFailed(const absl::Status& status) = 0;

 private:
  friend class NodePool;
  bool queued_ = false;
  bool probe_ = false;
  bool holds_share_ = false;  // a slot it got counts in account_->streams
  ShareAccount* account_ = nullptr;
  MonoTime queued_at_{};
  std::list<StreamWaiter*>::iterator queue_pos_;  // in waiters_ (arrival order) or probes_
  std::list<StreamWaiter*>::iterator turn_pos_;   // in its account's turn (app waiters)
};

enum class ConnectionState { kConnecting, kReady, kBusy, kDraining };
const char* ConnectionStateName(ConnectionState state);

// Why a connection that was up has gone, as the pool saw it.
enum class CloseReason {
  kGoAway,    // drained after the peer's GOAWAY (or closed cleanly by the peer)
  kError,     // lost, reset or broken: the connection reported a non-OK status
  kShutdown,  // closed after Shutdown(), or by the pool's destructor
  kRecycled,  // drained by the pool at max_connection_age or max_requests_per_connection
  kIdle,      // drained by the pool after idle_timeout with no stream
};
inline constexpr size_t kCloseReasonCount = 5;
static_assert(static_cast<size_t>(CloseReason::kIdle) + 1 == kCloseReasonCount);
// "goaway", "error", ... "idle": also the `reason` label of qpool_upstream_disconnects_total.
const char* CloseReasonName(CloseReason reason);

// Metric hooks; every method has an empty default. Invoked on the worker's thread.
class PoolObserver {
 public:
  virtual ~PoolObserver() = default;
  // `from` is empty for a new connection, `to` empty for one that is gone.
  virtual void OnConnectionState(const ConnectionState* from, const ConnectionState* to) {}
  virtual void OnConnectFailed(const absl::Status& reason) {}
  // A connection that was up is gone: `reason` as the pool classifies it, `status` as the
  // connection reported it (OK for a drain that finished).
  virtual void OnConnectionClosed(CloseReason reason, const absl::Status& status) {}
  virtual void OnStreamAcquired(Duration waited) {}
  virtual void OnQueueOverflow() {}
  virtual void OnAcquireTimeout() {}
};

// Calls waiting for a stream across all of one worker's node pools: `upstream.max_pending` is a
// bound per qpoold, shared by its pools.
struct PendingBudget {
  uint32_t limit = 0;
  uint32_t used = 0;
};

struct NodePoolOptions {
  std::string node_name;         // "host:port", for messages
  uint32_t min_connections = 1;  // this worker's share of upstream.min_connections
  uint32_t max_connections = 4;  // this worker's share of upstream.max_connections
  // The config key of max_connections, for messages: upstream.max_connections, or
  // rest.max_connections for a REST pool.
  std::string max_connections_key = "upstream.max_connections";
  uint32_t max_streams_per_connection = 100;
  Duration acquire_timeout = std::chrono::seconds(1);
  Duration connect_backoff_base = std::chrono::milliseconds(100);
  Duration connect_backoff_max = std::chrono::seconds(1);
  // upstream.max_connection_age: a connection up this long, times (1 + u x kConnectionAgeJitter)
  // for u uniform in [-1, 1) drawn once per connection, is recycled. Counted from the end of the
  // HTTP/2 handshake. Zero: never.
  Duration max_connection_age = std::chrono::minutes(30);
  // upstream.max_requests_per_connection: a connection is recycled right after it was handed its
  // this-many-th stream. Zero: no limit.
  uint32_t max_requests_per_connection = 0;
  // upstream.idle_timeout: a connection with no stream for this long is drained while more than
  // min_connections connections are up (connecting, ready or busy). Zero: never.
  Duration idle_timeout = std::chrono::minutes(5);
  // upstream.max_connection_share: the share of the pool's stream slots (max_connections x
  // max_streams_per_connection) and of upstream.max_pending one app connection (ShareAccount) may
  // hold; at least one slot and one queue place each. 1: no limit beyond the pool's own.
  double max_connection_share = 1.0;
};

// The spread of max_connection_age: each connection's age limit is within +-10% of it, so the
// connections opened together at start-up (or after a node restart) do not all recycle at once.
inline constexpr double kConnectionAgeJitter = 0.1;

// A snapshot for status pages and tests.
struct NodePoolStats {
  uint32_t connecting = 0;
  uint32_t ready = 0;
  uint32_t busy = 0;
  uint32_t draining = 0;
  uint32_t streams_in_flight = 0;
  uint32_t waiting = 0;
  uint32_t consecutive_connect_failures = 0;
  uint32_t total() const { return connecting + ready + busy + draining; }
};

class NodePool : private PoolConnectionEvents {
 public:
  // `budget`, `factory`, `loop`, `random` and `observer` must outlive the pool. `observer` may be
  // null.
  NodePool(NodePoolOptions options, PendingBudget& budget, ConnectionFactory& factory,
           EventLoop& loop, Random& random, PoolObserver* observer);
  ~NodePool() override;

  NodePool(const NodePool&) = delete;
  NodePool& operator=(const NodePool&) = delete;

  // Opens `min_connections` connections.
  void Start();

  enum class AcquireOutcome { kReady, kQueued, kFailed };
  struct AcquireResult {
    AcquireOutcome outcome;
    PoolConnection* connection = nullptr;  // kReady: a slot on it is reserved for the caller
    absl::Status status;                   // kFailed: why
  };
  // Reserves a stream slot now (kReady), queues `waiter` (kQueued: one of its callbacks runs
  // later), or fails now (kFailed: queue full, or the node cannot be reached). Never calls the
  // waiter from inside Acquire.
  AcquireResult Acquire(StreamWaiter& waiter);

  // Removes a queued waiter; no callback runs. No-op if it is not queued.
  void CancelWait(StreamWaiter& waiter);

  // The caller let go of the slot the pool gave it (its stream ended or was never opened): the
  // slot no longer counts in its account's share. Idempotent. Waiters the share held back are
  // served on a later turn of the loop, never from inside this call.
  void ReleaseShare(StreamWaiter& waiter);

  // One app connection's limits (upstream.max_connection_share): slots held, queue places.
  uint32_t StreamShareCap() const;
  uint32_t PendingShareCap() const;

  // Returns a slot the caller got but could not use (its stream never opened).
  void ReleaseUnused(PoolConnection* conn);

  // Drains every connection and fails every waiter with kUnavailable. No new connection opens.
  void Shutdown();

  // Recycles every connection gently, as max_connection_age does: each ready or busy one is
  // drained (its in-flight streams finish; counted as recycled) at a moment drawn uniformly in
  // [now, now + spread), and replaced as min_connections and waiting calls need; a connection
  // still connecting is recycled as soon as it is up. For credentials that changed (new TLS
  // material): connections opened from now on use the new ones, and none fails a call.
  void RecycleAll(Duration spread);

  // A config reload changed the pool's bounds or timings: new values apply from now on (new
  // connections, the next acquire, the next maintenance scan); connections above a lowered
  // max_connections that have no stream are drained now, busy ones once they are idle. The
  // node_name stays.
  void UpdateOptions(NodePoolOptions options);

  // The node left the node set (config reload, DNS): the router no longer sends calls here, so
  // the pool winds down without failing any: calls already queued are still served (a connection
  // opens for them if needed), each connection drains once it has no stream and nobody waits,
  // and none is reopened for min_connections. Idempotent.
  void Retire();
  bool retired() const { return retired_; }
  // A retired pool with no connection and no waiter: it may be destroyed.
  bool gone() const {
    return retired_ && TotalConnections() == 0 && waiters_.empty() && probes_.empty();
  }

  // False while the node cannot be reached: a connect failed and no connection is up. Routers
  // prefer nodes that are usable.
  bool usable() const;

  // True when a connection to the node is up (ready or busy).
  bool has_live_connection() const { return !ready_.empty() || !busy_.empty(); }
  // True until the pool opens its first connection: a node just added to the node set (reload,
  // DNS discovery) with min_connections 0 (the REST pools' default). Routers count it with the
  // nodes that have a connection up, or calls would never go there while another node has one.
  bool never_connected() const { return !opened_any_; }

  // Calls on this node now: streams in flight plus calls waiting for one. The balancer's load
  // score.
  uint32_t load() const {
    return streams_in_flight_ + static_cast<uint32_t>(waiters_.size() + probes_.size());
  }

  NodePoolStats stats() const;
  const NodePoolOptions& options() const { return options_; }

  // One row per connection, oldest first within each state: for status pages.
  struct ConnectionInfo {
    ConnectionState state;
    uint32_t streams;     // in flight (or reserved)
    uint32_t stream_cap;  // min(max_streams_per_connection, the peer's limit)
  };
  std::vector<ConnectionInfo> Connections() const;

  // How long the oldest waiting call has waited; zero when none waits.
  Duration LongestWait() const;

  // The slot's state, for tests; kDraining for an unknown connection.
  ConnectionState StateOf(const PoolConnection* conn) const;

 private:
  struct Slot {
    std::shared_ptr<PoolConnection> conn;
    ConnectionState state = ConnectionState::kConnecting;
    uint32_t streams = 0;  // reserved or open
    uint32_t peer_max_streams = UINT32_MAX;
    uint64_t streams_handed_out = 0;        // over the connection's life, for max_requests
    MonoTime recycle_at = MonoTime::max();  // max_connection_age deadline; max() when off
    MonoTime idle_since{};                  // when `streams` last dropped to 0 (or it connected)
    CloseReason drain_reason = CloseReason::kGoAway;  // why it is draining, once it is
    bool recycle_when_up = false;                     // RecycleAll() while it was connecting
    uint32_t StreamCap(uint32_t configured) const {
      return peer_max_streams < configured ? peer_max_streams : configured;
    }
  };
  using SlotList = std::list<Slot>;

  // PoolConnectionEvents.
  void OnConnected(PoolConnection* conn, uint32_t peer_max_streams) override;
  void OnPeerMaxStreams(PoolConnection* conn, uint32_t peer_max_streams) override;
  void OnConnectFailed(PoolConnection* conn, const absl::Status& reason) override;
  void OnGoAway(PoolConnection* conn) override;
  void OnStreamClosed(PoolConnection* conn) override;
  void OnClosed(PoolConnection* conn, const absl::Status& reason) override;

  SlotList& ListFor(ConnectionState state);
  // Finds a connection's slot and the list holding it; false if unknown.
  bool Find(const PoolConnection* conn, SlotList*& list, SlotList::iterator& it);
  // The one transition function: moves the slot to `to`'s list and tells the observer.
  SlotList::iterator Transition(SlotList& from_list, SlotList::iterator it, ConnectionState to);
  // Moves a slot between ready and busy after its stream count or cap changed.
  void Rebalance(SlotList& list, SlotList::iterator it);
  // Reserves a stream on connection `it` of `list` (ready, or busy for a probe's headroom);
  // recycles the connection when that was its max_requests_per_connection-th. Returns it.
  PoolConnection* TakeStream(SlotList& list, SlotList::iterator it);
  // A slot a probe may take now: on a ready connection, or above max_streams_per_connection on a
  // busy one still below the node's own limit. False when there is none.
  bool FindProbeSlot(SlotList*& list, SlotList::iterator& it);
  // The waiter whose deadline (queued_at + acquire_timeout) comes first, probes included; null
  // when none waits.
  StreamWaiter* OldestWaiter() const;
  // Moves a ready or busy slot to draining for `reason` and drains its connection on a later turn
  // of the loop (see the definition for why later).
  void Recycle(SlotList& list, SlotList::iterator it, CloseReason reason);
  // Connections that are up or on their way: what min_connections and idle_timeout count.
  uint32_t LiveConnections() const;
  void RemoveSlot(SlotList& list, SlotList::iterator it, const absl::Status& reason);

  // Hands free slots to waiters, opens connections if waiters or min_connections need them, and
  // fails waiters when nothing can serve them.
  void Service();
  void OpenConnection();
  uint32_t TotalConnections() const;
  uint32_t ConnectingCapacity() const;
  void Enqueue(StreamWaiter& waiter);
  // Takes a queued app waiter out of waiters_ and its account's turn.
  void Unlink(StreamWaiter& waiter);
  // Round robin over the accounts with waiters: the front waiter of the first account (from the
  // turn after the last one served) under its stream share, unlinked; null when every queued
  // account is at its share.
  StreamWaiter* NextInTurn();
  // Counts a slot handed to `waiter` in its account.
  static void Grant(StreamWaiter& waiter);
  StreamWaiter* Dequeue();
  void FailAllWaiters(const absl::Status& status);
  void ArmAcquireTimer();
  void OnAcquireTimer();
  void OnBackoffTimer();
  Duration NextBackoff();
  // Recycling: makes sure the maintenance timer fires no later than `at`.
  void ScheduleMaintenance(MonoTime at);
  // Drains connections past their age or idle deadline, then re-arms for the next deadline.
  void OnMaintenanceTimer();

  // Drains ready connections that hold no stream while nobody waits: a retired pool's
  // connections, and those above a lowered max_connections.
  void DrainIdleSurplus();

  NodePoolOptions options_;  // replaced by UpdateOptions (worker thread)
  PendingBudget& budget_;
  ConnectionFactory& factory_;
  EventLoop& loop_;
  Random& random_;
  PoolObserver* const observer_;

  SlotList connecting_;  // enters on OpenConnection; leaves on OnConnected / OnConnectFailed
  SlotList ready_;       // handshake done and streams < cap: can take a stream now
  SlotList busy_;        // streams == cap; back to ready when a stream ends
  SlotList draining_;    // GOAWAY received or Drain() sent: in-flight streams finish, no new ones
  std::list<StreamWaiter*> waiters_;  // FIFO; all share acquire_timeout, so the head expires first
  // Health probes waiting: only at the node's own stream limit. Served before waiters_; not
  // counted in upstream.max_pending.
  std::list<StreamWaiter*> probes_;
  // Fair sharing: the accounts with app waiters queued, each with its waiters in arrival order,
  // in round-robin order (the front is served next, then goes to the back). An account enters
  // with its first queued waiter and leaves with its last.
  struct Turn {
    ShareAccount* account;
    std::list<StreamWaiter*> waiters;
  };
  std::list<Turn> turns_;
  std::unordered_map<const ShareAccount*, std::list<Turn>::iterator> turn_of_;
  std::unique_ptr<Timer> share_timer_;  // ReleaseShare's later Service()

  std::unique_ptr<Timer> acquire_timer_;
  MonoTime acquire_timer_at_{};  // when acquire_timer_, if armed, fires
  std::unique_ptr<Timer> backoff_timer_;
  // One timer per pool for age and idle deadlines (PgBouncer's janitor, but armed for the next
  // deadline instead of ticking): a pool has few connections, so a scan when it fires is cheap,
  // and the data path only compares one time point when a connection goes idle, instead of
  // arming and cancelling a timer per connection on every stream. max() when not armed.
  std::unique_ptr<Timer> maintenance_timer_;
  MonoTime maintenance_at_ = MonoTime::max();
  bool in_backoff_ = false;
  bool opened_any_ = false;  // OpenConnection() ran once
  uint32_t consecutive_connect_failures_ = 0;
  uint32_t streams_in_flight_ = 0;  // the sum of Slot::streams over all lists
  absl::Status last_connect_error_;
  bool shut_down_ = false;
  bool retired_ = false;
  bool servicing_ = false;  // guards Service() against re-entry from waiter callbacks
};

}  // namespace qpool::pool

#endif  // QPOOL_DAEMON_POOL_NODE_POOL_H_
