// A pooled HTTP/2 client connection to one Qdrant node: TCP connect (with timeout), the HTTP/2
// handshake, and the upstream half of every call riding on it. It reports its life to its
// NodePool through PoolConnectionEvents.
// Thread-safety: none; lives on one worker's thread.
#ifndef QPOOL_DAEMON_SERVER_UPSTREAM_CONNECTION_H_
#define QPOOL_DAEMON_SERVER_UPSTREAM_CONNECTION_H_

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <memory>
#include <string>

#include "daemon/config/config.h"
#include "daemon/pool/node_pool.h"
#include "daemon/server/call.h"
#include "daemon/server/h2_transport.h"

namespace qpool::server {

class UpstreamConnection : public H2Transport, public pool::PoolConnection {
 public:
  UpstreamConnection(Worker& worker, const config::NodeAddress& node,
                     pool::PoolConnectionEvents& events);
  ~UpstreamConnection() override;

  // Resolves, connects and starts the HTTP/2 handshake; reports OnConnected or OnConnectFailed
  // later, never from inside Connect.
  void Connect();

  // Opens `stream` (a call's attempt) with request headers `nva`. With `has_body` the body is
  // pulled from the call's data source; otherwise the HEADERS frame ends the stream. Returns the
  // stream id, or a negative nghttp2 error.
  int32_t SubmitRequest(UpstreamStream& stream, const nghttp2_nv* nva, size_t nvlen, bool has_body);
  // Cancels a stream and forgets its call's UpstreamStream; no further events reach the call.
  void ResetStream(int32_t stream_id, uint32_t h2_error_code);
  // The call has more request body (or its end) for the stream.
  void ResumeRequestData(int32_t stream_id);
  // The call passed `n` response bytes on: let the peer send that much more on the stream.
  void ConsumeResponseData(int32_t stream_id, size_t n);

  const std::string& node_name() const { return node_name_; }

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
  static ssize_t ReadRequestCallback(nghttp2_session*, int32_t, uint8_t*, size_t, uint32_t*,
                                     nghttp2_data_source*, void*);

  void OnTcpConnected(const boost::system::error_code& ec);
  void OnConnectTimeout();
  void FailConnect(const absl::Status& reason);
  void OnTransportClosed(const absl::Status& reason) override;
  void CheckDrained();

  const config::NodeAddress node_;
  const std::string node_name_;
  pool::PoolConnectionEvents* events_;  // null once the final event was reported
  boost::asio::ip::tcp::resolver resolver_;
  boost::asio::steady_timer connect_timer_;
  bool handshake_done_ = false;
  bool draining_ = false;
  bool close_posted_ = false;
  UpstreamStreamList streams_;  // calls' streams open here
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_UPSTREAM_CONNECTION_H_
