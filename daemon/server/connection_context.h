// What a connection (DownstreamSession, UpstreamConnection and their H2Transport) uses of the
// worker it lives on, besides its calls (CallContext) and probes (NodeProbes): the io_context its
// socket and timers are bound to, the event loop's clock, the counters and metrics it reports
// to, the read buffer all of the worker's connections share, and the config in force.
//
//   const config::ServerConfig& server = worker().connection_context().config->server;
//
// Ownership: the Worker owns one (Worker::connection_context()), made once; every member it
// refers to outlives it. The worker points `config` at the new config at each reload (on its
// thread), so a connection reads it when it needs it rather than keeping a copy.
// Thread-safety: none; a context belongs to one worker's thread, like its connections.
#ifndef QPOOL_DAEMON_SERVER_CONNECTION_CONTEXT_H_
#define QPOOL_DAEMON_SERVER_CONNECTION_CONTEXT_H_

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <vector>

#include "daemon/common/event_loop.h"

namespace qpool::config {
struct Config;  // config.h
}  // namespace qpool::config

namespace qpool::metrics {
class WorkerMetrics;  // worker_metrics.h
}  // namespace qpool::metrics

namespace qpool::server {

struct ProxyCounters;  // proxy_counters.h

struct ConnectionContext {
  boost::asio::io_context& io;  // run by the worker's thread alone
  EventLoop& loop;
  ProxyCounters& counters;  // process-wide
  metrics::WorkerMetrics& metrics;
  // Shared by all of the worker's connections: a read is consumed by nghttp2 before the next one
  // starts.
  std::vector<uint8_t>& read_buffer;

  // Reloadable: set by the worker at start and at each reload; never null once the worker is
  // made.
  const config::Config* config = nullptr;
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_CONNECTION_CONTEXT_H_
