// The qpoold proxy: the downstream listener, the I/O workers, and each worker's share of the
// upstream pool. main.cc creates one; integration tests create one in-process on port 0.
//
//   auto proxy = qpool::server::Proxy::Create(config);   // validates, allocates, binds nothing
//   QPOOL_RETURN_IF_ERROR((*proxy)->Start());            // binds, starts the worker threads
//   uint16_t port = (*proxy)->port();                    // the bound port (listen port 0 works)
//   (*proxy)->Shutdown();                                // graceful drain, then stop
//
// The proxy is also what the admin endpoint observes (metrics::AdminBackend): readiness, liveness
// and a scrape of every worker's counters and pool gauges.
//
// Thread-safety: Start, Shutdown and ShutdownNow are called from one controlling thread (main's, or
// the test's), never from a worker. port(), stats() and the AdminBackend methods may be called
// from any thread; the AdminBackend methods never block a worker (they post to it and wait, with
// a timeout, on their own thread).
#ifndef QPOOL_DAEMON_SERVER_PROXY_H_
#define QPOOL_DAEMON_SERVER_PROXY_H_

#include <array>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "daemon/config/config.h"
#include "daemon/metrics/admin_server.h"
#include "daemon/metrics/scrape.h"

namespace qpool::server {

class Resolver;

// Counters since start, for status pages, metrics and tests: the snapshot the scrape reads,
// declared once in the metrics library (below the server).
using ProxyStats = metrics::DownstreamCounts;

class Proxy : public metrics::AdminBackend {
 public:
  // kInvalidArgument when the config fails config::Validate(), or its TLS files or API keys
  // (upstream.tls, upstream.api_key_*) cannot be loaded; messages name the file or variable,
  // never a key.
  // `resolver`: DNS discovery's seam (upstream.dns_refresh); null: the system's (getaddrinfo).
  // With discovery on, the names in upstream.nodes are resolved here, on the calling thread.
  static absl::StatusOr<std::unique_ptr<Proxy>> Create(
      std::shared_ptr<const config::Config> config, std::shared_ptr<Resolver> resolver = nullptr);

  ~Proxy() override = default;

  // Binds the listener and starts the workers. kUnavailable when the address cannot be bound.
  virtual absl::Status Start() = 0;

  // The port the listener is bound to; 0 before Start().
  virtual uint16_t port() const = 0;

  // The port the REST listener (rest.listen) is bound to; 0 before Start() or when REST is off.
  virtual uint16_t rest_port() const = 0;

  // A snapshot of the counters; any thread.
  virtual ProxyStats stats() const = 0;

  // Graceful stop: closes the listener, sends GOAWAY to every app connection, lets in-flight calls
  // finish for up to server.drain_timeout, then closes everything and joins the workers. Blocks.
  // Returns OK when every call finished in time, kDeadlineExceeded when some were cut off.
  virtual absl::Status Shutdown() = 0;

  // Immediate stop: closes every connection and joins the workers. Idempotent; the destructor
  // calls it.
  virtual void ShutdownNow() = 0;

  // The start of server.drain_delay: /readyz answers 503 ("draining") from now on, while the
  // listener, the app connections and their calls carry on as before. Shutdown() does the rest.
  // Any thread; idempotent.
  virtual void MarkDraining() = 0;

  // admin.readiness_includes_upstream, changeable at run time (config reload). Any thread.
  virtual void SetReadinessIncludesUpstream(bool include) = 0;

  // A config reload (docs/operations.md, "Reload"): applies `config` as a whole, or nothing.
  // Checks it (config::Validate), loads the TLS files and API keys it names, builds the new node
  // set (nodes still listed keep their connections; new ones get pools; removed ones drain:
  // no new calls, those in flight and queued finish there), then hands the new snapshot to every
  // worker and waits (up to 5 s) until they took it; restarts the health checks when the node
  // set or health.* changed. Keys that need a restart (server.listen, server.workers,
  // rest.listen, admin.listen) are the caller's to refuse: they are ignored here. Errors leave
  // everything as it was: kInvalidArgument (a bad value, a file that does not load),
  // kFailedPrecondition (upstream.nodes emptied or set across the REST-only line),
  // kResourceExhausted (more than metrics::kMaxNodeSlots nodes, removed ones still draining
  // included). From one thread at a time (calls are serialized); not from a worker.
  virtual absl::Status Reconfigure(std::shared_ptr<const config::Config> config) = 0;
};

// Loads what Proxy::Create loads besides the config itself (TLS files, API keys), for
// --check-config: OK, or the first problem, naming the file or variable and never a key.
absl::Status CheckUpstreamSecrets(const config::Config& config);

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_PROXY_H_
