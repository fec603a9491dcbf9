// One TCP connection carrying one nghttp2 session: the shared I/O half of the app-facing
// DownstreamSession and the Qdrant-facing UpstreamConnection.
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
#include <vector>

#include "absl/status/status.h"
#include "daemon/server/connection_context.h"
#include "daemon/server/small_alloc.h"

namespace qpool::tls {
class TlsEngine;
}  // namespace qpool::tls

namespace qpool::server {

class H2Transport : public std::enable_shared_from_this<H2Transport> {
 public:
  static constexpr size_t kMaxWriteBatch = 64 * 1024;

  // `context` (its worker's) must outlive the transport.
  H2Transport(ConnectionContext& context, boost::asio::ip::tcp::socket socket);
  virtual ~H2Transport();

  H2Transport(const H2Transport&) = delete;
  H2Transport& operator=(const H2Transport&) = delete;

  // Runs Flush() after the current event, once however often it is called.
  void ScheduleFlush();

  bool closed() const { return closed_; }
  // Whether the connection runs over TLS (requests then say `:scheme: https`).
  bool secure() const { return tls_ != nullptr; }
  // TLS: whether the client's side of the handshake has completed.
  bool tls_established() const { return tls_ != nullptr && !tls_handshaking_; }
  nghttp2_session* session() const { return session_; }
  // What the connection uses of its worker (connection_context.h).
  ConnectionContext& context() const { return context_; }

 protected:
  // Starts the read loop; the subclass has created session_ first.
  void StartReading();
  // Starts a TLS client handshake on the connected socket, and the read loop. When it completes,
  // OnTlsHandshakeDone() runs (create session_ there); when it fails, CloseTransport(reason).
  void StartTls(std::unique_ptr<tls::TlsEngine> engine);
  virtual void OnTlsHandshakeDone() {}
  tls::TlsEngine* tls() const { return tls_.get(); }
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
  // and the pages of nghttp2's frame buffer and empty stream map (when the session was created
  // with session_allocator() and wrote frames since the last trim) are handed back to the
  // kernel when nghttp2 has nothing queued either (small_alloc.h, ReleaseIdlePages).
  void TrimIdleMemory();
  // An allocator for nghttp2_session_*_new3 that lets TrimIdleMemory() find those blocks. Until
  // SessionCreated(), nghttp2's blocks (those it keeps for the session's lifetime) come from the
  // session slabs (small_alloc.h), so that they go back to the kernel once a crowd leaves.
  nghttp2_mem session_allocator() {
    session_pages_.from_slabs = true;
    return Nghttp2SessionAlloc(&session_pages_);
  }
  // nghttp2_session_*_new3 returned: the session's later blocks come from the cache.
  void SessionCreated() { session_pages_.from_slabs = false; }

  // nghttp2 options both sides share: no automatic WINDOW_UPDATE, since calls acknowledge bytes as
  // they pass them on. The caller deletes the option after creating its session.
  static nghttp2_option* NewSessionOption();
  // Connection-level flow control: the peer may send `window` bytes the connection has not
  // acknowledged yet. Call once session_ exists.
  void OpenConnectionWindow(int32_t window);
  // The upstream side's connection window (1 GiB): received bytes are acknowledged on the
  // connection at once and held back per stream until the app takes them, so one slow call never
  // stalls the others sharing the connection (the app side bounds what it holds).
  static constexpr int32_t kUnboundedConnectionWindow = 1 << 30;
  // For the upstream side's DATA chunk callback: acknowledges `len` bytes on the connection, and
  // on the stream too when no attempt holds it (it let go; a reset is on its way). Returns the
  // stream's user data.
  static void* TakeDataChunk(nghttp2_session* session, int32_t stream_id, size_t len);

  // The first bytes arrived and session_ is still null: creates it (a subclass that creates its
  // session late, once the peer has spoken). False when the transport closed instead; the default
  // closes it.
  virtual bool CreateSessionLate();
  // Called once, from CloseTransport.
  virtual void OnTransportClosed(const absl::Status& reason) = 0;
  // nghttp2_session_mem_recv() failed: the peer broke the protocol. The default closes.
  virtual void OnProtocolError(int nghttp2_error);

  boost::asio::ip::tcp::socket socket_;
  nghttp2_session* session_ = nullptr;

 private:
  void WaitReadable();
  void OnReadable(const boost::system::error_code& ec);
  void WaitWritable();
  void OnWritable(const boost::system::error_code& ec);
  // Writes the wire bytes (out_, or tls_out_ with TLS) without blocking; false when the socket
  // failed (closed then).
  bool WriteSome();
  // Bytes produced and not yet written (cleartext: tls_out_ stays empty).
  size_t Pending() const { return out_.size() - out_offset_ + tls_out_.size() - tls_out_offset_; }
  // TLS: takes `n` bytes read from the socket; false when the transport closed.
  bool OnTlsBytes(const uint8_t* data, size_t n);

  ConnectionContext& context_;
  std::vector<uint8_t> out_;
  size_t out_offset_ = 0;
  std::unique_ptr<tls::TlsEngine> tls_;  // null: cleartext
  std::vector<uint8_t> tls_out_;         // TLS records waiting for the socket
  size_t tls_out_offset_ = 0;
  bool tls_handshaking_ = false;
  // session_allocator()'s; outlives session_ (the destructor's body deletes it).
  SessionPages session_pages_;
  bool frames_written_ = false;  // nghttp2 wrote frames since the last TrimIdleMemory()
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
