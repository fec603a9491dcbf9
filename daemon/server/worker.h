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
#include <vector>

#include "daemon/common/asio_event_loop.h"
#include "daemon/rest/rest_host.h"
#include "daemon/server/call_context.h"
#include "daemon/server/connection_context.h"

namespace qpool::auth {
class ApiKeyCache;  // api_keys.h
class ApiKeyStore;
}  // namespace qpool::auth

namespace qpool::health {
struct ProbeResult;  // health_scheduler.h
}  // namespace qpool::health

namespace qpool::metrics {  // worker_metrics.h, health_metrics.h
class HealthMetrics;
class WorkerMetrics;
}  // namespace qpool::metrics

namespace qpool::pool {
class Balancer;  // balancer.h
}  // namespace qpool::pool

namespace qpool::rest {
class RestWorker;  // rest_worker.h
}  // namespace qpool::rest

namespace qpool::retry {
struct RetryContext;  // retry_context.h
}  // namespace qpool::retry

namespace qpool::tls {  // client_tls.h, context_store.h
class ClientContext;
class ContextStore;
}  // namespace qpool::tls

namespace qpool::server {

class DownstreamSession;
class HealthProbe;
class NodeProbes;  // node_probes.h
struct ProbeSpec;
struct ProxyCounters;  // proxy_counters.h
class SessionSet;      // session_set.h
class WorkerPools;     // worker_pools.h

using config::NodeSlot;
using config::NodeTable;

// Upstream credentials the workers share: the nodes' TLS contexts and the API keys qpoold holds.
// Owned by the Proxy (which reloads them on its secrets thread); both outlive the workers.
struct UpstreamSecrets {
  const tls::ContextStore* tls = nullptr;       // null: every node in cleartext
  const auth::ApiKeyStore* keys = nullptr;      // null: no key of qpoold's own
  const tls::ContextStore* rest_tls = nullptr;  // the REST endpoints' (ALPN http/1.1); null: none
};

// A worker's parts: its io_context and thread; its gRPC app connections (a SessionSet,
// session_set.h: adopted, swept for timeouts, drained) and the REST ones (its RestWorker); its
// upstream pools (a WorkerPools, worker_pools.h: the gRPC pools by node slot, the pending budget
// both protocols share, the gauges, drained slots and TLS recycling over both; the RestWorker holds
// the REST pools); its balancer (pool::Balancer) that picks among the active slots for both
// protocols; the retry context its calls share, and the CallContext it hands them (a call never
// sees the Worker); the ConnectionContext it hands its connections (nor does a connection); its
// probes. The Worker wires them together, starts and stops them, and applies reloads.
// Thread-safety: Post() and Stop() from any thread; everything else on the worker's thread (where
// marked, or as RestHost and ConnectionHost).
class Worker : private rest::RestHost, private ConnectionHost {
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

  // Starts the thread. The pools open their min_connections. (A connect failure hook goes on
  // pools() before.)
  void Start();
  // Runs `fn` on the worker's thread.
  void Post(std::function<void()> fn);
  // Stops everything and joins the thread. Call from outside the worker.
  void Stop();

  // Worker thread only. ------------------------------------------------------------------------
  // Takes an accepted app connection (already bound to this worker's io_context): a gRPC one, or
  // a REST one when `rest` (closed when rest.listen is off). `refuse`: refused at once
  // (server.max_client_connections reached).
  void Adopt(boost::asio::ip::tcp::socket socket, bool refuse, bool rest = false);
  // Sends GOAWAY to every app connection; calls `on_idle` (on this thread) once none is left.
  void BeginDrain(std::function<void()> on_idle);
  // A config reload or a node set change (docs/operations.md, "Reload"). The new config, node
  // table and secrets apply at once to what starts from now on: slots that became active get
  // pools (opening min_connections), slots no longer active retire theirs (no new calls; calls in
  // flight and queued finish there), surviving pools take the new bounds and timings, the router,
  // retry policy, budgets' limits and PING intervals follow. Nothing in flight fails. `config`
  // keeps server.listen/workers/rest.listen (the caller refuses those).
  void Reconfigure(std::shared_ptr<const config::Config> config,
                   std::shared_ptr<const NodeTable> table, UpstreamSecrets secrets);

  // Its parts. -----------------------------------------------------------------------------------
  // The io_context the worker's sockets and timers are bound to (an accepted socket, first).
  boost::asio::io_context& io() { return io_; }
  // What this worker's connections use of it (connection_context.h).
  ConnectionContext& connection_context() { return connection_context_; }
  // Its upstream pools (worker_pools.h): gauges, drained slots and TLS recycling for the admin,
  // reload and secrets threads (through Post()), the connect failure hook (before Start()).
  WorkerPools& pools() { return *pools_; }
  // Health: the probes it runs for the health thread, and the PING intervals (node_probes.h).
  NodeProbes& probes() { return *probes_; }
  // This worker's REST side; null when rest.listen is off.
  rest::RestWorker* rest() { return rest_.get(); }
  // The API keys qpoold holds now (one relaxed load when they did not change); null when it holds
  // none.
  const auth::ApiKeys* api_keys();

 private:
  // rest::RestHost: what the RestWorker asks of this worker.
  void OnRestSessionClosed() override;
  void OnRestIdle() override;
  std::shared_ptr<const auth::ApiKeys> RestApiKeys() override;
  auth::KeyMode RestKeyMode() const override { return call_context_.key_mode; }
  // ConnectionHost: what its connections ask of this worker (connection_context.h).
  void OnSessionClosed(DownstreamSession* session) override;
  std::shared_ptr<const tls::ClientContext> TlsContextOf(size_t node) const override;

  class RetryReporter;

  std::shared_ptr<const config::Config> config_;
  std::shared_ptr<const NodeTable> table_;
  const uint32_t index_;
  ProxyCounters& counters_;
  metrics::WorkerMetrics& metrics_;
  // Run by one thread: its own posts skip the queue lock (as with a hint of 1), and the reactor
  // takes no per-socket lock, since every operation on this worker's sockets starts, runs and is
  // cancelled on that thread (other threads only Post, and the acceptor only registers a new
  // socket: both still locked).
  boost::asio::io_context io_{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
  AsioEventLoop loop_;
  StdRandom random_;
  std::unique_ptr<RetryReporter> retry_reporter_;  // before retry_, which reports to it
  // The parts below are held by pointer, made once in the constructor and never replaced (so
  // this header needs only their declarations); calls reach them through call_context_.
  std::unique_ptr<retry::RetryContext> retry_;
  std::vector<uint8_t> read_buffer_;
  std::unique_ptr<WorkerPools> pools_;  // the gRPC pools by node slot, the pending budget
  // Where this worker's calls (gRPC and REST) pick their nodes among the gRPC and the REST pools,
  // and report passive health to.
  std::unique_ptr<pool::Balancer> balancer_;
  UpstreamSecrets secrets_;
  std::unique_ptr<auth::ApiKeyCache> key_cache_;  // null: qpoold holds no key
  std::unique_ptr<NodeProbes> probes_;            // on the gRPC pools
  CallContext call_context_;
  ConnectionContext connection_context_;
  std::unique_ptr<SessionSet> sessions_;  // the gRPC app connections
  // The REST side (null when rest.listen is off). Declared after everything it uses (the loop,
  // the budgets, the router), so that it goes first.
  std::unique_ptr<rest::RestWorker> rest_;
  std::thread thread_;
  std::atomic<bool> running_{false};
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_WORKER_H_
