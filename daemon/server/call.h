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
// A call is three parts, each in its own file, and this class joins them to the app's stream:
//   - UpstreamRequest (upstream_request.h): the request as qpoold holds it, filled from the app's
//     HEADERS and DATA here, read by the attempts; its window credit comes back here
//     (RequestWindow) and goes to the app connection;
//   - CallAnswer (call_answer.h): the answer to the app, its state, the body held for the app and
//     the trailers; the upstream half hands it what Qdrant answered, or a local answer, through
//     AnswerSink, and the app connection reads it through ReadResponseBody;
//   - CallUpstream (call_upstream.h): the attempts and the retry decisions carried out.
// The call itself keeps the caller's deadline (its one timer), the method (for the metrics and the
// access log), and records the call's end.
//
// Flow control is end to end: bytes received on one side are acknowledged to their sender
// (WINDOW_UPDATE, per stream) only when the other side's data source has taken them, so a slow
// reader slows its writer and a call never buffers more than one stream window per direction.
//
// Ownership: the app connection (DownstreamSession, in its DownstreamCalls, seen by the call only
// as a CallDownstream, call_downstream.h) owns its calls (created on request HEADERS, deleted when
// the downstream stream closes). A call holds its answer, its request and its upstream half by
// value, and that its attempts. A unit test hands a call a fake CallDownstream and a CallContext
// built from fakes, and its attempt waits in a real pool of fake connections
// (tests/unit/call_test.cc); the parts are tested alone (call_test's CallAnswerTest,
// upstream_request_test, attempt_test). Thread-safety: none; a call lives on one worker's thread.
#ifndef QPOOL_DAEMON_SERVER_CALL_H_
#define QPOOL_DAEMON_SERVER_CALL_H_

#include <nghttp2/nghttp2.h>

#include <boost/intrusive/list.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "daemon/common/event_loop.h"
#include "daemon/metrics/method_class.h"
#include "daemon/server/call_answer.h"
#include "daemon/server/call_context.h"
#include "daemon/server/call_downstream.h"
#include "daemon/server/call_upstream.h"
#include "daemon/server/stream_guard.h"
#include "daemon/server/upstream_request.h"

namespace qpool::server {

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

  // RequestWindow: lets the app send `n` more bytes on this stream (the request's bytes went
  // upstream, or were dropped).
  void AcknowledgeRequestBytes(size_t n) override;
  // The answer to the app is settled (complete, reset, or the app went away).
  bool finished() const { return answer_.finished(); }

  int32_t downstream_stream_id() const { return downstream_id_; }
  // Response bytes held for the app and not taken by it yet.
  size_t response_buffered() const { return answer_.buffered(); }
  // Something went to the app already (response HEADERS, or a reset): a local answer now has to
  // be a reset.
  bool response_started() const { return answer_.started(); }
  // The answer to the app, as the upstream half writes it (AnswerSink); the connection's
  // defences' tests hand a call response bytes through it.
  AnswerSink& answer() { return answer_; }
  // The app connection's share of the pool (fair sharing between app connections).
  pool::ShareAccount& share_account();

  CallHook downstream_hook;  // DownstreamCalls' list of the connection's calls
  // The session's watch for server.stream_idle_timeout, and its check of the request's message
  // sizes for server.max_message_size (stream_guard.h).
  StreamStallWatch stall_watch;
  GrpcMessageSizeGuard request_size_guard;
  // Request bytes received on this stream and not forwarded yet, which hold the connection's
  // flow-control window (DownstreamSession gives it back as they go upstream, or when the call
  // ends).
  size_t request_window_held = 0;

 private:
  void OnDeadline();
  // Metrics (docs/metrics.md) and the access log (access_log.h): the end of the call.
  void RecordCallEnd();
  // Writes the call's access log line (a sampled call only).
  void LogAccess(Duration duration);

  CallContext& context_;
  CallDownstream& downstream_;
  const int32_t downstream_id_;
  CallAnswer answer_;        // the answer to the app
  UpstreamRequest request_;  // the request as qpoold holds it on its way upstream

  std::optional<MonoTime> deadline_;
  std::unique_ptr<Timer> deadline_timer_;

  // Metrics: what the call records when it ends (a few relaxed counter updates, no locks).
  const QdrantMethod* method_ = nullptr;  // from :path; null: not a Qdrant method
  metrics::MethodClass method_class_ = metrics::MethodClass::kOther;  // from :path
  MonoTime started_at_{};                                             // request headers complete

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
