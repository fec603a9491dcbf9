// What a connection (DownstreamSession, UpstreamConnection and their H2Transport) uses of the
// worker it lives on, and nothing more: the io_context its socket and timers are bound to, the
// event loop's clock, the counters and metrics it reports to, the read buffer all of the worker's
// connections share, the context an app connection hands its calls (CallContext), the fast tier's
// PING intervals (NodeProbes), the config in force, and the few things it asks of its owner
// (ConnectionHost). A connection never sees the Worker.
//
//   const config::ServerConfig& server = context().config->server;
//   auto session = std::make_shared<DownstreamSession>(connection_context, std::move(socket));
//
// Ownership: the Worker owns one (Worker::connection_context()), made once; every member it
// refers to outlives it. The worker points `config` at the new config at each reload (on its
// thread), so a connection reads it when it needs it rather than keeping a copy.
// Thread-safety: none; a context belongs to one worker's thread, like its connections.
#ifndef QPOOL_DAEMON_SERVER_CONNECTION_CONTEXT_H_
#define QPOOL_DAEMON_SERVER_CONNECTION_CONTEXT_H_

#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "daemon/common/event_loop.h"

namespace qpool::config {
struct Config;  // config.h
}  // namespace qpool::config

namespace qpool::metrics {
class WorkerMetrics;  // worker_metrics.h
}  // namespace qpool::metrics

namespace qpool::tls {
class ClientContext;  // client_tls.h
}  // namespace qpool::tls

namespace qpool::server {

struct CallContext;  // call_context.h
class DownstreamSession;
class NodeProbes;      // node_probes.h
struct ProxyCounters;  // proxy_counters.h

// What a connection asks of the worker that owns it (the Worker implements it).
class ConnectionHost {
 public:
  // App connection `session` closed (it has ended its calls): the owner lets go of it, after the
  // current event.
  virtual void OnSessionClosed(DownstreamSession* session) = 0;
  // Node slot `node`'s TLS context for a new upstream connection; null: cleartext.
  virtual std::shared_ptr<const tls::ClientContext> TlsContextOf(size_t node) const = 0;

 protected:
  ~ConnectionHost() = default;
};

struct ConnectionContext {
  boost::asio::io_context& io;  // run by the worker's thread alone
  EventLoop& loop;
  ProxyCounters& counters;  // process-wide
  metrics::WorkerMetrics& metrics;
  // Shared by all of the worker's connections: a read is consumed by nghttp2 before the next one
  // starts.
  std::vector<uint8_t>& read_buffer;
  CallContext& calls;  // what each call an app connection opens runs with
  NodeProbes& probes;  // upstream connections: the PING interval per node slot, and its back-off
  ConnectionHost& host;

  // Reloadable: set by the worker at start and at each reload; never null once the worker is
  // made.
  const config::Config* config = nullptr;
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_CONNECTION_CONTEXT_H_
