// A pooled HTTP/2 client connection to one Qdrant node: TCP connect (with timeout), the HTTP/2
// handshake, and the upstream half of every call riding on it. It reports its life to its
// NodePool through PoolConnectionEvents.
//
// Health, fast tier: once connected, a connection that received no frame for health.fast_interval
// sends an HTTP/2 PING; no ack within health.fast_timeout closes it (OnClosed with UNAVAILABLE, so
// the pool opens a replacement when it needs one). A GOAWAY ENHANCE_YOUR_CALM "too_many_pings"
// doubles the node's PING interval on this worker (NodeProbes::BackOffPings).
// Health, medium and deep tiers: a probe (ProbeStream) opens a stream of its own on a pooled
// connection, like a call does, but outside the Call machinery.
// TLS (upstream.tls): after the TCP connect comes the TLS handshake (ALPN h2, the node's
// certificate checked), inside upstream.connect_timeout; a failure is a connect failure whose
// status carries its tls::FailureReason.
// Thread-safety: none; lives on one worker's thread.
#ifndef QPOOL_DAEMON_SERVER_UPSTREAM_CONNECTION_H_
#define QPOOL_DAEMON_SERVER_UPSTREAM_CONNECTION_H_

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "daemon/config/config.h"
#include "daemon/pool/node_pool.h"
#include "daemon/server/call_upstream.h"
#include "daemon/server/h2_transport.h"

namespace qpool::server {

// A stream qpoold opens for itself (a health probe), not for an app's call. Its request body is
// `request_body`, sent whole. Exactly one OnProbeClosed ends it, unless the probe resets it
// first (UpstreamConnection::ResetProbe), after which nothing more is called.
class ProbeStream {
 public:
  virtual ~ProbeStream() = default;
  // Response headers and trailers alike.
  virtual void OnProbeHeader(std::string_view name, std::string_view value) = 0;
  virtual void OnProbeData(const uint8_t* data, size_t len) = 0;
  virtual void OnProbeClosed(uint32_t h2_error_code, bool connection_lost) = 0;

  std::string request_body;
  size_t request_sent = 0;
};

// What OnUpstreamClosed reports as the close code of a request the upstream session itself would
// not send (nghttp2 refuses a header block over its 64 KiB send limit, and closes the stream as
// REFUSED_STREAM "so that the application can send it again"): the request never left qpoold, but
// Qdrant did not refuse it either, and sending it again would fail the same way. Outside the
// HTTP/2 error code range.
inline constexpr uint32_t kRequestNotSent = 0x7fff0001;

class UpstreamConnection : public H2Transport, public pool::PoolConnection {
 public:
  // `node_index`: the node's position in upstream.nodes (for the worker's per-node state).
  UpstreamConnection(ConnectionContext& context, const config::NodeAddress& node, size_t node_index,
                     pool::PoolConnectionEvents& events);
  ~UpstreamConnection() override;

  // Resolves, connects and starts the HTTP/2 handshake; reports OnConnected or OnConnectFailed
  // later, never from inside Connect.
  void Connect();

  // Opens `stream` (a call's attempt) with request headers `nva`. With `has_body` the body is
  // pulled from the call's data source; otherwise the HEADERS frame ends the stream. Returns the
  // stream id, or a negative nghttp2 error.
  int32_t SubmitRequest(Attempt& stream, const nghttp2_nv* nva, size_t nvlen, bool has_body);
  // Cancels a stream and forgets its call's Attempt; no further events reach the call.
  void ResetStream(int32_t stream_id, uint32_t h2_error_code);
  // The call has more request body (or its end) for the stream.
  void ResumeRequestData(int32_t stream_id);
  // The call passed `n` response bytes on: let the peer send that much more on the stream.
  void ConsumeResponseData(int32_t stream_id, size_t n);

  // Opens a stream for a health probe, as SubmitRequest does for a call. Returns the stream id,
  // or a negative nghttp2 error.
  int32_t SubmitProbe(ProbeStream& probe, const nghttp2_nv* nva, size_t nvlen);
  // Cancels a probe's stream; the probe hears nothing more.
  void ResetProbe(int32_t stream_id);

  const std::string& node_name() const { return node_name_; }
  size_t node_index() const { return node_index_; }

  // pool::PoolConnection.
  void Drain() override;
  void Abort() override;

 private:
  static nghttp2_session_callbacks* Callbacks();
  static int OnHeaderCallback(nghttp2_session*, const nghttp2_frame*, nghttp2_rcbuf*,
                              nghttp2_rcbuf*, uint8_t, void*);
  static int OnFrameRecvCallback(nghttp2_session*, const nghttp2_frame*, void*);
  static int OnDataChunkRecvCallback(nghttp2_session*, uint8_t, int32_t, const uint8_t*, size_t,
                                     void*);
  static int OnStreamCloseCallback(nghttp2_session*, int32_t, uint32_t, void*);
  static int OnFrameNotSendCallback(nghttp2_session*, const nghttp2_frame*, int, void*);
  static ssize_t ReadRequestCallback(nghttp2_session*, int32_t, uint8_t*, size_t, uint32_t*,
                                     nghttp2_data_source*, void*);
  static ssize_t ReadProbeCallback(nghttp2_session*, int32_t, uint8_t*, size_t, uint32_t*,
                                   nghttp2_data_source*, void*);

  // The probe with a stream `stream_id` here, or null.
  ProbeStream* ProbeOf(int32_t stream_id) const;
  ProbeStream* TakeProbe(int32_t stream_id);

  // Fast tier: (re)arms the PING timer `after` from now.
  void ArmPingTimer(Duration after);
  void OnPingTimer();
  void OnPingAck();

  void OnTcpConnected(const boost::system::error_code& ec);
  // TLS done (or none): creates the client session and sends the connection preface.
  void StartHttp2();
  void OnTlsHandshakeDone() override;
  void OnConnectTimeout();
  void FailConnect(const absl::Status& reason);
  void OnTransportClosed(const absl::Status& reason) override;
  void CheckDrained();

  const config::NodeAddress node_;
  const std::string node_name_;
  const size_t node_index_;
  pool::PoolConnectionEvents* events_;  // null once the final event was reported
  boost::asio::ip::tcp::resolver resolver_;
  boost::asio::steady_timer connect_timer_;
  bool handshake_done_ = false;
  bool draining_ = false;
  bool close_posted_ = false;
  int32_t not_sent_stream_ = 0;  // the request HEADERS nghttp2 last refused to send; 0: none
  AttemptList streams_;          // calls' streams open here
  std::vector<std::pair<int32_t, ProbeStream*>> probes_;  // health probes with a stream open here

  boost::asio::steady_timer ping_timer_;
  bool frame_seen_ = false;        // a frame arrived since the PING timer was last armed
  bool ping_outstanding_ = false;  // a health PING waits for its ack
  MonoTime ping_sent_at_{};
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_UPSTREAM_CONNECTION_H_
