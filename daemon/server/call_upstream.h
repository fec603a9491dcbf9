// The upstream half of a gRPC call: where the retry decisions are carried out. It holds the
// call's two attempts (Attempt, one per upstream try), as Envoy's router keeps its upstream
// requests, and the retry::AttemptController that decides which attempt goes where, when one is
// tried again or raced by a hedge. It is the controller's AttemptHost and carries its decisions
// out: it picks a node and starts an attempt there, cancels one, rewinds the request, holds a
// retryable answer or passes it on, or answers locally. It is also its attempts' AttemptOwner:
// what an attempt reports goes to the controller through it, and the verdicts come back.
//
// It asks of its call only the request (UpstreamRequest, which the call fills from the app), the
// answer (AnswerSink: what Qdrant answered, or a local answer) and the app connection's share of
// the pools; it never sees the app connection. The call sees one upstream answer: the primary
// attempt's. It never learns of hedges: events from an attempt that is not the primary are
// dropped by the attempt.
//
// Ownership: a Call holds its request, its answer and its CallUpstream by value, which holds its
// two Attempts by value (no allocation per attempt).
// Thread-safety: none; one call, one worker thread.
#ifndef QPOOL_DAEMON_SERVER_CALL_UPSTREAM_H_
#define QPOOL_DAEMON_SERVER_CALL_UPSTREAM_H_

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "daemon/common/access_log.h"
#include "daemon/common/event_loop.h"
#include "daemon/retry/attempt_controller.h"
#include "daemon/server/attempt.h"
#include "daemon/server/call_answer.h"
#include "daemon/server/call_context.h"
#include "daemon/server/header_block.h"
#include "daemon/server/upstream_request.h"

namespace qpool::server {

class CallUpstream final : private AttemptOwner, public retry::AttemptHost {
 public:
  // All must outlive the call's upstream half; `account`: the app connection's share of the pools.
  CallUpstream(CallContext& context, UpstreamRequest& request, AnswerSink& answer,
               pool::ShareAccount& account);

  // From the downstream half. ------------------------------------------------------------------
  // The request headers are complete. `deadline`: the caller's; `read`: a read method (qpoold's
  // read-only API key applies). The first attempt (and with it the wait for an upstream stream)
  // starts once the request has ended or holds
  // min(retry.replay_buffer_per_call, server.stream_window / 2) bytes: every Qdrant method is
  // unary, so a request that never ends holds no upstream stream (docs/security.md).
  void Start(std::optional<MonoTime> deadline, bool read);
  // The request took more bytes or its end (UpstreamRequest::Append or End returned true): the
  // first attempt starts if the request is now ready, or the primary's stream reads again.
  void OnRequestMore();
  // The call is over (the app went away, its deadline passed): attempts are cancelled.
  void Stop();
  // The app took `n` bytes of the answer: the primary's stream may receive as many more.
  void ConsumeResponse(size_t n) { attempts_[controller_.primary()].ConsumeResponse(n); }
  // For the access log, once the call is over: upstream attempts sent (hedges not included), and
  // the node of the answer's slot's last attempt (none when no attempt was started).
  void DescribeForLog(AccessRecord& record) const;

  // retry::AttemptHost. -----------------------------------------------------------------------
  void StartAttempt(int slot, retry::AttemptKind kind, int node, int avoid_node) override;
  void CancelAttempt(int slot) override { attempts_[slot].Release(NGHTTP2_CANCEL); }
  int PickHedgeNode(int node) override;
  retry::RetryClass ClassifyRequest() override {
    return shared_.request.Classify(shared_.context.retry.classifier);
  }
  bool CanReplay() const override { return shared_.request.CanReplay(); }
  bool WholeRequestHeld() const override {
    return shared_.request.CanReplay() && shared_.request.AllSent();
  }
  void HoldAnswer(int slot) override { held_answer_.TakeFrom(attempts_[slot].response_headers); }
  void RewindRequest() override;
  void PassOnHeldAnswer() override;
  void FinishWith(const absl::Status& status) override;

 private:
  // AttemptOwner: each report goes to the controller as it is. -------------------------------
  void OnAttemptSent(int slot, int node, MonoTime now) override {
    controller_.OnAttemptSent(slot, node, now);
  }
  void OnAttemptNotStarted(int slot, int node, const absl::Status& status,
                           bool node_unreachable) override {
    controller_.OnAttemptNotStarted(slot, node, status, node_unreachable);
  }
  retry::HeadersVerdict OnAttemptHeaders(int slot, const retry::AttemptOutcome& outcome,
                                         bool whole_answer, bool request_sent) override {
    return controller_.OnResponseHeaders(slot, outcome, whole_answer, request_sent);
  }
  retry::EndVerdict OnAttemptEnded(int slot, const retry::AttemptOutcome& outcome,
                                   const absl::Status& final_status) override {
    return controller_.OnAttemptEnded(slot, outcome, final_status);
  }
  void OnAttemptFinished(int slot) override { controller_.OnAttemptFinished(slot); }
  bool IsPrimary(int slot) const override { return slot == controller_.primary(); }

  // The context, the request, the answer, and what the attempts open their streams with.
  AttemptShared shared_;
  Attempt attempts_[retry::AttemptController::kSlots] = {{shared_, 0}, {shared_, 1}};
  bool start_pending_ = false;  // Start() came; the controller waits for the request
  size_t start_at_bytes_ = 0;   // ... to end or to hold this many bytes
  // A trailers-only answer from Qdrant with a retryable status, held while the controller decides.
  HeaderRefs held_answer_;
  retry::AttemptController controller_;
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_CALL_UPSTREAM_H_
