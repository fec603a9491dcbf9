// One gRPC call on its way through qpoold: an app's HTTP/2 stream (downstream) joined to a stream
// on a pooled Qdrant connection (upstream).
//
// The life of a call:
//   1. request HEADERS arrive downstream: the call records them and its deadline (grpc-timeout);
//   2. its upstream half (CallUpstream) asks a node pool for a stream slot, now or after waiting
//      in the pool's queue;
//   3. it opens the upstream stream with the same headers (grpc-timeout lowered by the time spent
//      in qpoold so far) and pipes the request body across as the app sends it, keeping a copy
//      (the replay buffer) until the commit point;
//   4. the first response HEADERS that are not a whole answer commit the call to its attempt:
//      the copy goes, and headers, DATA and trailers flow back unchanged;
//   5. it ends when the downstream stream closes; the upstream stream is cancelled if still open.
// An attempt that fails before the commit point may be tried again, or raced by a hedge
// (docs/retries.md): retry::AttemptController decides, CallUpstream acts, and each Attempt runs
// one upstream stream. This class, the downstream half, sees one answer and never learns how many
// attempts it took.
// qpoold answers by itself (a trailers-only response) only when no upstream answer can be had:
// pool limits, unreachable node, deadline, or an upstream connection lost before the answer.
//
// Flow control is end to end: bytes received on one side are acknowledged to their sender
// (WINDOW_UPDATE, per stream) only when the other side's data source has taken them, so a slow
// reader slows its writer and a call never buffers more than one stream window per direction.
//
// Ownership: the app connection (DownstreamSession, seen by the call only as a CallDownstream)
// owns its calls (created on request HEADERS, deleted when the downstream stream closes). A call
// holds its upstream half, and that the request (UpstreamRequest) and its attempts, by value. A
// unit test hands a call a fake CallDownstream and a CallContext built from fakes
// (tests/unit/call_test.cc).
// Thread-safety: none; a call lives on one worker's thread.
#ifndef QPOOL_DAEMON_SERVER_CALL_H_
#define QPOOL_DAEMON_SERVER_CALL_H_

#include <nghttp2/nghttp2.h>

#include <boost/intrusive/list.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "daemon/common/byte_queue.h"
#include "daemon/common/event_loop.h"
#include "daemon/metrics/method_class.h"
#include "daemon/server/call_context.h"
#include "daemon/server/call_upstream.h"
#include "daemon/server/header_block.h"
#include "daemon/server/stream_guard.h"
#include "daemon/server/upstream_request.h"

namespace qpool::server {

class Call;

// What a call asks of the app connection its stream is on (DownstreamSession implements it): the
// answer's frames, the request's flow control, and the connection's shares. Every method names
// the call's own stream.
class CallDownstream {
 public:
  // Response HEADERS; with `has_body` the body and trailers follow from the call's data source
  // (Call::ReadResponseBody), otherwise the HEADERS frame ends the stream (trailers-only).
  virtual int SubmitResponse(Call& call, const nghttp2_nv* nva, size_t nvlen, bool has_body) = 0;
  // The answer's trailers; from inside the call's data source, at the end of the body.
  virtual int SubmitTrailers(Call& call, const nghttp2_nv* nva, size_t nvlen) = 0;
  // More of the answer is queued (or it is complete): the data source may be read again.
  virtual void ResumeResponseData(Call& call) = 0;
  // RST_STREAM(`h2_error_code`) to the app.
  virtual void ResetStream(Call& call, uint32_t h2_error_code) = 0;
  // The call passed `n` request bytes on: the app may send that much more.
  virtual void ConsumeRequestData(Call& call, size_t n) = 0;
  // The connection's unread response bytes, all its calls together (ByteQueue's `local` total).
  virtual int64_t* response_bytes_held() = 0;
  // What the connection's calls hold of the worker's pools (fair sharing, NodePool).
  virtual pool::ShareAccount& share_account() = 0;
  // The app's address, for the access log.
  virtual const std::string& peer() const = 0;

 protected:
  ~CallDownstream() = default;  // not owned through this interface
};

class Call final : public RequestWindow {
 public:
  // `context` (the worker's) and `downstream` must outlive the call.
  Call(CallContext& context, CallDownstream& downstream, int32_t stream_id);
  ~Call();

  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

  // Downstream events (from DownstreamSession's nghttp2 callbacks). -------------------------------
  // `name` and `value` belong to the downstream session; the call keeps references.
  void OnRequestHeader(nghttp2_rcbuf* name, nghttp2_rcbuf* value);
  void OnRequestHeadersEnd();
  void OnRequestData(const uint8_t* data, size_t len);
  void OnRequestEnd();
  // The downstream stream closed (finished, reset by the app, or its connection went away).
  void OnDownstreamClosed(uint32_t h2_error_code);
  // The downstream response data source.
  ssize_t ReadResponseBody(uint8_t* buf, size_t length, uint32_t* data_flags);

  // The answer, from the upstream half. -----------------------------------------------------------
  // Response headers (`end_stream`: a trailers-only answer with grpc-status `grpc_code`).
  void SendResponseHeaders(const nghttp2_nv* nva, size_t nvlen, bool end_stream, int grpc_code);
  void AppendResponseData(const uint8_t* data, size_t len) {
    response_body_.Append(data, len);
    ResumeDownstream();
  }
  void AddResponseTrailer(std::string_view name, std::string_view value) {
    trailers_.Add(name, value);
  }
  // The upstream answer is complete: trailers (if any) follow the data queued.
  void EndResponse();
  // Answers the app with `status` and no upstream answer: trailers-only if no response headers
  // went out yet, else trailers after the data already queued.
  void FinishLocally(const absl::Status& status);
  // The upstream reset the stream before its answer was complete: so is the app's.
  void PassOnReset(uint32_t h2_error_code);
  // RequestWindow: lets the app send `n` more bytes on this stream (the request's bytes went
  // upstream, or were dropped).
  void AcknowledgeRequestBytes(size_t n) override;
  // The answer to the app is settled (complete, reset, or the app went away).
  bool finished() const { return response_state_ >= ResponseState::kComplete; }

  int32_t downstream_stream_id() const { return downstream_id_; }
  // Response bytes held for the app and not taken by it yet.
  size_t response_buffered() const { return response_body_.size(); }
  // Something went to the app already (response HEADERS, or a reset): a local answer now has to
  // be a reset.
  bool response_started() const { return response_state_ != ResponseState::kNone; }
  // The app connection's share of the pool (fair sharing between app connections).
  pool::ShareAccount& share_account();
  // The method's class, from :path (known once the request headers are complete).
  metrics::MethodClass method_class() const { return method_class_; }
  // Tests only: the upstream half, to deliver its attempts' events by hand.
  CallUpstream& upstream_for_testing() { return upstream_; }

  CallHook downstream_hook;  // DownstreamSession's list of its calls
  // The session's watch for server.stream_idle_timeout, and its check of the request's message
  // sizes for server.max_message_size (stream_guard.h).
  StreamStallWatch stall_watch;
  GrpcMessageSizeGuard request_size_guard;
  // Request bytes received on this stream and not forwarded yet, which hold the connection's
  // flow-control window (DownstreamSession gives it back as they go upstream, or when the call
  // ends).
  size_t request_window_held = 0;

 private:
  enum class ResponseState : uint8_t {
    kNone,         // nothing sent to the app yet
    kHeadersSent,  // response HEADERS submitted; body and trailers to come
    kComplete,     // the whole answer is queued (ends with trailers, or END_STREAM)
    kReset,        // the stream was reset toward the app
    kClosed,       // the downstream stream is gone
  };

  void OnDeadline();
  void ResumeDownstream();
  // Metrics (docs/metrics.md) and the access log (access_log.h): the end of the call.
  void RecordCallEnd();
  // Writes the call's access log line (a sampled call only).
  void LogAccess(Duration duration);

  CallContext& context_;
  CallDownstream& downstream_;
  const int32_t downstream_id_;
  ResponseState response_state_ = ResponseState::kNone;
  HeaderBlock trailers_;
  ByteQueue response_body_;

  std::optional<MonoTime> deadline_;
  std::unique_ptr<Timer> deadline_timer_;

  // Metrics: what the call records when it ends (a few relaxed counter updates, no locks).
  const QdrantMethod* method_ = nullptr;  // from :path; null: not a Qdrant method
  metrics::MethodClass method_class_ = metrics::MethodClass::kOther;  // from :path
  int grpc_code_ = -1;     // the final grpc-status, upstream's or qpoold's; -1: none (reset)
  MonoTime started_at_{};  // request headers complete

  CallUpstream upstream_;  // last: it reports to the members above
};

// The call a downstream session's stream belongs to: nghttp2's stream user data.
inline Call* CallOf(nghttp2_session* session, int32_t stream_id) {
  return static_cast<Call*>(nghttp2_session_get_stream_user_data(session, stream_id));
}

using DownstreamCallList =
    boost::intrusive::list<Call,
                           boost::intrusive::member_hook<Call, CallHook, &Call::downstream_hook>,
                           boost::intrusive::constant_time_size<false>>;

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_CALL_H_
