// One app connection: the HTTP/2 server side (cleartext, prior knowledge, as gRPC clients speak
// it). It owns the calls the app opens on it.
// Thread-safety: none; lives on one worker's thread.
#ifndef QPOOL_DAEMON_SERVER_DOWNSTREAM_SESSION_H_
#define QPOOL_DAEMON_SERVER_DOWNSTREAM_SESSION_H_

#include <memory>
#include <string>

#include "daemon/server/call.h"
#include "daemon/server/h2_transport.h"

namespace qpool::server {

class DownstreamSession : public H2Transport {
 public:
  DownstreamSession(Worker& worker, boost::asio::ip::tcp::socket socket);
  ~DownstreamSession() override;

  // Sends the server preface and starts serving.
  void Start();
  // Sends the server preface and a GOAWAY carrying `reason`, then closes: the answer to a
  // connection over server.max_client_connections.
  void Refuse(const std::string& reason);
  // Graceful stop: a GOAWAY that announces the shutdown, a PING, and once the PING comes back, the
  // final GOAWAY with the last stream the app had opened. Streams in flight finish; the
  // connection closes when none is left.
  void BeginDrain();
  // Closes at once; in-flight calls are cancelled upstream.
  void Abort();

  // For calls. ---------------------------------------------------------------------------------
  // Response HEADERS; with `has_body` the body and trailers follow from the call's data source,
  // otherwise the HEADERS frame ends the stream (a trailers-only response).
  int SubmitResponse(Call& call, const nghttp2_nv* nva, size_t nvlen, bool has_body);
  int SubmitTrailers(Call& call, const nghttp2_nv* nva, size_t nvlen);
  void ResumeResponseData(Call& call);
  void ResetStream(Call& call, uint32_t h2_error_code);
  // The call passed `n` request bytes on: let the app send that much more on the stream.
  void ConsumeRequestData(Call& call, size_t n);

  const std::string& peer() const { return peer_; }

 private:
  static nghttp2_session_callbacks* Callbacks();
  static int OnBeginHeadersCallback(nghttp2_session*, const nghttp2_frame*, void*);
  static int OnHeaderCallback(nghttp2_session*, const nghttp2_frame*, nghttp2_rcbuf*,
                              nghttp2_rcbuf*, uint8_t, void*);
  static int OnFrameRecvCallback(nghttp2_session*, const nghttp2_frame*, void*);
  static int OnDataChunkRecvCallback(nghttp2_session*, uint8_t, int32_t, const uint8_t*, size_t,
                                     void*);
  static int OnStreamCloseCallback(nghttp2_session*, int32_t, uint32_t, void*);
  static int OnFrameSendCallback(nghttp2_session*, const nghttp2_frame*, void*);
  static int ErrorCallback(nghttp2_session*, int, const char*, size_t, void*);
  static ssize_t ReadResponseCallback(nghttp2_session*, int32_t, uint8_t*, size_t, uint32_t*,
                                      nghttp2_data_source*, void*);

  bool CreateSession();
  void OnTransportClosed(const absl::Status& reason) override;
  void OnProtocolError(int nghttp2_error) override;

  std::string peer_;
  // The calls of this connection, owned here: created on request HEADERS, deleted when their
  // stream closes (or the connection does). nghttp2's stream user data points at them too.
  DownstreamCallList calls_;
  bool draining_ = false;
  bool final_goaway_sent_ = false;
  bool refused_ = false;
  std::string last_error_;  // nghttp2's words for the last protocol error, for the log
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_DOWNSTREAM_SESSION_H_
