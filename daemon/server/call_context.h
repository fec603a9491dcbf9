// What a gRPC call (Call and its upstream half, CallUpstream) uses of the worker it runs on, and
// nothing more: the event loop and random source, the counters and metrics it reports to, the
// retry context its attempts consult, the balancer that picks its nodes, and the few settings a
// reload changes. A call holds a reference to its worker's context; a test builds one from fakes.
//
//   CallContext context{loop, random, counters, metrics, retry, balancer};
//   context.nodes = &table;  // and the reloadable settings below
//   Call call(context, downstream, stream_id);
//
// Ownership: the Worker owns one (Worker::call_context()), made once; every member it refers to
// outlives it. The worker rewrites the reloadable members at each reload (on its thread), so a
// call reads them when it needs them rather than keeping a copy.
// Thread-safety: none; a context belongs to one worker's thread, like its calls.
#ifndef QPOOL_DAEMON_SERVER_CALL_CONTEXT_H_
#define QPOOL_DAEMON_SERVER_CALL_CONTEXT_H_

#include <cstddef>
#include <memory>

#include "daemon/auth/api_keys.h"
#include "daemon/common/event_loop.h"
#include "daemon/config/node_table.h"

namespace qpool::metrics {
class WorkerMetrics;  // worker_metrics.h
}  // namespace qpool::metrics

namespace qpool::pool {
class Balancer;  // balancer.h
}  // namespace qpool::pool

namespace qpool::retry {
struct RetryContext;  // retry_context.h
}  // namespace qpool::retry

namespace qpool::server {

struct ProxyCounters;  // proxy_counters.h

struct CallContext {
  EventLoop& loop;
  Random& random;
  ProxyCounters& counters;  // process-wide: calls started, local replies, bytes held
  metrics::WorkerMetrics& metrics;
  retry::RetryContext& retry;  // policy, classifier, budgets, replay limits (docs/retries.md)
  pool::Balancer& balancer;    // where each attempt goes (pool::Protocol::kGrpc)

  // Reloadable: set by the worker at start and at each reload. ------------------------------
  // The node slots (names for the access log); never null once the worker is made.
  const config::NodeTable* nodes = nullptr;
  // The first attempt starts once the request ended or holds this many bytes:
  // min(retry.replay_buffer_per_call, server.stream_window / 2) (CallUpstream::Start).
  size_t start_at_bytes = 0;
  // qpoold's API keys for the apps' calls (upstream.api_key_*); null when it holds none for them.
  auth::ApiKeyCache* call_keys = nullptr;
  auth::KeyMode key_mode = auth::KeyMode::kIfAbsent;  // upstream.api_key_mode
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_CALL_CONTEXT_H_
