// One gRPC call on its way through qpoold: an app's HTTP/2 stream (downstream) joined to a stream
// on a pooled Qdrant connection (upstream).
//
// The life of a call:
//   1. request HEADERS arrive downstream: the call records them and its deadline (grpc-timeout);
//   2. it asks a node pool for a stream slot, now or after waiting in the pool's queue;
//   3. it opens the upstream stream with the same headers (grpc-timeout lowered by the time spent
//      in qpoold so far) and pipes the request body across as the app sends it, keeping a copy
//      (the replay buffer) until the commit point;
//   4. the first response HEADERS that are not a whole answer commit the call to its attempt:
//      the copy goes, and headers, DATA and trailers flow back unchanged;
//   5. it ends when the downstream stream closes; the upstream stream is cancelled if still open.
// An attempt that fails before the commit point may be tried again (docs/retries.md): at once
// when Qdrant provably never processed it (refused stream, GOAWAY, node unreachable); after a
// jittered backoff when it failed with a retryable status (UNAVAILABLE, RESOURCE_EXHAUSTED with
// a pushback, a per-try timeout) and the method is safe to repeat (retry::MethodClassifier),
// within max_attempts, the caller's deadline and the node's retry budget.
// qpoold answers by itself (a trailers-only response) only when no upstream answer can be had:
// pool limits, unreachable node, deadline, or an upstream connection lost before the answer.
//
// Flow control is end to end: bytes received on one side are acknowledged to their sender
// (WINDOW_UPDATE, per stream) only when the other side's data source has taken them, so a slow
// reader slows its writer and a call never buffers more than one stream window per direction.
//
// A read may also be hedged (retry.hedge_delay, off by default): when its attempt has no answer
// after the delay, a second attempt races it on another node; the first response headers win and
// the other attempt is cancelled.
//
// Ownership: the DownstreamSession owns its calls (created on request HEADERS, deleted when the
// downstream stream closes). A call owns its two UpstreamStreams (the attempt, and a hedge); the
// upstream side refers to them through nghttp2 stream user data, which the call clears when it
// lets go of a stream.
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
#include "daemon/common/event_loop.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/pool/node_pool.h"
#include "daemon/retry/retry_policy.h"
#include "daemon/common/byte_queue.h"
#include "daemon/server/header_block.h"
#include "daemon/server/stream_guard.h"

namespace qpool::server {

class DownstreamSession;
class UpstreamConnection;
class Worker;

// Links a call into its session's list, and an upstream stream into its connection's; a link
// removes itself when its owner is destroyed.
using CallHook =
    boost::intrusive::list_member_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>>;

class Call;

// One upstream attempt of a call: its place in a pool's queue, then its stream on a pooled
// connection. The connection's events name the UpstreamStream they are for (it is the stream's
// nghttp2 user data), so a call can tell its attempt from a hedge racing it.
struct UpstreamStream : public pool::StreamWaiter {
  explicit UpstreamStream(Call& owner) : call(owner) {}
  void OnStreamReady(pool::PoolConnection* conn) override;
  void OnAcquireFailed(const absl::Status& status) override;
  bool attached() const { return connection != nullptr; }

  Call& call;
  pool::NodePool* pool = nullptr;            // set while queued or attached
  UpstreamConnection* connection = nullptr;  // set while its stream is open
  std::shared_ptr<void> connection_ref;      // keeps the connection alive while attached
  int32_t id = -1;
  MonoTime started_at{};
  metrics::NodeMetrics* node_metrics = nullptr;  // set while attached
  // Where the stream's request bytes come from: the call's request body (copied into the replay
  // buffer as they go), or a hedge's own copy of the whole request.
  bool reads_hedge_copy = false;
  HeaderRefs response_headers;  // references into the upstream session until forwarded
  CallHook hook;                // UpstreamConnection's list of streams open there
};

class Call {
 public:
  Call(DownstreamSession& downstream, int32_t stream_id);
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

  // Upstream events (from UpstreamConnection's nghttp2 callbacks), for stream `s` of this call.
  // `name` and `value` belong to the upstream session; the call keeps references until the
  // header block is forwarded (trailers, which wait for the body, are copied).
  void OnResponseHeader(UpstreamStream& s, bool trailers, nghttp2_rcbuf* name,
                        nghttp2_rcbuf* value);
  void OnResponseHeadersEnd(UpstreamStream& s, bool end_stream);
  void OnResponseTrailersEnd(UpstreamStream& s);
  void OnResponseData(UpstreamStream& s, const uint8_t* data, size_t len);
  void OnResponseEnd(UpstreamStream& s);
  // The upstream stream closed. `connection_lost` when its connection went away underneath it.
  void OnUpstreamClosed(UpstreamStream& s, uint32_t h2_error_code, bool connection_lost);
  // The upstream request data source.
  ssize_t ReadRequestBody(UpstreamStream& s, uint8_t* buf, size_t length, uint32_t* data_flags);

  // From the pool, through UpstreamStream (pool::StreamWaiter).
  void OnStreamReady(UpstreamStream& s, pool::PoolConnection* conn);
  void OnAcquireFailed(UpstreamStream& s, const absl::Status& status);

  int32_t downstream_stream_id() const { return downstream_id_; }
  // Response bytes held for the app and not taken by it yet.
  size_t response_buffered() const { return response_body_.size(); }
  // Response HEADERS went to the app: a local answer now has to be a reset.
  bool response_started() const { return response_started_; }

  CallHook downstream_hook;  // DownstreamSession's list of its calls
  // The session's watch for server.stream_idle_timeout, and its check of the request's message
  // sizes for server.max_message_size (stream_guard.h).
  StreamStallWatch stall_watch;
  GrpcMessageSizeGuard request_size_guard;

 private:
  // Asks the balancer for a node and its pool for a stream: starts the upstream stream now, waits
  // in the pool's queue, or answers the app with the pool's refusal.
  void AcquireStream();
  // Asks `pool` for a stream slot for `s`: opens the stream now, or leaves `s` queued there.
  // Returns the pool's refusal, or OK.
  absl::Status AcquireOn(UpstreamStream& s, pool::NodePool& pool);
  // The key qpoold sends on this call (the read-only one for a read, when set); empty: none.
  std::string_view ApiKeyFor(Worker& worker) const;
  // Opens stream `s` on `upstream` (a slot there is reserved for it).
  void StartUpstream(UpstreamStream& s, UpstreamConnection& upstream);
  // Retries (docs/retries.md). --------------------------------------------------------------------
  // The attempt in `pool`'s node failed without an answer passed on (the upstream side is already
  // let go): tries again, or answers the app with `held_answer_` (a trailers-only answer from
  // Qdrant) if there is one, else with `final_status`.
  void OnAttemptFailed(const retry::AttemptOutcome& outcome, int node,
                       const absl::Status& final_status);
  // Sends the request again (from the replay copy) after `delay`.
  void ScheduleRetry(Duration delay);
  // The pool could not reach its node: the request never left qpoold. Tries again on a node that
  // may be up (another one, or this one after a backoff), within max_attempts or, when the caller
  // set one, the deadline.
  void OnNodeUnreachable(const absl::Status& status);
  // The method's retry class; selector-dependent writes are read from the replay copy.
  retry::RetryClass RetryClassOfCall();
  // A finished attempt tells its node's retry budget (`failed`: a retryable failure) and passive
  // health (`node_fault`: UNAVAILABLE, a lost connection or a reset) how it went.
  void RecordAttemptResult(int node, bool failed, bool node_fault);
  // The retry now in flight (if any) has ended.
  void EndRetryInFlight();
  void OnPerTryTimeout();
  // Hedged reads: after retry.hedge_delay without an answer, a second attempt on another node.
  void OnHedgeDelay();
  // The hedge answered first (or the attempt failed while the hedge runs): the attempt is
  // cancelled and the hedge becomes the call's attempt.
  void PromoteHedge();
  // Cancels the hedge, if any (its stream, or its wait in a pool's queue).
  void DropHedge();
  // The first response headers commit the call to its upstream attempt: the replay copy goes.
  void Commit();
  // Lets the app send `n` more bytes: bytes qpoold took from it and will not send (again).
  void AcknowledgeRequestBytes(size_t n);
  // Lets go of the attempt's upstream side: resets the stream with `h2_error_code` if it is open,
  // or leaves the pool's queue if it still waits for a stream.
  void ReleaseUpstream(uint32_t h2_error_code);
  // The same for stream `s`, the attempt's or the hedge's.
  void ReleaseStream(UpstreamStream& s, uint32_t h2_error_code);
  // Forgets stream `s` (already closed, or just reset) and the pool it came from.
  void DetachStream(UpstreamStream& s);
  // Nothing more goes upstream: drops the request bytes held and the replay copy, and lets the app
  // send more (the window stays open for its other calls); later bytes are dropped on arrival.
  void DropRequest();
  // Answers the app with `status` and no upstream answer: trailers-only if no response headers
  // went out yet, else trailers after the data already queued.
  void FinishLocally(const absl::Status& status);
  void OnDeadline();
  void ResumeDownstream();
  void ResumeUpstream();
  // Metrics (docs/metrics.md): the end of an upstream stream, and of the call.
  void EndAttempt(UpstreamStream& s);
  void RecordCallEnd();

  DownstreamSession& downstream_;
  const int32_t downstream_id_;
  bool downstream_closed_ = false;

  // Upstream side: `attempt_` is the current attempt (queued, attached, or neither between
  // attempts); `hedge_`, when set, is the other stream object, racing it.
  UpstreamStream stream_a_{*this};
  UpstreamStream stream_b_{*this};
  UpstreamStream* attempt_ = &stream_a_;
  UpstreamStream* hedge_ = nullptr;
  UpstreamStream& spare() { return attempt_ == &stream_a_ ? stream_b_ : stream_a_; }
  ByteQueue hedge_body_;  // the hedge's copy of the request, read by its stream
  std::unique_ptr<Timer> hedge_timer_;
  int hedge_node_ = -1;  // the node whose budget counts the hedge in flight; -1: none

  HeaderRefs request_headers_;
  bool request_headers_done_ = false;
  ByteQueue request_body_;
  bool request_ended_ = false;
  bool discard_request_ = false;  // answered already: request bytes are acknowledged and dropped

  // The replay buffer: a copy of the request bytes sent upstream, kept until the commit point, at
  // most retry.replay_buffer_per_call per call and retry.replay_buffer_total for all calls of the
  // process together; a call over either limit goes on without a copy, and without retries.
  ByteQueue replay_;
  bool replayable_ = true;
  uint32_t attempts_ = 0;           // upstream streams opened
  uint32_t unreachable_tries_ = 0;  // picks of a node that could not be reached
  size_t acknowledged_ahead_ = 0;   // bytes at the front of request_body_ the app got credit for
  std::optional<retry::RetryClass> retry_class_;  // decided at the first failure that needs it
  pool::NodePool* failed_pool_ = nullptr;  // the last attempt's node: a retry prefers another
  // Backoff before the next attempt, or the per-try timeout of the current one (never both).
  std::unique_ptr<Timer> retry_timer_;
  int retry_node_ = -1;  // the node whose budget counts this call's retry in flight; -1: none
  // A trailers-only answer from Qdrant with a retryable status, held while the call decides
  // whether to retry or to pass it on; and what it said.
  HeaderRefs held_answer_;
  retry::AttemptOutcome held_outcome_;

  std::optional<MonoTime> deadline_;
  std::unique_ptr<Timer> deadline_timer_;

  // Metrics: what the call records when it ends (a few relaxed counter updates, no locks).
  metrics::MethodClass method_class_ = metrics::MethodClass::kOther;  // from :path
  int grpc_code_ = -1;     // the final grpc-status, upstream's or qpoold's; -1: none (reset)
  MonoTime started_at_{};  // request headers complete

  HeaderBlock trailers_;
  ByteQueue response_body_;
  bool response_started_ = false;  // response HEADERS submitted downstream
  bool response_ended_ = false;    // nothing more will be added to response_body_ / trailers_
  bool finished_ = false;          // the answer to the app is settled (upstream or local)
};

// The call a downstream session's stream belongs to: nghttp2's stream user data.
inline Call* CallOf(nghttp2_session* session, int32_t stream_id) {
  return static_cast<Call*>(nghttp2_session_get_stream_user_data(session, stream_id));
}

// The call's stream an upstream session's stream is: nghttp2's stream user data.
inline UpstreamStream* UpstreamStreamOf(nghttp2_session* session, int32_t stream_id) {
  return static_cast<UpstreamStream*>(nghttp2_session_get_stream_user_data(session, stream_id));
}

using DownstreamCallList =
    boost::intrusive::list<Call,
                           boost::intrusive::member_hook<Call, CallHook, &Call::downstream_hook>,
                           boost::intrusive::constant_time_size<false>>;
using UpstreamStreamList = boost::intrusive::list<
    UpstreamStream, boost::intrusive::member_hook<UpstreamStream, CallHook, &UpstreamStream::hook>,
    boost::intrusive::constant_time_size<false>>;

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_CALL_H_
