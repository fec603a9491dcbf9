// What an app connection does against hostile clients (docs/security.md), on top of the guards
// that decide (header_block_guard.h, abuse_budget.h, stream_guard.h): it carries out their
// verdicts on the connection's streams, and counts each (ProxyCounters).
//   - header limits: the first field of a request header block over server.max_header_list_size
//     or server.max_headers drops the stream's call and spends the header-limit budget; once the
//     block ends, its stream is answered RESOURCE_EXHAUSTED (reset, for trailers); a block past
//     kHeaderBlockCloseFactor times a limit closes the connection;
//   - abuse budgets: resets, PINGs, SETTINGS, PRIORITY, empty DATA frames and over-limit header
//     blocks beyond their budget close the connection with GOAWAY(ENHANCE_YOUR_CALM);
//   - server.max_message_size: a request message declaring more is answered RESOURCE_EXHAUSTED
//     (reset if the response has started), and its call goes;
//   - server.connection_buffer_limit: past it, the stream holding the most unread response bytes
//     is reset on both sides, until the connection is under it again (on a turn of the loop of its
//     own: the call whose queue grew is still on the stack then);
//   - server.stream_idle_timeout: the sweep (CheckStreams) resets the streams that waited on the
//     app with no progress that long.
// It asks the connection through DefendedConnection (DownstreamSession implements it): reset a
// stream, submit a local reply, end a call, ask nghttp2 whether a stream waits on the app, close
// with GOAWAY. A unit test hands it a fake one (tests/unit/downstream_guards_test.cc).
//
//   ConnectionDefences defences(connection, counters, loop, config.server, peer);
//   defences.BeginHeaderBlock();                         // HEADERS begins
//   if (!defences.AddHeader(name.len, value.len)) return defences.OnHeaderOverLimit(id, call);
//   if (!defences.Spend(AbuseReason::kRapidReset)) return NGHTTP2_ERR_CALLBACK_FAILURE;
//
// On the happy path the inline checks cost a few compares per header and per frame, and no clock
// reads.
// Thread-safety: none; it belongs to one connection, on one worker's thread.
#ifndef QPOOL_DAEMON_SERVER_CONNECTION_DEFENCES_H_
#define QPOOL_DAEMON_SERVER_CONNECTION_DEFENCES_H_

#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"
#include "absl/status/status.h"
#include "daemon/common/event_loop.h"
#include "daemon/server/abuse_budget.h"
#include "daemon/server/call.h"
#include "daemon/server/header_block_guard.h"
#include "daemon/server/stream_guard.h"

namespace qpool::config {
struct ServerConfig;  // config.h
}  // namespace qpool::config

namespace qpool::server {

struct ProxyCounters;  // proxy_counters.h

// What ConnectionDefences asks of the app connection it guards (DownstreamSession implements it).
class DefendedConnection {
 public:
  // RST_STREAM(`h2_error_code`) on stream `stream_id`; sent after the current event.
  virtual void SubmitReset(int32_t stream_id, uint32_t h2_error_code) = 0;
  // Answers stream `stream_id` with these response headers and no body (a trailers-only gRPC
  // answer); sent after the current event.
  virtual void SubmitLocalReply(int32_t stream_id, const nghttp2_nv* nva, size_t nvlen) = 0;
  // Takes `call` out of the connection (its stream's request bytes held give the connection's
  // window back), ends it (Call::OnDownstreamClosed(`h2_error_code`): its upstream stream, or the
  // wait for one, is cancelled) and deletes it.
  virtual void EndCall(Call& call, uint32_t h2_error_code) = 0;
  // Whether `call`'s stream can only move if the app acts: the app may send (its request is open
  // and the stream's window has room), or response bytes wait for it to read.
  virtual bool WaitingOnApp(const Call& call) = 0;
  // GOAWAY(`h2_error_code`, debug data `why`) naming the last stream the app opened, then closes
  // the connection with `reason` without waiting for a peer that does not read. False (nothing
  // done) when the connection had closed already.
  virtual bool CloseWithGoaway(uint32_t h2_error_code, std::string_view why,
                               const absl::Status& reason) = 0;

 protected:
  ~DefendedConnection() = default;  // not owned through this interface
};

class ConnectionDefences {
 public:
  // `connection`, `counters`, `loop` and `peer` (the app's address, for the log) must outlive
  // the defences.
  ConnectionDefences(DefendedConnection& connection, ProxyCounters& counters, EventLoop& loop,
                     const config::ServerConfig& server, const std::string& peer);

  // Header limits. -------------------------------------------------------------------------------
  // A header block begins.
  void BeginHeaderBlock() { header_guard_.BeginBlock(); }
  // Counts one field of the block; true while the block is within the limits (store the field).
  bool AddHeader(size_t name_len, size_t value_len) {
    return header_guard_.Add(name_len, value_len);
  }
  // AddHeader() returned false for a field of stream `stream_id` (whose call is `call`, or null):
  // the first time, `call` goes (ended and deleted) and the header-limit budget is spent; on a
  // flood the connection closes. Returns what the header callback returns.
  ABSL_ATTRIBUTE_NOINLINE int OnHeaderOverLimit(int32_t stream_id, Call* call);
  // Stream `stream_id`'s header block ended (`request`: request headers, else trailers). True when
  // the block was over a limit: the stream was answered (or reset) and has no call any more.
  bool EndHeaderBlock(int32_t stream_id, bool request) {
    if (ABSL_PREDICT_TRUE(!header_guard_.over_limit(stream_id))) return false;
    AnswerOverLimitBlock(stream_id, request);
    return true;
  }

  // Abuse budgets. -------------------------------------------------------------------------------
  // Takes one token from the budget for `reason`; when it is spent, closes the connection for
  // `reason` and returns false (the frame callback then fails).
  bool Spend(AbuseReason reason);
  // The app sent a PING (not an ack): free after response frames (gRPC's BDP probes), otherwise
  // it spends the PING budget. False when the connection closes for it.
  bool OnPing() { return abuse_.TakeFreePing() || Spend(AbuseReason::kPingFlood); }
  // qpoold sent response HEADERS or DATA.
  void OnResponseFrameSent() { abuse_.OnResponseFrameSent(); }
  // A budget ran dry: the connection closes with GOAWAY(ENHANCE_YOUR_CALM), counted (unless it
  // had closed already, for another reason).
  bool abusive() const { return abuse_.abusive(); }

  // Memory and slots held by a stream. -----------------------------------------------------------
  // Request bytes of `call`; false when they complete a gRPC prefix declaring a message over
  // server.max_message_size: then RejectOversizeMessage(call).
  bool MessageSizeOk(Call& call, const uint8_t* data, size_t len) {
    return ABSL_PREDICT_TRUE(max_message_size_ == 0) ||
           call.request_size_guard.Feed(data, len, max_message_size_);
  }
  // Answers `call`'s stream RESOURCE_EXHAUSTED (a reset if the response has started); the call
  // and its upstream side go.
  ABSL_ATTRIBUTE_NOINLINE void RejectOversizeMessage(Call& call);
  // The connection's unread response bytes, all its calls together (the calls' response queues
  // keep it up to date).
  int64_t* response_bytes_held() { return &response_bytes_; }
  // A call's response queue grew (or ended). True when the connection is past
  // server.connection_buffer_limit and no check is pending: the caller runs RunBufferCheck() on a
  // turn of the loop of its own (the call whose queue grew is still on the stack).
  bool OnResponseQueued() {
    if (ABSL_PREDICT_TRUE(buffer_limit_ == 0 || response_bytes_ <= buffer_limit_ ||
                          buffer_check_posted_)) {
      return false;
    }
    buffer_check_posted_ = true;
    return true;
  }
  // Resets the streams of `calls` (the connection's) holding the most unread response bytes until
  // the connection is under server.connection_buffer_limit. Not from inside a call's methods (it
  // ends calls). The connection must be open.
  void RunBufferCheck(DownstreamCallList& calls);
  // The sweep: resets (on both sides, counted) the streams of `calls` that waited on the app with
  // no progress for server.stream_idle_timeout. Closes no connection; it must be open.
  void CheckStreams(DownstreamCallList& calls, MonoTime now);

 private:
  // Answers the over-limit block of `stream_id`: RESOURCE_EXHAUSTED for request headers, a reset
  // for trailers.
  void AnswerOverLimitBlock(int32_t stream_id, bool request);
  // Answers stream `stream_id`, whose call is gone, with RESOURCE_EXHAUSTED and `message`; counted
  // as a local reply.
  void ReplyResourceExhausted(int32_t stream_id, const std::string& message);
  // Ends `call` on both sides now: RST_STREAM(`h2_error_code`) to the app, the call ended and
  // deleted; counted for `reason`.
  void ResetCall(Call& call, uint32_t h2_error_code, StreamResetReason reason);
  // GOAWAY(ENHANCE_YOUR_CALM) naming `reason`, then closes; counted once.
  void CloseForAbuse(AbuseReason reason);

  DefendedConnection& connection_;
  ProxyCounters& counters_;
  EventLoop& loop_;
  const std::string& peer_;
  HeaderBlockGuard header_guard_;  // server.max_header_list_size, server.max_headers
  AbuseGuard abuse_;
  const int64_t buffer_limit_;          // server.connection_buffer_limit; 0: off
  const uint32_t max_message_size_;     // server.max_message_size; 0: off
  const Duration stream_idle_timeout_;  // server.stream_idle_timeout; zero: off
  int64_t response_bytes_ = 0;          // what buffer_limit_ bounds
  bool buffer_check_posted_ = false;
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_CONNECTION_DEFENCES_H_
