#include "daemon/retry/attempt_controller.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace qpool::retry {

void AttemptController::Start(MonoTime now, std::optional<MonoTime> deadline,
                              bool callers_deadline) {
  context_.OnCallStarted();
  deadline_ = deadline;
  callers_deadline_ = callers_deadline && deadline.has_value();
  started_at_ = now;
  StartPrimary();
}

void AttemptController::StartPrimary() {
  SetWaitingForNode(false);  // a wait for a node (if any) is over: this is the next try
  state_ = State::kTrying;
  tries_[primary_].phase = Phase::kWaiting;
  host_.StartAttempt(primary_, attempts_ == 0 ? AttemptKind::kFirst : AttemptKind::kRetry,
                     /*node=*/-1, /*avoid_node=*/failed_node_);
}

void AttemptController::OnAttemptSent(int slot, int node, MonoTime now) {
  Try& t = tries_[slot];
  t.phase = Phase::kSent;
  t.node = node;
  t.sent_at = now;
  if (slot == hedge_) return;
  attempts_++;
  // Per-try timeouts and hedges are for reads whose request can be sent again.
  const bool per_try = context_.per_try_timeout > Duration::zero();
  const bool hedge =
      attempts_ == 1 && context_.hedge_delay > Duration::zero() && context_.nodes() > 1;
  if ((!per_try && !hedge) || !context_.policy_retries || !host_.CanReplay() ||
      host_.ClassifyRequest() != RetryClass::kRead) {
    return;
  }
  if (per_try) TimerOf(retry_timer_).Arm(context_.per_try_timeout, [this] { OnPerTryTimeout(); });
  if (hedge) TimerOf(hedge_timer_).Arm(context_.hedge_delay, [this] { OnHedgeDelay(); });
}

void AttemptController::OnAttemptNotStarted(int slot, int node, const absl::Status& status,
                                            bool node_unreachable) {
  tries_[slot].phase = Phase::kIdle;
  if (node_unreachable) failed_node_ = node;
  if (slot == hedge_) {
    DropHedge();  // no stream for the hedge: the primary goes on alone
  } else if (node_unreachable) {
    OnNodeUnreachable(status);
  } else {
    GiveUp(status);
  }
}

HeadersVerdict AttemptController::OnResponseHeaders(int slot, const AttemptOutcome& outcome,
                                                    bool whole_answer, bool request_sent) {
  const bool retryable = whole_answer && RetryableAnswer(outcome);
  if (slot == hedge_) {
    if (retryable) {
      // The hedge failed; the primary may still answer.
      context_.RecordAttemptResult(tries_[slot].node, /*failed=*/true, NodeFault(outcome.failure));
      DropHedge();
      return HeadersVerdict::kDiscard;
    }
    PromoteHedge();  // the hedge answered first: it is the call's attempt from here on
  } else if (retryable && HedgeSent()) {
    // The primary failed while a hedge runs: the hedge is the call's attempt from here on.
    context_.RecordAttemptResult(tries_[slot].node, /*failed=*/true, NodeFault(outcome.failure));
    PromoteHedge();
    return HeadersVerdict::kDiscard;
  }
  Try& t = tries_[primary_];
  if (retryable && host_.CanReplay()) {
    // A whole answer with a status worth retrying: held while the call decides.
    host_.HoldAnswer(primary_);
    held_ = true;
    held_outcome_ = outcome;
    held_outcome_.took = loop_.Now() - t.sent_at;
    if (!request_sent) {
      // The upstream answered before the whole request went out: stop sending it.
      const int node = t.node;
      CancelSlot(primary_);
      Fail(held_outcome_, node, absl::OkStatus());
    }
    // Otherwise the exchange ends next, and OnAttemptEnded decides.
    return HeadersVerdict::kHeld;
  }
  context_.RecordAttemptResult(t.node, /*failed=*/false, /*node_fault=*/false);
  // The commit point.
  if (retry_timer_) retry_timer_->Cancel();  // the per-try timeout
  if (hedge_ >= 0 || hedge_timer_) DropHedge();
  state_ = State::kCommitted;
  return HeadersVerdict::kForward;
}

EndVerdict AttemptController::OnAttemptEnded(int slot, AttemptOutcome outcome,
                                             const absl::Status& final_status) {
  Try& t = tries_[slot];
  const int node = t.node;
  t.phase = Phase::kIdle;
  const bool lost = outcome.failure == Failure::kUnavailable;
  if (slot == hedge_) {
    // The hedge ended without an answer (or after a failed one): the primary goes on alone.
    if (lost) context_.RecordAttemptResult(node, /*failed=*/true, /*node_fault=*/true);
    DropHedge();
    return EndVerdict::kHandled;
  }
  if (HedgeSent() && state_ == State::kTrying && !held_) {
    // The primary failed while a hedge runs: the hedge is the call's attempt from here on.
    if (lost) context_.RecordAttemptResult(node, /*failed=*/true, /*node_fault=*/true);
    PromoteHedge();
    return EndVerdict::kHandled;
  }
  DropHedge();
  if (held_) {
    Fail(held_outcome_, node, absl::OkStatus());
    return EndVerdict::kHandled;
  }
  outcome.took = loop_.Now() - t.sent_at;
  switch (outcome.failure) {
    case Failure::kNeverReached:
    case Failure::kStaleConnection:
      Fail(outcome, node, final_status);
      return EndVerdict::kHandled;
    case Failure::kNotSent:
      // Refused on this side: no node's fault, and a replay would fail the same way.
      GiveUp(final_status);
      return EndVerdict::kHandled;
    case Failure::kUnavailable:
      // Before the commit point the upstream may have processed the request: a policy retry, as
      // for UNAVAILABLE. After it, part of the answer is out: the call ends here.
      if (state_ == State::kCommitted) {
        GiveUp(final_status);
      } else {
        Fail(outcome, node, final_status);
      }
      return EndVerdict::kHandled;
    default:
      // Ended by the upstream without an answer (a reset): passed on as the app would have seen
      // it talking to the upstream directly.
      context_.RecordAttemptResult(node, /*failed=*/true, NodeFault(outcome.failure));
      state_ = State::kDone;
      return EndVerdict::kPassOnClose;
  }
}

void AttemptController::Stop() {
  SetWaitingForNode(false);
  RetryBudget::StopWaiting(*this);
  pending_retry_.reset();
  if (retry_timer_) retry_timer_->Cancel();
  retry_ticket_.Release();
  if (hedge_ >= 0 || hedge_timer_) DropHedge();
  CancelSlot(primary_);
  held_ = false;
  if (state_ != State::kIdle) state_ = State::kDone;
}

void AttemptController::Fail(const AttemptOutcome& outcome, int node,
                             const absl::Status& final_status) {
  failed_node_ = node;
  DropHedge();  // a hedge still waiting for a stream would race the retry
  retry_ticket_.Release();
  const bool never_reached =
      outcome.failure == Failure::kNeverReached || outcome.failure == Failure::kStaleConnection;
  if (!never_reached) {
    context_.RecordAttemptResult(node, /*failed=*/true, NodeFault(outcome.failure));
  }
  if (state_ != State::kDone && host_.CanReplay() && node >= 0 &&
      (never_reached || context_.policy_retries)) {
    const RetryClass retry_class = host_.ClassifyRequest();
    // Stale-connection attempts have their own bound and do not use up retry.max_attempts.
    const bool stale = outcome.failure == Failure::kStaleConnection;
    if (stale) stale_connection_attempts_++;
    const uint32_t attempts_made =
        stale ? stale_connection_attempts_ : attempts_ - stale_connection_attempts_;
    RetryDecision decision = context_.policy.Decide(retry_class, attempts_made, outcome,
                                                    loop_.Now(), deadline_, random_);
    RetryBudget& budget = context_.budgets[static_cast<size_t>(node)];
    if (decision.retry && decision.reason != RetryReason::kTransparent) {
      // Storm control: the node's tokens, or the retries already running, may say no.
      // Transparent retries cost the node nothing: the request never reached it.
      if (std::optional<RetryRefusal> refusal = budget.Refusal(context_.active_calls)) {
        // No place among the retries in flight: the call waits for one if it may. The tokens
        // still bound how many retries a failing node gets; this limit bounds how many run at
        // once, and a burst of calls losing their connection together (a node restart) should
        // not fail for it.
        if (*refusal == RetryRefusal::kInFlight &&
            WaitForRetryPlace(node, decision, retry_class, outcome.took, final_status)) {
          return;
        }
        decision.retry = false;
        decision.refused = refusal;
      }
    }
    if (decision.retry) {
      if (decision.reason != RetryReason::kTransparent) retry_ticket_ = RetryTicket(budget);
      if (context_.events != nullptr) context_.events->OnRetry(retry_class, decision.reason);
      SPDLOG_DEBUG("attempt {} failed ({}), retrying in {} us", attempts_,
                   RetryReasonName(decision.reason),
                   std::chrono::duration_cast<std::chrono::microseconds>(decision.delay).count());
      ScheduleRetry(decision.delay);
      return;
    }
    if (decision.refused && context_.events != nullptr) {
      context_.events->OnRetryRefused(*decision.refused);
    }
  }
  FinishWithoutRetry(final_status);
}

void AttemptController::FinishWithoutRetry(const absl::Status& final_status) {
  if (held_) {
    // Pass the upstream's own answer on, as it was.
    held_ = false;
    state_ = State::kDone;
    host_.PassOnHeldAnswer();
    return;
  }
  GiveUp(final_status);
}

bool AttemptController::WaitForRetryPlace(int node, const RetryDecision& decision,
                                          RetryClass retry_class, Duration took,
                                          const absl::Status& final_status) {
  // Waiting calls are bounded like queued ones (upstream.max_pending, this worker's share).
  if (!waiting_for_node_ && context_.waiting_for_node >= context_.max_waiting_for_node) {
    return false;
  }
  const MonoTime now = loop_.Now();
  pending_retry_ =
      PendingRetry{node, decision, retry_class, took, now + decision.delay, final_status};
  const std::optional<MonoTime> end = RetryPlaceWaitEnd();
  if (!end || *end - now < std::chrono::milliseconds(1)) {
    pending_retry_.reset();
    return false;
  }
  SetWaitingForNode(true);
  state_ = State::kBackoff;
  QueueForRetryPlace(*end);
  return true;
}

void AttemptController::QueueForRetryPlace(MonoTime end) {
  // A place frees when a retry's attempt ends, fails, or finds its node unreachable; the budget
  // then wakes the first call in line (OnRetryPlaceFreed). The timer ends the wait.
  context_.budgets[static_cast<size_t>(pending_retry_->node)].Wait(*this);
  TimerOf(retry_timer_).Arm(end - loop_.Now(), [this] { OnRetryPlaceLook(); });
}

bool AttemptController::OnRetryPlaceFreed() {
  RetryBudget& budget = context_.budgets[static_cast<size_t>(pending_retry_->node)];
  const std::optional<RetryRefusal> refusal = budget.Refusal(context_.active_calls);
  if (refusal == RetryRefusal::kInFlight) return false;  // still none: first in line still
  // The place is this call's from now (retry_ticket_ is empty while the call waits: Fail released
  // it). Out of the queue, the timer goes on (no time passes): starting the retry calls the host,
  // which the call that freed the place, still on the stack, must not see happen.
  if (!refusal) retry_ticket_ = RetryTicket(budget);
  TimerOf(retry_timer_).Arm(Duration::zero(), [this] { OnRetryPlaceLook(); });
  return true;
}

std::optional<MonoTime> AttemptController::RetryPlaceWaitEnd() const {
  std::optional<MonoTime> end;
  if (!callers_deadline_) {
    // Without a deadline of its own the call waits as it would for an unreachable node; with
    // retry.unreachable_wait off, not at all (the refusal fails it, as before the wait).
    if (context_.unreachable_wait <= Duration::zero()) return std::nullopt;
    end = started_at_ + context_.unreachable_wait;
  }
  if (deadline_) {
    // The retry must be able to run as long as the failed attempt did, and its answer reach the
    // caller before the caller gives up (UnreachableAnswerMargin).
    const Duration margin =
        callers_deadline_ ? UnreachableAnswerMargin(*deadline_ - started_at_) : Duration::zero();
    const MonoTime latest = *deadline_ - margin - pending_retry_->took;
    end = end ? std::min(*end, latest) : latest;
  }
  return end;
}

void AttemptController::OnRetryPlaceLook() {
  const MonoTime now = loop_.Now();
  RetryBudget& budget = context_.budgets[static_cast<size_t>(pending_retry_->node)];
  RetryBudget::StopWaiting(*this);
  std::optional<RetryRefusal> refusal;
  if (!retry_ticket_.held()) {
    // At the window's end, or woken because the tokens ran out: one last look.
    refusal = budget.Refusal(context_.active_calls);
    if (!refusal) retry_ticket_ = RetryTicket(budget);
  }
  if (!refusal) {
    const PendingRetry retry = std::move(*pending_retry_);
    pending_retry_.reset();
    SetWaitingForNode(false);
    if (context_.events != nullptr) {
      context_.events->OnRetry(retry.retry_class, retry.decision.reason);
    }
    ScheduleRetry(std::max(Duration::zero(), retry.due - now));
    return;
  }
  if (*refusal == RetryRefusal::kInFlight) {
    // The tokens that woke the call came back meanwhile: it waits on, at the end of the line.
    const std::optional<MonoTime> end = RetryPlaceWaitEnd();
    if (end && *end - now >= std::chrono::milliseconds(1)) {
      QueueForRetryPlace(*end);
      return;
    }
  }
  // No place in time, or the node's tokens ran out meanwhile: the failure goes to the app.
  absl::Status status = std::move(pending_retry_->final_status);
  pending_retry_.reset();
  SetWaitingForNode(false);
  if (context_.events != nullptr) context_.events->OnRetryRefused(*refusal);
  if (!status.ok()) {
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(now - started_at_);
    status =
        absl::Status(status.code(),
                     *refusal == RetryRefusal::kInFlight
                         ? absl::StrCat(status.message(),
                                        "; not retried: no place among the retries in flight "
                                        "(retry.min_retries_in_flight) after ",
                                        waited.count(), " ms")
                         : absl::StrCat(status.message(),
                                        "; not retried: the node's retry tokens ran out meanwhile "
                                        "(retry.budget_max_tokens)"));
  }
  FinishWithoutRetry(status);
}

void AttemptController::OnNodeUnreachable(const absl::Status& status) {
  // A retry whose attempt found no node to reach adds no load there: its place among the retries
  // in flight goes back to the budget, for a call that can use it.
  retry_ticket_.Release();
  const RetryPolicy& policy = context_.policy;
  // Nothing was sent: any method may go again, after a jittered backoff (at least 1 ms: the retry
  // runs from the timer, never from inside the host's own StartAttempt). How long the call waits
  // for a node, like a gRPC wait-for-ready call:
  //  - with the caller's own deadline, until a try could no longer start before it, less a
  //    margin (UnreachableAnswerMargin) for the answer that ends the wait to reach the caller:
  //    qpoold's clock starts when it reads grpc-timeout, after the caller's, and an answer sent
  //    at the deadline arrives after the caller gave up, which then sees DEADLINE_EXCEEDED
  //    instead of UNAVAILABLE with the reason;
  //  - without one, for retry.unreachable_wait from the call's start (the last try at its end),
  //    or, with that off, for retry.max_attempts tries.
  // qpoold's own deadline (rest.request_timeout) bounds the latter too.
  Duration delay = std::max<Duration>(policy.Backoff(++unreachable_tries_, random_),
                                      std::chrono::milliseconds(1));
  const MonoTime now = loop_.Now();
  const char* bound = " (retry.max_attempts)";
  bool in_time = true;
  if (callers_deadline_) {
    bound = ", until the deadline";
  } else if (context_.unreachable_wait > Duration::zero()) {
    bound = " (retry.unreachable_wait)";
    const MonoTime window_end = started_at_ + context_.unreachable_wait;
    in_time = window_end - now >= std::chrono::milliseconds(1);
    if (in_time) delay = std::min<Duration>(delay, window_end - now);
  } else {
    in_time = unreachable_tries_ < policy.options().max_attempts;
  }
  const Duration margin =
      callers_deadline_ ? UnreachableAnswerMargin(*deadline_ - started_at_) : Duration::zero();
  if (in_time && deadline_ && now + delay + margin >= *deadline_) {
    in_time = false;
    bound = ", until the deadline";
  }
  // Waiting calls are bounded like queued ones (upstream.max_pending, this worker's share).
  const bool room = waiting_for_node_ || context_.waiting_for_node < context_.max_waiting_for_node;
  if (state_ == State::kDone || !in_time || !room) {
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(now - started_at_);
    GiveUp(absl::Status(
        status.code(),
        absl::StrCat(
            status.message(), "; tried ", unreachable_tries_,
            unreachable_tries_ == 1 ? " time" : " times", " over ", waited.count(), " ms",
            room ? bound : "; upstream.max_pending calls wait for a node already, none more")));
    return;
  }
  if (context_.events != nullptr) {
    context_.events->OnRetry(host_.ClassifyRequest(), RetryReason::kTransparent);
  }
  SetWaitingForNode(true);
  ScheduleRetry(delay);
}

void AttemptController::SetWaitingForNode(bool waiting) {
  if (waiting == waiting_for_node_) return;
  waiting_for_node_ = waiting;
  if (waiting) {
    context_.waiting_for_node++;
  } else {
    context_.waiting_for_node--;
  }
}

void AttemptController::ScheduleRetry(Duration delay) {
  held_ = false;
  host_.RewindRequest();
  if (delay <= Duration::zero()) {
    StartPrimary();
    return;
  }
  state_ = State::kBackoff;
  TimerOf(retry_timer_).Arm(delay, [this] { StartPrimary(); });
}

void AttemptController::OnPerTryTimeout() {
  if (state_ != State::kTrying || tries_[primary_].phase != Phase::kSent) return;
  if (HedgeSent()) {
    PromoteHedge();  // the timed-out primary goes; the hedge already races it
    return;
  }
  const Try& t = tries_[primary_];
  const int node = t.node;
  AttemptOutcome outcome;
  outcome.failure = Failure::kPerTryTimeout;
  outcome.took = loop_.Now() - t.sent_at;
  CancelSlot(primary_);
  Fail(outcome, node,
       absl::DeadlineExceededError(
           "qpool: no answer within retry.per_try_timeout, and no retry allowed"));
}

void AttemptController::OnHedgeDelay() {
  // Only a read whose primary is out with the whole request, with no answer yet.
  if (state_ != State::kTrying || hedge_ >= 0 || tries_[primary_].phase != Phase::kSent || held_ ||
      !host_.WholeRequestHeld()) {
    return;
  }
  const int node = tries_[primary_].node;
  const int other = host_.PickHedgeNode(node);
  if (node < 0 || other < 0) return;
  RetryBudget& budget = context_.budgets[static_cast<size_t>(node)];
  if (std::optional<RetryRefusal> refusal = budget.Refusal(context_.active_calls)) {
    if (context_.events != nullptr) context_.events->OnRetryRefused(*refusal);
    return;
  }
  const int slot = 1 - primary_;
  hedge_ = static_cast<int8_t>(slot);
  tries_[slot].ticket = RetryTicket(budget);
  tries_[slot].phase = Phase::kWaiting;
  if (context_.events != nullptr) context_.events->OnHedge(/*won=*/false);
  host_.StartAttempt(slot, AttemptKind::kHedge, other, node);
}

void AttemptController::PromoteHedge() {
  const int loser = primary_;
  primary_ = hedge_;
  hedge_ = -1;
  CancelSlot(loser);
  tries_[primary_].ticket.Release();
  if (context_.events != nullptr) context_.events->OnHedge(/*won=*/true);
}

void AttemptController::DropHedge() {
  if (hedge_timer_) hedge_timer_->Cancel();
  if (hedge_ < 0) return;
  const int slot = hedge_;
  hedge_ = -1;
  CancelSlot(slot);
  tries_[slot].ticket.Release();
}

void AttemptController::CancelSlot(int slot) {
  if (tries_[slot].phase == Phase::kIdle) return;
  tries_[slot].phase = Phase::kIdle;
  host_.CancelAttempt(slot);
}

void AttemptController::GiveUp(const absl::Status& status) {
  SetWaitingForNode(false);
  DropHedge();
  state_ = State::kDone;
  host_.FinishWith(status);
}

Timer& AttemptController::TimerOf(std::unique_ptr<Timer>& timer) {
  if (!timer) timer = loop_.CreateTimer();
  return *timer;
}

}  // namespace qpool::retry
