// A pooled HTTP/2 client connection to one Qdrant node: the HTTP/2 session over its transport
// (H2Transport), the upstream half of every call riding on it (each stream's nghttp2 user data is
// the call's Attempt), and its life reported to its NodePool through PoolConnectionEvents. Its
// parts, each in a file of its own:
//   UpstreamConnector (upstream_connector.h)  resolve, TCP connect, the TLS engine, and the
//                                             upstream.connect_timeout deadline over the handshakes
//   PingKeepalive (ping_keepalive.h)          the fast health tier: PING when idle, close when
//                                             unanswered
//   ProbeStreams (probe_streams.h)            the streams of the medium and deep tiers' probes
// This class wires them to the nghttp2 session (one static callback table, Callbacks(), whose
// entries forward to the Attempt, the ProbeStreams or the few members below) and owns the
// connection's state: the handshake, the drain, the close.
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

#include <cstddef>
#include <cstdint>
#include <string>

#include "daemon/config/config.h"
#include "daemon/pool/node_pool.h"
#include "daemon/server/attempt.h"
#include "daemon/server/h2_transport.h"
#include "daemon/server/ping_keepalive.h"
#include "daemon/server/probe_streams.h"
#include "daemon/server/upstream_connector.h"

namespace qpool::server {

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
  // nghttp2's entry points, one table for every upstream connection; each entry forwards to the
  // stream's Attempt, to probes_, or to a member below.
  static nghttp2_session_callbacks* Callbacks();
  // Connection-level frames (SETTINGS, PING acks, GOAWAY) and the ends of a call's response.
  void OnFrame(const nghttp2_frame& frame);
  void OnStreamClose(int32_t stream_id, uint32_t error_code);

  // TCP (and TLS, when any) is up: creates the client session and sends the connection preface.
  void StartHttp2();
  void OnTlsHandshakeDone() override;
  void OnTransportClosed(const absl::Status& reason) override;
  // Draining, and no stream left: GOAWAY and close, on a later turn.
  void CheckDrained();

  const config::NodeAddress node_;
  const std::string node_name_;
  const size_t node_index_;
  pool::PoolConnectionEvents* events_;  // null once the final event was reported
  UpstreamConnector connector_;
  bool handshake_done_ = false;  // the peer's first SETTINGS arrived
  bool http2_started_ = false;   // the preface went out (after TLS, when any)
  bool draining_ = false;
  bool close_posted_ = false;
  int32_t not_sent_stream_ = 0;  // the request HEADERS nghttp2 last refused to send; 0: none
  AttemptList streams_;          // calls' streams open here
  ProbeStreams probes_;          // health probes with a stream open here
  PingKeepalive keepalive_;
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_UPSTREAM_CONNECTION_H_
