// The upstream half of a gRPC call: where the retry decisions are carried out. It holds the
// request as qpoold keeps it (UpstreamRequest) and the call's two attempts (Attempt, one per
// upstream try), as Envoy's router keeps its upstream requests. Which attempt goes where, when one
// is tried again or raced by a hedge, is decided by retry::AttemptController; this class is the
// controller's AttemptHost and carries its decisions out: it picks a node and starts an attempt
// there, cancels one, rewinds the request, holds a retryable answer or passes it on, or answers
// locally. The attempts report to the controller themselves (attempt.h).
//
// The downstream half (Call) sees one upstream answer: the primary attempt's. It never learns of
// hedges: events from an attempt that is not the primary are dropped by the attempt.
//
// Ownership: a Call holds its CallUpstream by value, which holds its request and its two Attempts
// by value (no allocation per attempt).
// Thread-safety: none; one call, one worker thread.
#ifndef QPOOL_DAEMON_SERVER_CALL_UPSTREAM_H_
#define QPOOL_DAEMON_SERVER_CALL_UPSTREAM_H_

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "daemon/auth/api_keys.h"
#include "daemon/common/event_loop.h"
#include "daemon/retry/attempt_controller.h"
#include "daemon/server/attempt.h"
#include "daemon/server/call_context.h"
#include "daemon/server/header_block.h"
#include "daemon/server/upstream_request.h"

namespace qpool::server {

class Call;

class CallUpstream final : public retry::AttemptHost {
 public:
  // `context` (the worker's) must outlive the call.
  CallUpstream(Call& call, CallContext& context);

  // From the downstream half. ------------------------------------------------------------------
  // The request: the app's headers and body go in here (UpstreamRequest::AddHeader, Append, End;
  // then OnRequestMore), and it is dropped once the call is answered (Drop).
  UpstreamRequest& request() { return request_; }
  // The request headers are complete at `now`. `deadline`: the caller's. The first attempt (and
  // with it the wait for an upstream stream) starts once the request has ended or holds
  // min(retry.replay_buffer_per_call, server.stream_window / 2) bytes: every Qdrant method is
  // unary, so a request that never ends holds no upstream stream (docs/security.md).
  void Start(MonoTime now, std::optional<MonoTime> deadline);
  // The request took more bytes or its end (UpstreamRequest::Append or End returned true): the
  // first attempt starts if the request is now ready, or the primary's stream reads again.
  void OnRequestMore();
  // The call is over (the app went away, its deadline passed): attempts are cancelled.
  void Stop();
  // The app took `n` bytes of the answer: the primary's stream may receive as many more.
  void ConsumeResponse(size_t n) { attempts_[controller_.primary()].ConsumeResponse(n); }
  // For the access log, once the call is over: upstream attempts sent (hedges not included), the
  // node of the answer's slot's last attempt (-1: none was started).
  uint32_t attempts() const { return controller_.attempts(); }
  int last_node() const { return attempts_[controller_.primary()].node; }
  // Tests only: attempt slot `slot` (0 or 1), to deliver its stream's events by hand.
  Attempt& attempt_for_testing(int slot) { return attempts_[slot]; }

  // retry::AttemptHost. -----------------------------------------------------------------------
  void StartAttempt(int slot, retry::AttemptKind kind, int node, int avoid_node) override;
  void CancelAttempt(int slot) override { attempts_[slot].Release(NGHTTP2_CANCEL); }
  int PickHedgeNode(int node) override;
  retry::RetryClass ClassifyRequest() override {
    return request_.Classify(context_.retry.classifier);
  }
  bool CanReplay() const override { return request_.CanReplay(); }
  bool WholeRequestHeld() const override { return request_.CanReplay() && request_.AllSent(); }
  void HoldAnswer(int slot) override { held_answer_.TakeFrom(attempts_[slot].response_headers); }
  void RewindRequest() override;
  void PassOnHeldAnswer() override;
  void FinishWith(const absl::Status& status) override;

 private:
  // An attempt reports to the controller, reads the request and passes its answer to the call
  // itself: it is the part of this class that lives on one stream.
  friend class Attempt;

  Call& call_;
  CallContext& context_;
  UpstreamRequest request_;
  Attempt attempts_[retry::AttemptController::kSlots] = {{*this, 0}, {*this, 1}};
  std::optional<MonoTime> deadline_;
  bool start_pending_ = false;  // Start() came; the controller waits for the request
  size_t start_at_bytes_ = 0;   // ... to end or to hold this many bytes
  // qpoold's API keys as the call's first attempt found them (null: none, or not opened yet).
  std::shared_ptr<const auth::ApiKeys> keys_;
  // A trailers-only answer from Qdrant with a retryable status, held while the controller decides.
  HeaderRefs held_answer_;
  retry::AttemptController controller_;
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_CALL_UPSTREAM_H_
