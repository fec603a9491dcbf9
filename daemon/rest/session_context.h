// What a REST app connection (RestSession) and its parts use of their worker: the worker's loop
// and randomness, the REST pools by node slot, the balancer that picks among them, the retry
// context and counters shared with the gRPC calls, the API keys (RestHost), the app-side limits
// and the metrics. The RestWorker builds one and hands it to each session it adopts, as
// server::CallContext is handed to each gRPC call: a session sees only this, never its worker.
//
//   RestSessionContext context{io, loop, random, host, balancer, pools, retry, limits, metrics,
//                              [](RestSession* session) { /* free it later */ }};
//   context.pool(node).Acquire(waiter);
//   context.node_name(node);   // "host:port", for Host and messages
//
// Everything referenced belongs to the worker and outlives its sessions; `limits` changes on a
// reload (new requests read the new values). Thread-safety: none; the worker's thread.
#ifndef QPOOL_DAEMON_REST_SESSION_CONTEXT_H_
#define QPOOL_DAEMON_REST_SESSION_CONTEXT_H_

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <functional>
#include <string>

#include "daemon/common/event_loop.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/pool/balancer.h"
#include "daemon/pool/slot_pools.h"
#include "daemon/rest/rest_host.h"
#include "daemon/retry/retry_context.h"

namespace qpool::rest {

class RestSession;

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

struct RestSessionContext {
  // The REST pool of node slot `node` (a slot the balancer picked: it has one).
  pool::NodePool& pool(size_t node) const { return *pools.pool(node); }
  // "host:port" of node `node`'s REST endpoint, for Host and messages.
  const std::string& node_name(size_t node) const { return pools.endpoint_name(node); }

  boost::asio::io_context& io;
  EventLoop& loop;
  Random& random;
  RestHost& host;            // the API keys
  pool::Balancer& balancer;  // node picks (pool::Protocol::kRest), passive health
  pool::SlotPools& pools;    // the REST pools, by node slot
  RestRetryContext& retry;
  const RestLimits& limits;
  metrics::WorkerMetrics& metrics;
  // A session closed: its owner frees it on a later turn.
  std::function<void(RestSession*)> on_closed;
};

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_SESSION_CONTEXT_H_
