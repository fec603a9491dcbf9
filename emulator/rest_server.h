// qdrant-emulator's REST front: Qdrant's HTTP/1.1 JSON API (RestApi) on its own TCP port, over
// the same Storage as the gRPC front, with the same fault injection and call accounting.
//
// HTTP with Boost.Beast: keep-alive, pipelining, Content-Length and chunked request bodies,
// `Expect: 100-continue`, gzip or deflate `Content-Encoding` request bodies, gzip answers when
// Accept-Encoding allows (RestServerOptions::gzip_answers); the same over TLS on a second port when
// RestServerOptions::tls_cert_file is set (ALPN http/1.1, or none; certificate files re-read every
// tls_reload_seconds; handshakes and how clients closed counted in FaultInjector). Limits: 64 KiB
// of headers (431 beyond), `max_body_bytes` of body, before or after inflating (413 beyond); bytes
// that are not HTTP/1.x (garbage, an HTTP/2 preface, TLS) get a 400 and the connection closes.
//
// Faults, per request of a known route, keyed by the gRPC method the route mirrors (RestCall):
// delay and jitter on a timer, hang (parked until released), injected errors as Qdrant's error
// shape with the HTTP status of the code (UNAVAILABLE 503, RESOURCE_EXHAUSTED 429 +
// Retry-After, ...), before or after the handler. Closing connections: kGoaway answers the
// current requests with `Connection: close` and closes idle connections now; kAbrupt resets every
// REST connection (SO_LINGER 0) without an answer.
//
//   auto rest = RestServer::Start({.listen = "127.0.0.1:0"}, storage, handler_options, faults);
//   std::cout << (*rest)->address();
//
// Thread-safety: all public methods are thread-safe. One I/O thread serves every connection;
// handlers run on it.
#ifndef QPOOL_EMULATOR_REST_SERVER_H_
#define QPOOL_EMULATOR_REST_SERVER_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "emulator/faults.h"
#include "emulator/front.h"
#include "emulator/handlers.h"
#include "emulator/storage.h"

namespace qpool::emulator {

struct RestServerOptions {
  std::string listen = "127.0.0.1:6333";  // HOST:PORT; port 0 picks a free port.
  // As ServerOptions::api_key: when set, every route but GET /, /healthz, /livez and /readyz
  // needs header `api-key: KEY` or `Authorization: Bearer KEY` (401 otherwise).
  std::string api_key;
  // With api_key: a key for reads only; a write with it is answered 403, as Qdrant's
  // service.read_only_api_key. Every keyed request is counted by key (FaultInjector::CountKey).
  std::string read_only_api_key;
  // TLS: when tls_cert_file is set, the REST API is also served over TLS on tls_listen ("...:0"
  // picks a free port), with that PEM chain and key; with tls_client_ca_file a client certificate
  // signed by that CA is required. tls_alpn: agree to ALPN http/1.1 when offered (as Qdrant's
  // actix-web does); false: take no part in ALPN, as a server without ALPN support.
  std::string tls_listen = "127.0.0.1:0";
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  bool tls_alpn = true;
  // Every this many seconds the TLS files are read again; when their contents changed, a new TLS
  // context is built from them and new connections get it (open ones keep theirs), as Qdrant's
  // tls.cert_ttl reloads the HTTPS certificate. The new context has a new session cache and new
  // ticket keys, so a client cannot resume a session from before: its next handshake is a full
  // one, shown the new chain. Files that do not load (a key not matching its certificate, halfway
  // through a rotation) keep the previous context, tried again when they change. 0: read once.
  int tls_reload_seconds = 0;
  // Largest request body, compressed or inflated; Qdrant's default max_request_size_mb is 32.
  size_t max_body_bytes = 32u << 20;
  // A keep-alive connection idle this long between requests is closed; zero: never.
  absl::Duration idle_timeout = absl::ZeroDuration();
  // Answers are gzip-compressed when the request's Accept-Encoding allows gzip, as Qdrant's
  // `Compress` middleware does (with `Vary: accept-encoding`); off: always identity.
  bool gzip_answers = true;
};

class RestServer : public Front {
 public:
  // `storage` and `faults` must outlive the server.
  static absl::StatusOr<std::unique_ptr<RestServer>> Start(const RestServerOptions& options,
                                                           Storage& storage,
                                                           const HandlerOptions& handlers,
                                                           FaultInjector& faults);
  ~RestServer() override;  // Shutdown().

  // Front; parked requests are answered 503 at Shutdown().
  const std::string& address() const override;
  const std::string& tls_address() const override;
  void CloseConnections(CloseMode mode) override;
  void ReleaseParkedCalls() override;
  void Shutdown() override;

  class Impl;

 private:
  explicit RestServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace qpool::emulator

#endif  // QPOOL_EMULATOR_REST_SERVER_H_
