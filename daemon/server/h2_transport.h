// One TCP connection carrying one nghttp2 session: the shared I/O half of the app-facing
// DownstreamSession and the Qdrant-facing UpstreamConnection. Its parts, each in a file of its
// own:
//   H2Session (h2_session.h)        the nghttp2 session, its allocator and idle-page release, the
//                                   shared session options and connection window (the base class:
//                                   subclasses use session_ and those helpers directly)
//   WireBuffer (wire_buffer.h)      bytes waiting for the socket, written without blocking
//   TransportTls (transport_tls.h)  the TLS engine, its handshake and the records it produced
// This class is the socket loop between them.
//
// Reading: the transport waits for readability, then reads with non-blocking read_some into the
// worker's shared read buffer and feeds nghttp2_session_mem_recv(); an idle connection therefore
// owns no read buffer. Writing: whatever nghttp2_session_mem_send() produces in one turn of the
// loop is gathered into one buffer (at most kMaxWriteBatch) and written with one syscall; the rest
// waits until the socket is writable again, so a slow peer makes nghttp2 hold back rather than
// qpoold buffer without bound.
//
// Never call Flush() from inside an nghttp2 callback: callbacks call ScheduleFlush(), which runs
// Flush() once, after the current event.
//
// TLS (upstream connections to a node with upstream.tls.enabled): StartTls() hands the transport
// a tls::TlsEngine that works on memory buffers; the socket loop stays the same, reads pass
// through the engine before nghttp2 and writes after it. Without an engine the cleartext path
// costs one pointer test per read.
//
// Lifetime: owned by shared_ptr; pending I/O holds a reference. CloseTransport() closes the socket,
// reports OnTransportClosed() once, and leaves the nghttp2 session untouched until destruction.
// Over TLS, a close with an OK reason (a drain that finished) hands the socket and the TLS engine
// to tls::CloseGracefully, which sends what is still owed and a close_notify and closes the socket
// within tls::kCloseNotifyTimeout; the transport reports its close at once all the same (its
// tls() is null from then on).
// Thread-safety: none; a transport lives on one worker's thread.
#ifndef QPOOL_DAEMON_SERVER_H2_TRANSPORT_H_
#define QPOOL_DAEMON_SERVER_H2_TRANSPORT_H_

#include <nghttp2/nghttp2.h>

#include <boost/asio/ip/tcp.hpp>
#include <memory>

#include "absl/status/status.h"
#include "daemon/server/connection_context.h"
#include "daemon/server/h2_session.h"
#include "daemon/server/transport_tls.h"
#include "daemon/server/wire_buffer.h"

namespace qpool::server {

class H2Transport : public H2Session, public std::enable_shared_from_this<H2Transport> {
 public:
  static constexpr size_t kMaxWriteBatch = 64 * 1024;

  // `context` (its worker's) must outlive the transport.
  H2Transport(ConnectionContext& context, boost::asio::ip::tcp::socket socket);
  virtual ~H2Transport();

  // Runs Flush() after the current event, once however often it is called.
  void ScheduleFlush();

  bool closed() const { return closed_; }
  // Whether the connection runs over TLS (requests then say `:scheme: https`).
  bool secure() const { return tls_.active(); }
  // What the connection uses of its worker (connection_context.h).
  ConnectionContext& context() const { return context_; }

 protected:
  // Starts the read loop; the subclass has created session_ first.
  void StartReading();
  // Starts a TLS client handshake on the connected socket, and the read loop. When it completes,
  // OnTlsHandshakeDone() runs (create session_ there); when it fails, CloseTransport(reason).
  void StartTls(std::unique_ptr<tls::TlsEngine> engine);
  virtual void OnTlsHandshakeDone() {}
  tls::TlsEngine* tls() const { return tls_.engine(); }
  // Sends what nghttp2 has queued; closes the transport when nghttp2 wants neither to read nor to
  // write any more (GOAWAY exchanged and no streams left).
  void Flush();
  // Idempotent. Reports OnTransportClosed(reason) once. An OK `reason` over TLS closes gently
  // (close_notify, see above); any other closes the socket at once.
  void CloseTransport(const absl::Status& reason);
  // Writes what nghttp2 has queued (a final GOAWAY) as far as the socket takes it now, without
  // waiting for a peer that does not read, then closes. From inside an nghttp2 callback, input
  // stops at once (return NGHTTP2_ERR_CALLBACK_FAILURE from the callback) and the rest happens
  // when nghttp2 has returned.
  void FlushAndClose(const absl::Status& reason);
  // An idle connection's memory goes back: the write buffer is freed when nothing waits in it,
  // and the session's idle pages too when nghttp2 has nothing queued either
  // (H2Session::ReleaseIdleSessionPages).
  void TrimIdleMemory();

  // The first bytes arrived and session_ is still null: creates it (a subclass that creates its
  // session late, once the peer has spoken). False when the transport closed instead; the default
  // closes it.
  virtual bool CreateSessionLate();
  // Called once, from CloseTransport.
  virtual void OnTransportClosed(const absl::Status& reason) = 0;
  // nghttp2_session_mem_recv() failed: the peer broke the protocol. The default closes.
  virtual void OnProtocolError(int nghttp2_error);

  boost::asio::ip::tcp::socket socket_;

 private:
  void WaitReadable();
  void OnReadable(const boost::system::error_code& ec);
  void OnWritable(const boost::system::error_code& ec);
  // Takes `n` bytes read from the socket (through TLS when there is an engine) to nghttp2; false
  // when reading stops (the transport closed, or is closing).
  bool Receive(const uint8_t* data, size_t n);

  ConnectionContext& context_;
  WireBuffer out_;    // frames gathered from nghttp2 (cleartext: what the socket gets)
  TransportTls tls_;  // inactive: cleartext
  bool flush_posted_ = false;
  bool in_read_ = false;  // inside nghttp2_session_mem_recv: a Flush() follows
  bool waiting_writable_ = false;
  bool reading_ = false;
  bool closed_ = false;
  bool close_pending_ = false;  // FlushAndClose() from inside nghttp2: done after mem_recv
  absl::Status close_reason_;
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_H2_TRANSPORT_H_
