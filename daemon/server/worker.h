// An I/O worker: one thread running one io_context, owning a share of the app connections and its
// own share of every node's pool. Everything a worker owns is touched only on its thread, so the
// data path takes no locks; other threads reach a worker with Post().
#ifndef QPOOL_DAEMON_SERVER_WORKER_H_
#define QPOOL_DAEMON_SERVER_WORKER_H_

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "daemon/common/asio_event_loop.h"
#include "daemon/pool/slot_pools.h"
#include "daemon/rest/rest_host.h"
#include "daemon/retry/retry_context.h"

namespace qpool::auth {
class ApiKeyCache;  // api_keys.h
class ApiKeyStore;
}  // namespace qpool::auth

namespace qpool::health {
class NodeRouter;    // health.h
struct ProbeResult;  // health_scheduler.h
}  // namespace qpool::health

namespace qpool::metrics {  // worker_metrics.h, health_metrics.h, scrape.h
class HealthMetrics;
struct NodeMetrics;
struct NodePoolGauges;
class WorkerMetrics;
}  // namespace qpool::metrics

namespace qpool::rest {
class RestWorker;  // rest_worker.h
}  // namespace qpool::rest

namespace qpool::tls {  // client_tls.h, context_store.h
class ClientContext;
class ContextStore;
}  // namespace qpool::tls

namespace qpool::server {

class DownstreamSession;
class HealthProbe;
struct ProbeSpec;
struct ProxyCounters;  // proxy_counters.h

using config::NodeSlot;
using config::NodeTable;

// Upstream credentials the workers share: the nodes' TLS contexts and the API keys qpoold holds.
// Owned by the Proxy (which reloads them on its secrets thread); both outlive the workers.
struct UpstreamSecrets {
  const tls::ContextStore* tls = nullptr;       // null: every node in cleartext
  const auth::ApiKeyStore* keys = nullptr;      // null: no key of qpoold's own
  const tls::ContextStore* rest_tls = nullptr;  // the REST endpoints' (ALPN http/1.1); null: none
};

// How long the connections of a node whose TLS material changed take to be recycled: each drains
// at a moment drawn uniformly in this window, so they do not all reconnect at once.
inline constexpr Duration kTlsRecycleSpread = std::chrono::seconds(2);

// A worker's parts: its io_context and thread; its app connections (DownstreamSession, and the
// REST ones in its RestWorker); its gRPC pools, one per node slot (`pools_`, a pool::SlotPools:
// created, retired and updated on reloads; the RestWorker holds the REST pools the same way);
// the router (health::NodeRouter) that picks among the active slots for both protocols; the
// retry context its calls share; its probes. Thread-safety: Post() and Stop() from any thread;
// everything else on the worker's thread (where marked, or as RestHost).
class Worker : public rest::RestHost {
 public:
  // `index` of `count` workers: the worker takes its share of each node's connection bounds.
  // `metrics` (this worker's counters, written only on its thread) must outlive the worker.
  // `health` (the control thread's published node health; null: every node counts as healthy)
  // must outlive the worker too.
  // `table`: the node slots (null: one slot per config node, in config order, TLS from
  // secrets.tls).
  Worker(std::shared_ptr<const config::Config> config, uint32_t index, uint32_t count,
         ProxyCounters& counters, metrics::WorkerMetrics& metrics,
         const metrics::HealthMetrics* health = nullptr, UpstreamSecrets secrets = {},
         std::shared_ptr<const NodeTable> table = nullptr);
  ~Worker() override;

  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Starts the thread. The pools open their min_connections.
  void Start();
  // Runs `hook` (on this worker's thread) after each failed connect to a node; set before
  // Start(). The Proxy nudges DNS discovery with it. It must be cheap and thread-safe.
  void SetConnectFailureHook(std::function<void()> hook) {
    connect_failure_hook_ = std::move(hook);
  }
  // Runs `fn` on the worker's thread.
  void Post(std::function<void()> fn);

  // Worker thread only. ------------------------------------------------------------------------
  // Takes an accepted app connection (already bound to this worker's io_context).
  void Adopt(boost::asio::ip::tcp::socket socket, bool refuse);
  // Sends GOAWAY to every app connection; calls `on_idle` (on this thread) once none is left.
  void BeginDrain(std::function<void()> on_idle);
  // Picks a node pool for a new call (health::NodeRouter): among the nodes healthy by active
  // checks and not ejected by passive ones (all of them in panic mode, counted), those with a
  // connection up, else those that may still connect; of two picked at random, the less loaded.
  pool::NodePool& PickPool();
  // A node pool other than `except` for a hedge: the least loaded of the healthy, not ejected
  // nodes with a connection up; null when there is none.
  pool::NodePool* PickPoolOtherThan(const pool::NodePool* except);
  // Passive health: an upstream attempt on node `node` ended; `failed` for a reset, a lost
  // connection or UNAVAILABLE (connect failures are counted by the pool's observer).
  void OnAttemptEnd(size_t node, bool failed);
  // Health, medium and deep tiers: probes node `node` on this worker's pool for it; `done` runs
  // once, on this thread.
  void StartProbe(size_t node, const ProbeSpec& spec, Duration timeout,
                  std::function<void(health::ProbeResult)> done);
  // A probe reported; it is deleted on a later turn.
  void OnProbeDone(HealthProbe* probe);
  // Health, fast tier: the PING interval for idle connections to `node` (zero: no PINGs), and
  // its back-off after a GOAWAY too_many_pings (doubles, up to 32x health.fast_interval).
  Duration PingInterval(size_t node) const { return ping_interval_[node]; }
  void BackOffPings(size_t node);
  void OnSessionClosed(DownstreamSession* session);

  // REST (daemon/rest), worker thread only. ------------------------------------------------------
  // Takes an accepted REST app connection; null rest() (rest.listen off) closes it.
  void AdoptRest(boost::asio::ip::tcp::socket socket, bool refuse);
  // This worker's REST side; null when rest.listen is off.
  rest::RestWorker* rest() { return rest_.get(); }
  // The REST pools' gauges now, in config order; empty when REST is off.
  std::vector<metrics::NodePoolGauges> RestPoolGauges() const;
  // rest::RestHost.
  size_t PickRestNode(const std::vector<pool::NodePool*>& pools) override {
    return PickSlot(pools);
  }
  std::optional<size_t> PickRestNodeOtherThan(size_t except,
                                              const std::vector<pool::NodePool*>& pools) override {
    return PickSlotOtherThan(except, pools);
  }
  void OnRestAttemptEnd(size_t node, bool failed) override { OnAttemptEnd(node, failed); }
  void OnRestSessionClosed() override;
  void OnRestIdle() override { CheckDrained(); }
  std::shared_ptr<const auth::ApiKeys> RestApiKeys() override;
  auth::KeyMode RestKeyMode() const override { return key_mode(); }
  // New TLS material in `store` for its nodes `nodes` (store indexes, NodeSlot::tls_index; the
  // REST endpoints' store when `rest`): the connections of the slots using them are recycled
  // gently (NodePool::RecycleAll over kTlsRecycleSpread).
  void RecycleTlsNodes(const tls::ContextStore* store, const std::vector<size_t>& nodes, bool rest);

  // Stops everything and joins the thread. Call from outside the worker.
  void Stop();

  // Worker thread: a config reload or a node set change (docs/operations.md, "Reload"). The new
  // config, node table and secrets apply at once to what starts from now on: slots that became
  // active get pools (opening min_connections), slots no longer active retire theirs (no new
  // calls; calls in flight and queued finish there), surviving pools take the new bounds and
  // timings, the router, retry policy, budgets' limits and PING intervals follow. Nothing in
  // flight fails. `config` keeps server.listen/workers/rest.listen (the caller refuses those).
  void Reconfigure(std::shared_ptr<const config::Config> config,
                   std::shared_ptr<const NodeTable> table, UpstreamSecrets secrets);
  // Worker thread: per slot, whether this worker holds nothing for it any more (no pool, or a
  // retired pool with no connection and no waiter, gRPC and REST alike).
  std::vector<bool> DrainedSlots() const;
  const NodeTable& nodes() const { return *table_; }
  boost::asio::io_context& io() { return io_; }
  EventLoop& loop() { return loop_; }
  const config::Config& config() const { return *config_; }
  ProxyCounters& counters() { return counters_; }
  metrics::WorkerMetrics& metrics() { return metrics_; }
  // The counters of the node `pool` serves; null for a pool not of this worker.
  metrics::NodeMetrics* NodeMetricsOf(const pool::NodePool* pool);
  // The slot of the node `pool` serves; -1 for a pool not of this worker.
  int NodeIndexOf(const pool::NodePool* pool) const;
  // The pool of node slot `node`; null when the slot has none.
  pool::NodePool* PoolOf(size_t node) { return pools_.pool(node); }
  // Node slots that take new calls (more than one: a choice to make).
  size_t active_nodes() const { return active_.size(); }
  // What this worker's calls consult and report to when an attempt fails (docs/retries.md).
  retry::RetryContext& retry() { return retry_; }
  Random& random() { return random_; }
  // Worker thread: each node slot's pool gauges now, by slot (a slot with no pool: present false).
  std::vector<metrics::NodePoolGauges> PoolGauges() const;
  // A buffer for reads, shared by all of this worker's connections: a read is consumed by nghttp2
  // before the next one starts.
  std::vector<uint8_t>& read_buffer() { return read_buffer_; }
  uint32_t index() const { return index_; }
  // Node `node`'s TLS context for a new connection; null when it is reached in cleartext.
  std::shared_ptr<const tls::ClientContext> TlsContextOf(size_t node) const;
  // The API keys qpoold holds now (one relaxed load when they did not change); null when it holds
  // none. Worker thread only.
  const auth::ApiKeys* api_keys();
  // The same, as a snapshot a call keeps for all of its attempts; null when it holds none.
  std::shared_ptr<const auth::ApiKeys> api_key_snapshot();
  // Whether qpoold's key goes on the apps' calls, and how (upstream.api_key_mode).
  bool keys_apply_to_calls() const;
  auth::KeyMode key_mode() const;

 private:
  class UpstreamFactory;
  class NodeObserver;
  class PoolParts;
  class RetryReporter;
  void CheckDrained();
  // Every sweep period: closes app connections past server.handshake_timeout or
  // server.idle_timeout, frees idle ones' write buffers, and resets streams stalled past
  // server.stream_idle_timeout.
  void SweepSessions();
  // Sets the router's view of each active slot (health, connection up, load) from `pools` (the
  // gRPC or the REST ones, by slot), now.
  void RefreshRouterFrom(const std::vector<pool::NodePool*>& pools);
  // The router's pick among the active slots, by the state of `pools` (PickPool, PickRestNode);
  // and the hedge's or retry's pick of another slot than `except` (null: none).
  size_t PickSlot(const std::vector<pool::NodePool*>& pools);
  std::optional<size_t> PickSlotOtherThan(size_t except, const std::vector<pool::NodePool*>& pools);
  // Returns free heap memory to the OS after many app connections closed.
  void MaybeTrimMemory();
  void OnNodeFailure(size_t node);
  // Rebuilds the router over the active slots (active_), after a node set change.
  void RebuildRouter();
  // The router's index of slot `node`; -1 when the slot is not active.
  int RouterIndexOf(size_t node) const;
  // Re-evaluates node `node`'s readiness mirror (NodeMetrics::usable).
  void UpdateUsable(size_t node);

  std::shared_ptr<const config::Config> config_;
  std::shared_ptr<const NodeTable> table_;
  std::vector<size_t> active_;     // router index -> slot
  std::vector<int> router_index_;  // slot -> router index, -1 when inactive
  const uint32_t index_;
  const uint32_t count_;
  ProxyCounters& counters_;
  metrics::WorkerMetrics& metrics_;
  boost::asio::io_context io_{1};  // run by one thread: its own posts skip the queue lock
  AsioEventLoop loop_;
  StdRandom random_;
  std::unique_ptr<RetryReporter> retry_reporter_;  // before retry_, which reports to it
  retry::RetryContext retry_;
  std::vector<uint8_t> read_buffer_;
  pool::PendingBudget pending_budget_;  // upstream.max_pending: the gRPC and REST pools share it
  pool::SlotPools pools_;               // the gRPC pools, by node slot
  const metrics::HealthMetrics* const health_;
  UpstreamSecrets secrets_;
  std::unique_ptr<auth::ApiKeyCache> key_cache_;  // null: qpoold holds no key
  std::unique_ptr<health::NodeRouter> router_;
  std::vector<Duration> ping_interval_;  // per node
  // Probes in flight, and those finished this turn (deleted on the next).
  std::unordered_map<HealthProbe*, std::unique_ptr<HealthProbe>> probes_;
  std::vector<std::unique_ptr<HealthProbe>> finished_probes_;
  std::unordered_map<DownstreamSession*, std::shared_ptr<DownstreamSession>> sessions_;
  std::function<void()> on_drained_;
  std::function<void()> connect_failure_hook_;
  std::unique_ptr<Timer> sweep_timer_;  // SweepSessions(); null when both timeouts are off
  Duration sweep_period_{};
  // The REST side (null when rest.listen is off). Declared after everything it uses (the loop,
  // the budgets, the router), so that it goes first.
  std::unique_ptr<rest::RestWorker> rest_;
  size_t peak_sessions_ = 0;  // most app connections held since the last trim
  bool draining_ = false;
  std::thread thread_;
  std::atomic<bool> running_{false};
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_WORKER_H_
