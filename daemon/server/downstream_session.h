// One app connection: the HTTP/2 server side (cleartext, prior knowledge, as gRPC clients speak
// it). It owns the calls the app opens on it (in its DownstreamCalls).
//
// Defences against hostile clients (docs/security.md); each guard decides, ConnectionDefences (the
// session, for the timeouts) acts:
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
//
// The session is the connection's HTTP/2 server and its life (start, refuse, drain, timeouts,
// close), and the nghttp2 callbacks, which hand each event to one of its parts:
//   - DownstreamCalls (downstream_calls.h): the calls, and the CallDownstream they see (their
//     frames submitted, their request's flow control, the shares);
//   - ConnectionDefences (connection_defences.h): the defences above but the timeouts, carried out
//     through the DefendedConnection interface the session implements (reset a stream, submit a
//     local reply, end a call, close with GOAWAY);
//   - ConnectionTimeouts (connection_timeouts.h): what the sweep's timeouts decide.
// Thread-safety: none; lives on one worker's thread.
#ifndef QPOOL_DAEMON_SERVER_DOWNSTREAM_SESSION_H_
#define QPOOL_DAEMON_SERVER_DOWNSTREAM_SESSION_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "daemon/server/call.h"
#include "daemon/server/connection_defences.h"
#include "daemon/server/connection_timeouts.h"
#include "daemon/server/downstream_calls.h"
#include "daemon/server/h2_transport.h"

namespace qpool::server {

// The calls see DownstreamCalls (their CallDownstream), not the session.
class DownstreamSession final : public H2Transport, public DefendedConnection {
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
  // The nghttp2 callbacks (the library's entry points), built once; each hands its event to a
  // part, or to OnFrame().
  static nghttp2_session_callbacks* Callbacks();
  // A whole frame arrived (nghttp2's on_frame_recv): the end of a request's headers or body, the
  // budgets of PING, SETTINGS, RST_STREAM and empty DATA, the drain's PING coming back.
  int OnFrame(const nghttp2_frame& frame);

  // H2Transport: the nghttp2 session is created once the app has spoken (or to refuse it).
  bool CreateSessionLate() override;
  void OnTransportClosed(const absl::Status& reason) override;
  void OnProtocolError(int nghttp2_error) override;

  // DefendedConnection: for the defences (connection_defences.h says what each does). ----------
  void SubmitReset(int32_t stream_id, uint32_t h2_error_code) override;
  void SubmitLocalReply(int32_t stream_id, const nghttp2_nv* nva, size_t nvlen) override;
  void EndCall(Call& call, uint32_t h2_error_code) override { calls_.End(call, h2_error_code); }
  bool WaitingOnApp(const Call& call) override;
  // Also used for server.idle_timeout (NO_ERROR): the GOAWAY is the final one.
  bool CloseWithGoaway(uint32_t h2_error_code, std::string_view why,
                       const absl::Status& reason) override;

  std::string peer_;
  bool draining_ = false;
  bool final_goaway_sent_ = false;
  bool refused_ = false;
  bool timed_out_ = false;  // closing for server.handshake_timeout or server.idle_timeout
  std::string last_error_;  // nghttp2's words for the last protocol error, for the log

  ConnectionTimeouts timeouts_;  // the worker's sweep
  ConnectionDefences defences_;
  // Last: its calls report to the defences (response bytes) until they go.
  DownstreamCalls calls_;
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_DOWNSTREAM_SESSION_H_
