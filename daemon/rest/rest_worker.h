// One I/O worker's REST side: its share of each node's REST pool (a pool::NodePool of keep-alive
// HTTP/1.1 connections, one request each), and the app REST connections (RestSession) it was
// handed. It runs on the worker's io_context and thread, and shares with the worker's gRPC side
// what both protocols share: the balancer (pool::Balancer: health verdicts, ejection, picks,
// passive health), the retry budgets per node, the API keys and the process-wide counters
// (RestHost). Its sessions see none of it but a RestSessionContext (session_context.h): what a
// session uses of its worker.
//
//   RestWorker rest(config, index, count, io, loop, random, pending_budget, host, balancer, retry,
//                   metrics, table);
//   rest.Start();                      // on the worker's thread: pools open rest.min_connections
//   rest.Adopt(std::move(socket));     // an accepted REST app connection
//
// Thread-safety: none; everything runs on the owning worker's thread.
#ifndef QPOOL_DAEMON_REST_REST_WORKER_H_
#define QPOOL_DAEMON_REST_REST_WORKER_H_

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "daemon/common/event_loop.h"
#include "daemon/config/config.h"
#include "daemon/config/node_table.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/pool/balancer.h"
#include "daemon/pool/slot_pools.h"
#include "daemon/rest/rest_host.h"
#include "daemon/rest/session_context.h"
#include "daemon/retry/retry_context.h"

namespace qpool::rest {

class RestSession;

class RestWorker {
 public:
  // `index` of `count` workers: the worker's share of rest.max_connections / min_connections.
  // `table`: the node slots; a slot with a REST endpoint (NodeSlot::rest) gets a pool, reached
  // over TLS when the slot has a REST context store (NodeSlot::rest_tls, ALPN http/1.1). Pools,
  // and their counters in `metrics` (rest_node(slot)), are by slot. Everything passed must
  // outlive the RestWorker (`config` and `table` until the next Reconfigure). Its requests' nodes
  // are picked by `balancer` over slot_pools() (pool::Protocol::kRest; the caller hands it the
  // pools).
  RestWorker(const config::Config& config, uint32_t index, uint32_t count,
             boost::asio::io_context& io, EventLoop& loop, Random& random,
             pool::PendingBudget& pending_budget, RestHost& host, pool::Balancer& balancer,
             RestRetryContext retry, metrics::WorkerMetrics& metrics,
             const config::NodeTable& table);
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
  // requests, and the REST pools follow `table` (pool::SlotPools::Apply: new pools for slots that
  // became active, retired pools for slots no longer active, new bounds and TLS settings for the
  // others). `config` and `table` must outlive the RestWorker or the next Reconfigure.
  void Reconfigure(const config::Config& config, const config::NodeTable* table);
  bool idle() const { return sessions_.empty(); }

  // The REST pools, by node slot (DrainedSlots, gauges, TLS recycling: pool::SlotPools).
  pool::SlotPools& slot_pools() { return pools_; }
  const pool::SlotPools& slot_pools() const { return pools_; }

 private:
  class PoolParts;
  class PoolObserver;
  void SetLimits(const config::RestConfig& rest);
  // A session ended (RestSessionContext::on_closed); it is freed on a later turn.
  void OnSessionClosed(RestSession* session);

  const config::Config* config_;
  uint32_t index_;
  uint32_t count_;
  boost::asio::io_context& io_;
  EventLoop& loop_;
  RestHost& host_;
  pool::Balancer& balancer_;
  RestRetryContext retry_;
  metrics::WorkerMetrics& metrics_;
  RestLimits limits_;
  pool::SlotPools pools_;             // its parts read the members above
  const RestSessionContext context_;  // the sessions' view of the members above
  std::unordered_map<RestSession*, std::shared_ptr<RestSession>> sessions_;
  bool draining_ = false;
  bool stopped_ = false;
};

// Each REST node's endpoint: upstream.rest_nodes, or each gRPC node's host with port 6333.
std::vector<config::NodeAddress> RestNodesOf(const config::Config& config);

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_REST_WORKER_H_
