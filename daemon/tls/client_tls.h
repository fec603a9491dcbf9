// TLS to the Qdrant nodes: a client context per node (CA, verification name, client certificate,
// ALPN, resumption), and a TLS engine per connection that works on memory buffers, so the
// HTTP/2 transport keeps its own non-blocking socket loop and only passes bytes through it.
//
//   absl::StatusOr<std::shared_ptr<const ClientContext>> context =
//       ClientContext::Create(options, /*default_server_name=*/"qdrant-0.qdrant", "h2");
//   std::unique_ptr<TlsEngine> engine = (*context)->NewEngine();
//   engine->Handshake();            // ClientHello is now in engine->TakeOutput(...)
//   engine->FeedInput(bytes, n);    // what the socket read
//   engine->Handshake();            // true once done; an error names its FailureReason
//
// A failure carries its reason (FailureReasonOf) for qpool_upstream_tls_failures_total{reason}
// and for the message: expired, unknown_ca, name_mismatch, verify (another certificate problem),
// client_cert (the node wants a client certificate, or refused ours), alpn (the node does not
// speak HTTP/2 over TLS), handshake (anything else).
//
// Thread-safety: a ClientContext is immutable apart from its resumption slot (mutex-guarded) and
// may be shared by every worker. A TlsEngine belongs to one connection, on one thread.
#ifndef QPOOL_DAEMON_TLS_CLIENT_TLS_H_
#define QPOOL_DAEMON_TLS_CLIENT_TLS_H_

#include <openssl/ssl.h>

#include <boost/asio/ssl/context.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "daemon/config/config.h"
#include "daemon/tls/failure_reason.h"

namespace qpool::tls {

class TlsEngine;

class ClientContext : public std::enable_shared_from_this<ClientContext> {
 public:
  // `default_server_name`: the node's host, used when options.server_name is empty. `alpn`: the
  // one protocol offered ("h2" for gRPC, "http/1.1" for REST). "h2" must be agreed; for
  // "http/1.1" a server that selects no protocol (no ALPN support) is accepted, another one is not.
  // Fails with kInvalidArgument naming the file and OpenSSL's reason when a CA, certificate or key
  // cannot be loaded, or the key does not match the certificate.
  static absl::StatusOr<std::shared_ptr<const ClientContext>> Create(
      const config::TlsOptions& options, const std::string& default_server_name, std::string alpn);
  ~ClientContext();

  ClientContext(const ClientContext&) = delete;
  ClientContext& operator=(const ClientContext&) = delete;

  // A client engine for one new connection, offering the last session this context saw for
  // resumption. kInternal only when OpenSSL is out of memory.
  absl::StatusOr<std::unique_ptr<TlsEngine>> NewEngine() const;

  const std::string& server_name() const { return server_name_; }
  const std::string& alpn() const { return alpn_; }
  bool verify() const { return verify_; }

 private:
  friend class TlsEngine;
  ClientContext(std::string server_name, std::string alpn, bool verify);
  static int OnNewSession(SSL* ssl, SSL_SESSION* session);
  void StoreSession(SSL_SESSION* session) const;

  boost::asio::ssl::context context_;
  const std::string server_name_;
  const std::string alpn_;
  const bool verify_;
  mutable absl::Mutex mu_;
  mutable SSL_SESSION* session_ ABSL_GUARDED_BY(mu_) = nullptr;  // for resumption; owned
};

// One client TLS connection over memory buffers: the caller moves bytes between the engine and
// the socket. Keeps its ClientContext alive.
class TlsEngine {
 public:
  ~TlsEngine();
  TlsEngine(const TlsEngine&) = delete;
  TlsEngine& operator=(const TlsEngine&) = delete;

  // Bytes read from the socket.
  void FeedInput(const uint8_t* data, size_t len);
  // Advances the handshake: true once it is complete (ALPN agreed, certificate verified), false
  // while it needs more input (send TakeOutput() first). An error is kUnavailable with a reason.
  absl::StatusOr<bool> Handshake();
  // Decrypts into `buffer`: the byte count, 0 when no whole record is buffered. kUnavailable with
  // a reason when the peer sent an alert (a refused client certificate shows up here, after the
  // client's side of a TLS 1.3 handshake is done) or closed the connection.
  absl::StatusOr<size_t> Read(uint8_t* buffer, size_t capacity);
  // Encrypts all of `data` (the output buffer grows as needed).
  absl::Status Write(const uint8_t* data, size_t len);
  // Appends the bytes waiting for the socket to `out`.
  void TakeOutput(std::vector<uint8_t>& out);
  // Ends the connection cleanly from our side: queues a TLS close_notify alert (TakeOutput sends
  // it); no Write after it. The session stays resumable. kFailedPrecondition before the handshake
  // finished or after a TLS failure (nothing clean to say then).
  absl::Status Shutdown();
  bool HasOutput() const;

  // After the handshake: whether the session was resumed, and the protocol agreed.
  bool resumed() const;
  std::string_view alpn_selected() const;
  // The node's certificate, for the debug log: "subject CN=qdrant-0, serial 1001, TLSv1.3".
  std::string PeerSummary() const;

 private:
  friend class ClientContext;
  TlsEngine(std::shared_ptr<const ClientContext> context, SSL* ssl);
  absl::Status Failure(int ssl_result, std::string_view during);

  std::shared_ptr<const ClientContext> context_;
  SSL* ssl_;
  BIO* network_in_;   // owned by ssl_
  BIO* network_out_;  // owned by ssl_
  bool handshake_done_ = false;
  bool failed_ = false;  // a TLS error (not a clean close): the session is not offered again
};

}  // namespace qpool::tls

#endif  // QPOOL_DAEMON_TLS_CLIENT_TLS_H_
