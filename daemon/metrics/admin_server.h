// The admin HTTP endpoint, on its own port (admin.listen) and its own thread, served with
// Boost.Beast:
//
//   GET /metrics   Prometheus text format: qpool_*, process_*, qpool_build_info
//   GET /livez     200 when the process and every I/O worker's event loop answer; never asks Qdrant
//   GET /readyz    200 when started, not draining, and some upstream node is usable; else 503
//   GET /startupz  200 once the config is loaded and the listeners are bound; else 503
//   GET /pool      JSON: per node (and per worker) connections by state, streams, calls waiting
//   POST /quitquitquit  loopback peers only (else 403): starts the same drain as SIGTERM
//                       (options.on_quit); 200 at once, qpoold exits 0 once drained. Other
//                       methods: 405.
//
//   auto admin = AdminServer::Start("127.0.0.1", 6336, backend, QPOOL_VERSION);
//   uint16_t port = (*admin)->port();   // the bound port (0 in config picks one)
//   (*admin)->Stop();                   // also done by the destructor
//
// Every endpoint but /quitquitquit only reads state; /quitquitquit answers 403 to any peer that is
// not a loopback address (127.0.0.0/8, ::1, or ::ffff:127.x.x.x on a dual-stack listener), and to
// a request with an Origin header (a browser's cross-site POST from a page on the same host).
// An IPv6 wildcard host ("::") listens dual-stack (IPV6_V6ONLY off), so "[::]:6336" serves IPv4
// and IPv6 clients alike.
// Thread-safety: Start/Stop from one controlling thread. The backend is called on the admin
// thread only, one request at a time, and must not block longer than the timeouts it is given.
#ifndef QPOOL_DAEMON_METRICS_ADMIN_SERVER_H_
#define QPOOL_DAEMON_METRICS_ADMIN_SERVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "daemon/metrics/reload_metrics.h"
#include "daemon/metrics/scrape.h"

namespace qpool::metrics {

// What the admin endpoint asks the process. Implemented by server::Proxy.
class AdminBackend {
 public:
  virtual ~AdminBackend() = default;
  // Listeners bound and workers running.
  virtual bool Started() const = 0;
  // Empty when ready; otherwise why not ("starting", "draining", "no usable upstream node").
  virtual std::string NotReadyReason() const = 0;
  // True when every I/O worker ran a posted no-op within `timeout`.
  virtual bool Live(absl::Duration timeout) = 0;
  // Counters now, and pool gauges from the workers that answer within `timeout`.
  virtual ScrapeInput Scrape(absl::Duration timeout) = 0;
};

struct AdminServerOptions {
  std::string host = "127.0.0.1";                           // an IP literal
  uint16_t port = 6336;                                     // 0 picks a free port
  std::string version;                                      // qpool_build_info{version}
  absl::Duration worker_timeout = absl::Milliseconds(250);  // for Live() and Scrape()
  // Called on the admin thread by POST /quitquitquit from a loopback peer; must not block. Unset:
  // /quitquitquit answers 404.
  std::function<void()> on_quit;
  // When set, /metrics adds qpool_config_reloads_total and its timestamp. Must outlive the server.
  const ConfigReloadMetrics* reloads = nullptr;
};

class AdminServer {
 public:
  // Binds and starts the admin thread; kUnavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<AdminServer>> Start(const AdminServerOptions& options,
                                                            AdminBackend& backend);
  virtual ~AdminServer() = default;
  virtual uint16_t port() const = 0;
  // Closes the listener and every admin connection, and joins the thread. Idempotent.
  virtual void Stop() = 0;
};

// The text of a /metrics answer (exposed for tests and the benchmark).
std::string RenderMetrics(AdminBackend& backend, const AdminServerOptions& options);

}  // namespace qpool::metrics

#endif  // QPOOL_DAEMON_METRICS_ADMIN_SERVER_H_
