// One app connection: the HTTP/2 server side (cleartext, prior knowledge, as gRPC clients speak
// it). It owns the calls the app opens on it.
//
// Defences against hostile clients (docs/security.md); each guard decides, the session acts:
//   - header limits (header_block_guard.h): a request header block over
//     server.max_header_list_size (RFC 9113 sizes) or server.max_headers is not stored past the
//     limit and its stream is answered RESOURCE_EXHAUSTED once the block ends; a block over
//     kHeaderBlockCloseFactor times either limit closes the connection then and there (an HPACK
//     bomb costs a bounded decode);
//   - abuse budgets (abuse_budget.h, AbuseGuard): resets, PINGs, SETTINGS, PRIORITY, empty DATA
//     frames and over-limit header blocks beyond their budget close the connection with
//     GOAWAY(ENHANCE_YOUR_CALM);
//   - timeouts (connection_timeouts.h): the worker's sweep (CheckTimeouts) closes a connection
//     whose preface and SETTINGS did not arrive within server.handshake_timeout, or that had no
//     stream open for server.idle_timeout (GOAWAY(NO_ERROR));
//   - memory and slots held by a reader that stops (stream_guard.h): the unread response bytes of
//     all the connection's calls are kept under server.connection_buffer_limit (over it, the
//     stream holding the most is reset on both sides), and the sweep (CheckStreams) resets a
//     stream that waited on the app with no progress for server.stream_idle_timeout;
//   - memory held by a writer whose requests cannot go on (its calls wait for a stream, or the
//     node reads slowly): the connection's flow-control window is server.connection_buffer_limit
//     and a request byte gives its window back only once forwarded upstream (or its call ends),
//     so the request bytes held for all the connection's calls stay under the limit too.
// Each is counted (ProxyCounters). On the happy path they cost a few compares per header and per
// frame, and no clock reads.
// Thread-safety: none; lives on one worker's thread.
#ifndef QPOOL_DAEMON_SERVER_DOWNSTREAM_SESSION_H_
#define QPOOL_DAEMON_SERVER_DOWNSTREAM_SESSION_H_

#include <memory>
#include <string>

#include "absl/base/attributes.h"
#include "daemon/server/abuse_budget.h"
#include "daemon/server/call.h"
#include "daemon/server/connection_timeouts.h"
#include "daemon/server/h2_transport.h"
#include "daemon/server/header_block_guard.h"

namespace qpool::server {

// What the connection's calls ask of it is the CallDownstream interface (call.h); `final`, so its
// own uses of those methods are direct calls.
class DownstreamSession final : public H2Transport, public CallDownstream {
 public:
  DownstreamSession(ConnectionContext& context, boost::asio::ip::tcp::socket socket);
  ~DownstreamSession() override;

  // Starts serving. The nghttp2 session (and the server preface) waits for the app's first
  // bytes, so a connection that never speaks costs no more than its socket and this object.
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

  // CallDownstream: for calls (call.h says what each does). ----------------------------------
  int SubmitResponse(Call& call, const nghttp2_nv* nva, size_t nvlen, bool has_body) override;
  int SubmitTrailers(Call& call, const nghttp2_nv* nva, size_t nvlen) override;
  void ResumeResponseData(Call& call) override;
  void ResetStream(Call& call, uint32_t h2_error_code) override;
  // Also gives the connection's window back (the app may send that much more on it too).
  void ConsumeRequestData(Call& call, size_t n) override;
  // The calls' response queues keep it up to date.
  int64_t* response_bytes_held() override { return &response_bytes_; }
  pool::ShareAccount& share_account() override { return share_account_; }
  const std::string& peer() const override { return peer_; }

  // For the worker's periodic sweep.
  // ---------------------------------------------------------------
  using TimeoutAction = ConnectionTimeouts::Action;
  // What is due at `now`; acts on nothing, so the caller may walk its sessions while asking.
  TimeoutAction CheckTimeouts(MonoTime now);
  // Carries out what CheckTimeouts() returned: closes the connection, and counts it.
  void OnTimeout(TimeoutAction action);
  // The connection has nothing in flight: its write buffer's memory goes back to the allocator,
  // and nghttp2's frame buffer's pages to the kernel (H2Transport::TrimIdleMemory).
  void TrimIdle();
  bool has_calls() const { return !calls_.empty(); }
  // Resets (on both sides, counted) the streams that waited on the app with no progress for
  // server.stream_idle_timeout. Closes no connection.
  void CheckStreams(MonoTime now);

 private:
  static nghttp2_session_callbacks* Callbacks();
  static int OnBeginFrameCallback(nghttp2_session*, const nghttp2_frame_hd*, void*);
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
  bool CreateSessionLate() override { return CreateSession(); }
  void OnTransportClosed(const absl::Status& reason) override;
  void OnProtocolError(int nghttp2_error) override;

  // A header of the block being decoded went over a limit: acts on the guard's verdict (drops
  // the stream's call the first time, closes the connection on a flood); returns what the header
  // callback returns. Kept out of line: the header callback stays small on the happy path.
  ABSL_ATTRIBUTE_NOINLINE int OnHeaderOverLimit(nghttp2_session* session,
                                                const nghttp2_frame* frame);
  // Answers stream `stream_id`, whose call is gone, with RESOURCE_EXHAUSTED and `message`; counted
  // as a local reply.
  void ReplyResourceExhausted(int32_t stream_id, const std::string& message);
  // Takes one token from the budget for `reason`; when it is spent, closes the connection for
  // `reason` and returns false.
  bool Spend(AbuseReason reason);
  // GOAWAY(ENHANCE_YOUR_CALM) naming `reason`, then closes; counted.
  void CloseForAbuse(AbuseReason reason);
  // Ends `call` on both sides now: RST_STREAM(`h2_error_code`) to the app, its upstream stream
  // (or its wait for one) cancelled, its buffers freed; counted for `reason`. Not for use from
  // inside the call's own methods (it deletes the call).
  void ResetCall(Call& call, uint32_t h2_error_code, StreamResetReason reason);
  // Takes `call` out of the session (its list, its stream's user data) and gives the connection
  // window its unforwarded request bytes held back to the app. The caller ends and deletes it.
  void DetachCall(Call& call);
  // Over server.connection_buffer_limit: resets the streams holding the most until under it. Runs
  // on a turn of the loop of its own (posted), outside any call's method.
  void EnforceBufferLimit();
  // A request message of `call` declared more than server.max_message_size: answers the stream
  // RESOURCE_EXHAUSTED (a reset if the response has started); the call and its upstream side go.
  ABSL_ATTRIBUTE_NOINLINE void RejectOversizeMessage(Call& call, uint64_t declared);

  std::string peer_;
  // The calls of this connection, owned here: created on request HEADERS, deleted when their
  // stream closes (or the connection does). nghttp2's stream user data points at them too.
  DownstreamCallList calls_;
  bool draining_ = false;
  bool final_goaway_sent_ = false;
  bool refused_ = false;
  bool timed_out_ = false;  // closing for server.handshake_timeout or server.idle_timeout
  std::string last_error_;  // nghttp2's words for the last protocol error, for the log

  HeaderBlockGuard header_guard_;  // server.max_header_list_size, server.max_headers
  AbuseGuard abuse_;
  ConnectionTimeouts timeouts_;  // the worker's sweep

  // server.connection_buffer_limit (0: off) and the bytes it bounds; server.stream_idle_timeout
  // (zero: off).
  const int64_t connection_buffer_limit_;
  const uint32_t max_message_size_;  // server.max_message_size; 0: off
  const Duration stream_idle_timeout_;
  int64_t response_bytes_ = 0;
  bool buffer_check_posted_ = false;
  pool::ShareAccount share_account_;  // outlives the calls: they go in the destructor's body
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_DOWNSTREAM_SESSION_H_
