// The upstream half of a gRPC call: the request as qpoold holds it (headers, the bytes not sent
// yet, the replay copy), and its attempts on pooled Qdrant connections, as Envoy's router keeps
// its upstream requests. Which attempt goes where, when one is tried again or raced by a hedge,
// is decided by retry::AttemptController; this class carries the decisions out on HTTP/2 streams
// (it is the controller's AttemptHost) and turns what the streams report into protocol-neutral
// outcomes (grpc-status, resets and lost connections into retry::Failure).
//
// The downstream half (Call) sees one upstream answer: the primary attempt's. It never learns of
// hedges: events from an attempt that is not the primary are dropped here.
//
// Ownership: a Call holds its CallUpstream by value, which holds its two Attempts by value (no
// allocation per attempt). An attempt's connection refers to it through nghttp2 stream user data
// and an intrusive list; the attempt lets go of both (Release, Detach) before it is reused or
// destroyed.
// Thread-safety: none; one call, one worker thread.
#ifndef QPOOL_DAEMON_SERVER_CALL_UPSTREAM_H_
#define QPOOL_DAEMON_SERVER_CALL_UPSTREAM_H_

#include <nghttp2/nghttp2.h>

#include <boost/intrusive/list.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "absl/status/status.h"
#include "daemon/auth/api_keys.h"
#include "daemon/common/byte_queue.h"
#include "daemon/common/event_loop.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/pool/node_pool.h"
#include "daemon/retry/attempt_controller.h"
#include "daemon/retry/replay_buffer.h"
#include "daemon/server/call_context.h"
#include "daemon/server/header_block.h"

namespace qpool::server {

class Call;
class CallUpstream;
class UpstreamConnection;

// Links a call into its session's list, and an attempt into its connection's; a link removes
// itself when its owner is destroyed.
using CallHook =
    boost::intrusive::list_member_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>>;

// One upstream try of a call: its place in a pool's queue, then its stream on a pooled
// connection. UpstreamConnection delivers the stream's events to it (it is the stream's nghttp2
// user data).
class Attempt : public pool::StreamWaiter {
 public:
  Attempt(CallUpstream& owner, int slot) : slot(slot), owner_(owner) {}
  Attempt(const Attempt&) = delete;
  Attempt& operator=(const Attempt&) = delete;

  // From the pool.
  void OnStreamReady(pool::PoolConnection* conn) override;
  void OnAcquireFailed(const absl::Status& status) override;
  // From UpstreamConnection's nghttp2 callbacks. `name` and `value` belong to the upstream
  // session; the attempt keeps references until the header block is forwarded (trailers, which
  // wait for the body, are copied).
  void OnResponseHeader(bool trailers, nghttp2_rcbuf* name, nghttp2_rcbuf* value);
  void OnResponseHeadersEnd(bool end_stream);
  void OnResponseTrailersEnd();
  void OnResponseData(const uint8_t* data, size_t len);
  void OnResponseEnd();
  // The stream closed; `connection_lost` when its connection went away underneath it.
  void OnClosed(uint32_t h2_error_code, bool connection_lost);
  // The stream's request data source.
  ssize_t ReadRequestBody(uint8_t* buf, size_t length, uint32_t* data_flags);

  bool attached() const { return connection != nullptr; }
  // Lets go of the upstream side: resets the stream with `h2_error_code` if it is open, or leaves
  // the pool's queue if it still waits; then forgets both.
  void Release(uint32_t h2_error_code);
  // Forgets the stream (closed already, or just reset) and the pool it came from.
  void Detach();
  // Metrics: the attempt's time on its stream (docs/metrics.md), once.
  void EndMetrics(MonoTime now);

  const int slot;                            // its place in the call: 0 or 1
  int node = -1;                             // config order; set while queued or attached
  pool::NodePool* pool = nullptr;            // set while queued or attached
  UpstreamConnection* connection = nullptr;  // set while its stream is open
  std::shared_ptr<void> connection_ref;      // keeps the connection alive while attached
  int32_t id = -1;
  MonoTime started_at{};
  metrics::NodeMetrics* node_metrics = nullptr;  // set while attached
  // A hedge reads its own copy of the whole request (CallUpstream::hedge_copy_); a primary reads
  // the call's request body.
  bool reads_own_copy = false;
  HeaderRefs response_headers;  // references into the upstream session until forwarded
  CallHook hook;                // UpstreamConnection's list of streams open there

 private:
  CallUpstream& owner_;
};

class CallUpstream final : public retry::AttemptHost {
 public:
  // What qpoold holds of the app's request.
  enum class RequestState : uint8_t {
    kHeaders,  // request headers arriving
    kBody,     // headers complete; body arriving
    kEnded,    // the app finished sending (END_STREAM)
    kDropped,  // the call is answered: bytes are acknowledged and dropped as they arrive
  };

  // `context` (the worker's) must outlive the call.
  CallUpstream(Call& call, CallContext& context);

  // The request, from the downstream half. -----------------------------------------------------
  void AddRequestHeader(nghttp2_rcbuf* name, nghttp2_rcbuf* value) {
    request_headers_.Add(name, value);
  }
  // The request headers are complete at `now`. `deadline`: the caller's. The first attempt (and
  // with it the wait for an upstream stream) starts once the request has ended or holds
  // min(retry.replay_buffer_per_call, server.stream_window / 2) bytes: every Qdrant method is
  // unary, so a request that never ends holds no upstream stream (docs/security.md).
  void Start(MonoTime now, std::optional<MonoTime> deadline);
  void OnRequestData(const uint8_t* data, size_t len);
  void OnRequestEnd();
  // Nothing more goes upstream: drops the request bytes held and the replay copy, and lets the
  // app send more (the window stays open for its other calls).
  void DropRequest();
  // The call is over (the app went away, its deadline passed): attempts are cancelled.
  void Stop();
  // The app took `n` bytes of the answer: the primary's stream may receive as many more.
  void ConsumeResponse(size_t n);
  RequestState request_state() const { return request_state_; }
  // For the access log, once the call is over: the retry class if the retry logic decided it,
  // upstream attempts sent (hedges not included), the node of the answer's slot's last attempt
  // (-1: none was started).
  std::optional<retry::RetryClass> retry_class() const { return retry_class_; }
  uint32_t attempts() const { return controller_.attempts(); }
  int last_node() const { return attempts_[controller_.primary()].node; }
  // Tests only: attempt slot `slot` (0 or 1), to deliver its stream's events by hand.
  Attempt& attempt_for_testing(int slot) { return attempts_[slot]; }

  // From the attempts. ------------------------------------------------------------------------
  bool IsPrimary(const Attempt& a) const { return a.slot == controller_.primary(); }
  Call& call() { return call_; }
  CallContext& context() { return context_; }
  ByteQueue& hedge_copy() { return hedge_copy_; }
  // Opens `a`'s stream on `conn` (a slot there is reserved for it).
  void Open(Attempt& a, UpstreamConnection& conn);
  void OnAcquireFailed(Attempt& a, const absl::Status& status);
  void OnResponseHeadersEnd(Attempt& a, bool end_stream);
  void OnAttemptClosed(Attempt& a, uint32_t h2_error_code, bool connection_lost);
  ssize_t ReadRequestBody(Attempt& a, uint8_t* buf, size_t length, uint32_t* data_flags);

  // retry::AttemptHost. -----------------------------------------------------------------------
  void StartAttempt(int slot, retry::AttemptKind kind, int node, int avoid_node) override;
  void CancelAttempt(int slot) override;
  int PickHedgeNode(int node) override;
  retry::RetryClass ClassifyRequest() override;
  bool CanReplay() const override { return replay_.intact(); }
  bool WholeRequestHeld() const override {
    return replay_.intact() && request_state_ == RequestState::kEnded && request_body_.empty();
  }
  void HoldAnswer(int slot) override;
  void RewindRequest() override;
  void PassOnHeldAnswer() override;
  void FinishWith(const absl::Status& status) override;

 private:
  // Lets the app send `n` more bytes: bytes qpoold took from it and will not send (again).
  void AcknowledgeRequestBytes(size_t n);
  // Starts the controller once Start() was called and the request is complete or large enough.
  void MaybeStartAttempts();
  // The key qpoold sends on this call (the read-only one for a read, when set); empty: none.
  // The keys are taken when the first attempt opens and kept for the call's retries and hedges.
  std::string_view ApiKeyFor();

  Call& call_;
  CallContext& context_;
  Attempt attempts_[retry::AttemptController::kSlots] = {{*this, 0}, {*this, 1}};
  RequestState request_state_ = RequestState::kHeaders;
  HeaderRefs request_headers_;
  ByteQueue request_body_;         // taken from the app, not sent yet
  size_t acknowledged_ahead_ = 0;  // bytes at the front of request_body_ the app got credit for
  retry::ReplayBuffer replay_;     // a copy of the bytes sent, until the commit point
  ByteQueue hedge_copy_;           // the hedge's own copy of the whole request, read by it
  std::optional<retry::RetryClass> retry_class_;  // decided when first needed
  std::optional<MonoTime> deadline_;
  bool start_pending_ = false;  // Start() came; the controller waits for the request
  size_t start_at_bytes_ = 0;   // ... to end or to hold this many bytes
  // qpoold's API keys as the call's first attempt found them (null: none, or not opened yet).
  std::shared_ptr<const auth::ApiKeys> keys_;
  // A trailers-only answer from Qdrant with a retryable status, held while the controller decides.
  HeaderRefs held_answer_;
  retry::AttemptController controller_;
};

// The attempt an upstream session's stream is: nghttp2's stream user data.
inline Attempt* AttemptOf(nghttp2_session* session, int32_t stream_id) {
  return static_cast<Attempt*>(nghttp2_session_get_stream_user_data(session, stream_id));
}

using AttemptList =
    boost::intrusive::list<Attempt,
                           boost::intrusive::member_hook<Attempt, CallHook, &Attempt::hook>,
                           boost::intrusive::constant_time_size<false>>;

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_CALL_UPSTREAM_H_
