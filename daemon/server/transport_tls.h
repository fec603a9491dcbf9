// The TLS half of an H2Transport (upstream connections to a node with upstream.tls.enabled): the
// tls::TlsEngine, which works on memory buffers, whether its client handshake is still under way,
// and the TLS records waiting for the socket. The transport's socket loop stays the same: what it
// reads passes through here before nghttp2, and the frames nghttp2 writes are sealed into records
// here before the socket.
//
//   tls_.Start(std::move(engine));                 // the ClientHello, in records()
//   absl::StatusOr<bool> done = tls_.TakeInput(data, n);   // true: the handshake just completed
//   tls_.Decrypt([&](const uint8_t* plain, size_t n) { return FeedNghttp2(plain, n); });
//   tls_.Seal(frames);                             // frames -> records()
//   tls_.CloseGracefully(std::move(socket));       // close_notify, bounded (graceful_close.h)
//
// It asks nothing of the transport; errors come back as statuses (each carrying its
// tls::FailureReason) for the transport to close with.
// Thread-safety: none; it belongs to one transport.
#ifndef QPOOL_DAEMON_SERVER_TRANSPORT_TLS_H_
#define QPOOL_DAEMON_SERVER_TRANSPORT_TLS_H_

#include <boost/asio/ip/tcp.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/server/wire_buffer.h"

namespace qpool::tls {
class TlsEngine;  // client_tls.h
}  // namespace qpool::tls

namespace qpool::server {

class TransportTls {
 public:
  TransportTls();
  ~TransportTls();

  TransportTls(const TransportTls&) = delete;
  TransportTls& operator=(const TransportTls&) = delete;

  // Whether the connection runs over TLS (until CloseGracefully).
  bool active() const { return engine_ != nullptr; }
  bool handshaking() const { return handshaking_; }
  tls::TlsEngine* engine() const { return engine_.get(); }
  // Records produced and not yet written to the socket.
  WireBuffer& records() { return records_; }

  // Starts the client handshake with `engine`: the ClientHello goes to records() at the next
  // Seal().
  absl::Status Start(std::unique_ptr<tls::TlsEngine> engine);
  // Takes bytes read from the socket. While the handshake is under way, advances it: true when it
  // completed with these bytes (the transport then starts HTTP/2), false otherwise.
  absl::StatusOr<bool> TakeInput(const uint8_t* data, size_t n);
  // Hands the plaintext of the whole records taken so far to `feed` (false: stop), 16 KiB at a
  // time. OK(false) when `feed` stopped.
  absl::StatusOr<bool> Decrypt(absl::FunctionRef<bool(const uint8_t* plain, size_t n)> feed);
  // Encrypts `frames` (then cleared) into records(), with whatever the engine has to send itself
  // (handshake messages, alerts).
  absl::Status Seal(WireBuffer& frames);
  // A gentle close (a drain finished): hands `socket`, the engine and the records not yet written
  // to tls::CloseGracefully, which sends them and a close_notify and closes the socket within
  // tls::kCloseNotifyTimeout. active() is false from then on.
  void CloseGracefully(boost::asio::ip::tcp::socket socket);

 private:
  std::unique_ptr<tls::TlsEngine> engine_;  // null: cleartext
  WireBuffer records_;
  bool handshaking_ = false;
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_TRANSPORT_TLS_H_
