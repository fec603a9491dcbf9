// One I/O worker's REST side: its share of each node's REST pool (a pool::NodePool of keep-alive
// HTTP/1.1 connections, one request each), and the app REST connections (RestSession) it was
// handed. It runs on the worker's io_context and thread, and asks the worker (RestHost) for what
// both protocols share: the node router (health verdicts, ejection, balancing), passive health,
// the retry budgets per node, and the process-wide counters.
//
//   RestWorker rest(config, index, count, io, loop, random, pending_budget, host);
//   rest.Start();                      // on the worker's thread: pools open rest.min_connections
//   rest.Adopt(std::move(socket));     // an accepted REST app connection
//
// Thread-safety: none; everything runs on the owning worker's thread.
#ifndef QPOOL_DAEMON_REST_REST_WORKER_H_
#define QPOOL_DAEMON_REST_REST_WORKER_H_

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "daemon/auth/api_keys.h"
#include "daemon/common/event_loop.h"
#include "daemon/config/config.h"
#include "daemon/config/node_table.h"
#include "daemon/metrics/scrape.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/pool/node_pool.h"
#include "daemon/retry/retry_context.h"
#include "daemon/tls/context_store.h"

namespace qpool::rest {

class RestSession;
class RestConnectionFactory;

// What the REST side shares with the gRPC side of its worker. Implemented by server::Worker.
class RestHost {
 public:
  virtual ~RestHost() = default;
  // The node for a new REST request: the worker's NodeRouter (health, ejection, connection up,
  // power of two choices) over the REST pools' state.
  virtual size_t PickRestNode(const std::vector<pool::NodePool*>& pools) = 0;
  // For a retry: a healthy, not ejected node other than `except` with a connection up.
  virtual std::optional<size_t> PickRestNodeOtherThan(
      size_t except, const std::vector<pool::NodePool*>& pools) = 0;
  // Passive health: an attempt on `node` ended; `failed` for a lost or refused connection or a
  // 503 (connect failures too).
  virtual void OnRestAttemptEnd(size_t node, bool failed) = 0;
  // A REST app connection closed (the process-wide count of app connections).
  virtual void OnRestSessionClosed() = 0;
  // The REST side has no app connection left (drain bookkeeping).
  virtual void OnRestIdle() = 0;
  // The API keys qpoold puts on REST requests (upstream.api_key_*), as they are now; null when it
  // holds none for the apps' calls. A request keeps the snapshot it started with for all of its
  // attempts.
  virtual std::shared_ptr<const auth::ApiKeys> RestApiKeys() = 0;
  // upstream.api_key_mode.
  virtual auth::KeyMode RestKeyMode() const = 0;
};

// What REST requests share with the worker's gRPC calls (docs/retries.md): the retry context (one
// policy, one classifier, one budget per node, the replay limits, where retry events go) and the
// process-wide counters.
struct RestRetryContext {
  retry::RetryContext* context = nullptr;
  std::atomic<uint64_t>* local_replies = nullptr;
  std::atomic<uint64_t>* protocol_errors = nullptr;
  // qpool_calls_started_total: REST requests whose headers arrived count with gRPC calls.
  std::atomic<uint64_t>* calls_started = nullptr;
};

// The app-side limits of rest.* in the units the sessions use.
struct RestLimits {
  uint32_t max_header_bytes = 64 << 10;
  uint32_t max_headers = 100;
  uint64_t max_body_bytes = 32 << 20;
  Duration header_timeout = std::chrono::seconds(10);
  Duration keepalive_timeout = std::chrono::seconds(60);
  Duration request_timeout = std::chrono::seconds(60);  // zero: none
};

class RestWorker {
 public:
  // `index` of `count` workers: the worker's share of rest.max_connections / min_connections.
  // `table`: the node slots; a slot with a REST endpoint (NodeSlot::rest) gets a pool, reached
  // over TLS when the slot has a REST context store (NodeSlot::rest_tls, ALPN http/1.1). Pools,
  // and their counters in `metrics` (rest_node(slot)), are by slot. Everything passed must
  // outlive the RestWorker (`config` and `table` until the next Reconfigure).
  RestWorker(const config::Config& config, uint32_t index, uint32_t count,
             boost::asio::io_context& io, EventLoop& loop, Random& random,
             pool::PendingBudget& pending_budget, RestHost& host, RestRetryContext retry,
             metrics::WorkerMetrics& metrics, const config::NodeTable& table);
  ~RestWorker();

  RestWorker(const RestWorker&) = delete;
  RestWorker& operator=(const RestWorker&) = delete;

  // Worker thread only. -------------------------------------------------------------------------
  void Start();
  // Takes an accepted REST app connection (bound to this worker's io_context). `refuse`: over
  // server.max_client_connections: answered 503 and closed.
  void Adopt(boost::asio::ip::tcp::socket socket, bool refuse);
  // New requests are answered with Connection: close; idle connections close now.
  void BeginDrain();
  // Closes every app connection and the pools.
  void Stop();
  // A config reload or node set change (server::Worker::Reconfigure): new REST limits for new
  // requests, new pools for slots that became active, retired pools (no new requests; those in
  // flight and queued finish) for slots no longer active, new bounds for the others. `config`
  // and `table` must outlive the RestWorker or the next Reconfigure.
  void Reconfigure(const config::Config& config, const config::NodeTable* table);
  // Per slot: this worker holds no REST pool for it, or a retired one with nothing left.
  std::vector<bool> DrainedSlots() const;
  bool idle() const { return sessions_.empty(); }
  bool draining() const { return draining_; }

  // The REST pool of node slot `node` (by slot; null entries in pools() for slots without one).
  pool::NodePool& pool(size_t node) { return *pools_[node]; }
  const std::vector<pool::NodePool*>& pools() const { return pool_ptrs_; }
  const config::NodeAddress& node(size_t i) const { return nodes_[i]; }
  // "host:port" of node `i`'s REST endpoint, for Host and messages.
  const std::string& node_name(size_t i) const { return node_names_[i]; }
  const RestLimits& limits() const { return limits_; }
  RestHost& host() { return host_; }
  RestRetryContext& retry() { return retry_; }
  EventLoop& loop() { return loop_; }
  Random& random() { return random_; }
  boost::asio::io_context& io() { return io_; }
  metrics::WorkerMetrics& metrics() { return metrics_; }
  const config::Config& config() const { return *config_; }
  // Slot `node`'s TLS material changed: its connections are recycled gently within `spread`
  // (NodePool::RecycleAll).
  void RecycleNode(size_t node, Duration spread);
  // A session ended; it is freed on a later turn.
  void OnSessionClosed(RestSession* session);
  // The REST pools' gauges now, by slot.
  std::vector<metrics::NodePoolGauges> PoolGauges() const;

 private:
  class PoolObserver;
  void SetLimits(const config::RestConfig& rest);
  pool::NodePoolOptions PoolOptionsFor(size_t slot) const;
  // Creates the pool (and factory, observer) of `slot`, one of `table`'s, when it has a REST
  // endpoint.
  void CreatePool(size_t slot, const config::NodeSlot& node);

  const config::Config* config_;
  uint32_t index_;
  uint32_t count_;
  pool::PendingBudget& pending_budget_;
  std::vector<uint64_t> generation_;  // per slot: the table generation its pool was made for
  boost::asio::io_context& io_;
  EventLoop& loop_;
  Random& random_;
  RestHost& host_;
  RestRetryContext retry_;
  metrics::WorkerMetrics& metrics_;
  RestLimits limits_;
  std::vector<config::NodeAddress> nodes_;
  std::vector<std::string> node_names_;
  std::vector<std::unique_ptr<RestConnectionFactory>> factories_;
  // Declared before pools_: a pool reports to its observer until it is destroyed.
  std::vector<std::unique_ptr<PoolObserver>> observers_;
  std::vector<std::unique_ptr<pool::NodePool>> pools_;
  std::vector<pool::NodePool*> pool_ptrs_;
  std::unordered_map<RestSession*, std::shared_ptr<RestSession>> sessions_;
  bool draining_ = false;
  bool stopped_ = false;
};

// Each REST node's endpoint: upstream.rest_nodes, or each gRPC node's host with port 6333.
std::vector<config::NodeAddress> RestNodesOf(const config::Config& config);

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_REST_WORKER_H_
