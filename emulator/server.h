// qdrant-emulator's gRPC front: Qdrant's Qdrant, Collections, Points (and, answering
// UNIMPLEMENTED, Snapshots) services plus grpc.health.v1.Health on one TCP port, with fault
// injection around every implemented method.
//
// The emulator accepts TCP connections itself and hands each socket to a gRPC C++ callback server
// (grpc::AddInsecureChannelFromFd). Owning the sockets is what lets it close connections on
// purpose: "goaway" moves new connections to a fresh gRPC server and shuts the old one down
// (HTTP/2 GOAWAY, in-flight calls complete within a grace period); "abrupt" shuts the sockets down
// (no GOAWAY; FIN then RST).
//
//   auto server = EmulatorServer::Start(options, storage, faults);
//   std::cout << (*server)->address();
//   (*server)->CloseConnections(CloseMode::kGoaway);
//
// Thread-safety: all public methods are thread-safe.
#ifndef QPOOL_EMULATOR_SERVER_H_
#define QPOOL_EMULATOR_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "emulator/faults.h"
#include "emulator/front.h"
#include "emulator/handlers.h"
#include "emulator/storage.h"

namespace qpool::emulator {

struct ServerOptions {
  std::string listen = "127.0.0.1:6334";  // HOST:PORT; port 0 picks a free port.
  // HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS announced to clients; 0 = no limit (as Qdrant).
  int max_concurrent_streams = 0;
  // How long calls on a connection that got GOAWAY may still run before they are cancelled.
  absl::Duration goaway_grace = absl::Seconds(5);
  // When set, every call but the two health checks needs metadata `api-key` equal to it, else
  // UNAUTHENTICATED, as Qdrant with service.api_key does. Empty: no authentication.
  std::string api_key;
  // With api_key: a second key that may call reads only; a write with it is answered
  // PERMISSION_DENIED, as Qdrant's service.read_only_api_key. The health methods need no key.
  std::string read_only_api_key;
  // TLS: when tls_cert_file is set, the emulator also serves gRPC over TLS (ALPN h2) on
  // tls_listen ("127.0.0.1:0" picks a free port), with that PEM certificate chain and key. With
  // tls_client_ca_file, a client certificate signed by that CA is required (mTLS). The TLS port
  // takes no part in the connection faults (goaway / abrupt closes act on the cleartext port).
  std::string tls_listen = "127.0.0.1:0";
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  // When > 0, the certificate, key (and client CA) files are watched and re-read every this many
  // seconds (gRPC's experimental FileWatcherCertificateProvider): new connections present the new
  // chain. 0: read once (SslServerCredentials).
  int tls_reload_seconds = 0;
  HandlerOptions handlers;
};

class EmulatorServer : public Front {
 public:
  // `storage` and `faults` must outlive the server.
  static absl::StatusOr<std::unique_ptr<EmulatorServer>> Start(const ServerOptions& options,
                                                               Storage& storage,
                                                               FaultInjector& faults);
  ~EmulatorServer() override;  // Shutdown().

  // Front; kGoaway moves new connections to a fresh gRPC server, Shutdown() stops the gRPC
  // servers.
  const std::string& address() const override;
  const std::string& tls_address() const override;
  void CloseConnections(CloseMode mode) override;
  void ReleaseParkedCalls() override;
  void Shutdown() override;

  class Impl;

 private:
  explicit EmulatorServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace qpool::emulator

#endif  // QPOOL_EMULATOR_SERVER_H_
