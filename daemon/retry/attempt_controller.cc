#include "daemon/retry/attempt_controller.h"

#include <algorithm>
#include <utility>

#include "spdlog/spdlog.h"

namespace qpool::retry {

void AttemptController::Start(MonoTime now, std::optional<MonoTime> deadline,
                              bool callers_deadline) {
  context_.OnCallStarted();
  window_.deadline = deadline;
  window_.callers_deadline = callers_deadline && deadline.has_value();
  window_.started_at = now;
  StartPrimary();
}

void AttemptController::StartPrimary() {
  waiting_.Set(false);  // a wait for a node (if any) is over: this is the next try
  state_ = State::kTrying;
  const int slot = slots_.primary();
  slots_.Asked(slot);
  host_.StartAttempt(slot, attempts_ == 0 ? AttemptKind::kFirst : AttemptKind::kRetry,
                     /*node=*/-1, /*avoid_node=*/failed_node_);
}

void AttemptController::OnAttemptSent(int slot, int node, MonoTime now) {
  slots_.Sent(slot, node, now);
  if (slots_.is_hedge(slot)) return;
  attempts_++;
  // Per-try timeouts and hedges are for reads whose request can be sent again.
  const bool per_try = context_.per_try_timeout > Duration::zero();
  const bool hedge =
      attempts_ == 1 && context_.hedge_delay > Duration::zero() && context_.nodes() > 1;
  if ((!per_try && !hedge) || !context_.policy_retries || !host_.CanReplay() ||
      host_.ClassifyRequest() != RetryClass::kRead) {
    return;
  }
  if (per_try) retry_timer_.Arm(context_.per_try_timeout, [this] { OnPerTryTimeout(); });
  if (hedge) slots_.ArmHedge(context_.hedge_delay);
}

void AttemptController::OnAttemptNotStarted(int slot, int node, const absl::Status& status,
                                            bool node_unreachable) {
  slots_.Released(slot);
  if (node_unreachable) failed_node_ = node;
  if (slots_.is_hedge(slot)) {
    slots_.DropHedge();  // no stream for the hedge: the primary goes on alone
  } else if (node_unreachable) {
    OnNodeUnreachable(status);
  } else {
    GiveUp(status);
  }
}

HeadersVerdict AttemptController::OnResponseHeaders(int slot, const AttemptOutcome& outcome,
                                                    bool whole_answer, bool request_sent) {
  const bool retryable = whole_answer && RetryableAnswer(outcome);
  if (slots_.is_hedge(slot)) {
    if (retryable) {
      // The hedge failed; the primary may still answer.
      context_.RecordAttemptResult(slots_.node(slot), /*failed=*/true, NodeFault(outcome.failure));
      slots_.DropHedge();
      return HeadersVerdict::kDiscard;
    }
    slots_.Promote();  // the hedge answered first: it is the call's attempt from here on
  } else if (retryable && slots_.hedge_sent()) {
    // The primary failed while a hedge runs: the hedge is the call's attempt from here on.
    context_.RecordAttemptResult(slots_.node(slot), /*failed=*/true, NodeFault(outcome.failure));
    slots_.Promote();
    return HeadersVerdict::kDiscard;
  }
  const int primary = slots_.primary();
  if (retryable && host_.CanReplay()) {
    // A whole answer with a status worth retrying: held while the call decides, and no hedge
    // starts from here on.
    host_.HoldAnswer(primary);
    held_ = true;
    held_outcome_ = outcome;
    held_outcome_.took = loop_.Now() - slots_.sent_at(primary);
    slots_.CancelHedgeDelay();
    if (!request_sent) {
      // The upstream answered before the whole request went out: stop sending it.
      const int node = slots_.node(primary);
      slots_.Cancel(primary);
      Fail(held_outcome_, node, absl::OkStatus());
    }
    // Otherwise the exchange ends next, and OnAttemptEnded decides.
    return HeadersVerdict::kHeld;
  }
  context_.RecordAttemptResult(slots_.node(primary), /*failed=*/false, /*node_fault=*/false);
  // The commit point.
  retry_timer_.Cancel();  // the per-try timeout
  slots_.DropHedge();
  state_ = State::kCommitted;
  return HeadersVerdict::kForward;
}

EndVerdict AttemptController::OnAttemptEnded(int slot, AttemptOutcome outcome,
                                             const absl::Status& final_status) {
  const int node = slots_.node(slot);
  slots_.Released(slot);
  const bool lost = outcome.failure == Failure::kUnavailable;
  if (slots_.is_hedge(slot)) {
    // The hedge ended without an answer (or after a failed one): the primary goes on alone.
    if (lost) context_.RecordAttemptResult(node, /*failed=*/true, /*node_fault=*/true);
    slots_.DropHedge();
    return EndVerdict::kHandled;
  }
  if (slots_.hedge_sent() && state_ == State::kTrying && !held_) {
    // The primary failed while a hedge runs: the hedge is the call's attempt from here on.
    if (lost) context_.RecordAttemptResult(node, /*failed=*/true, /*node_fault=*/true);
    slots_.Promote();
    return EndVerdict::kHandled;
  }
  slots_.DropHedge();
  if (held_) {
    Fail(held_outcome_, node, absl::OkStatus());
    return EndVerdict::kHandled;
  }
  outcome.took = loop_.Now() - slots_.sent_at(slot);
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
  waiting_.Set(false);
  place_wait_.Stop();
  retry_timer_.Cancel();
  retry_ticket_.Release();
  slots_.DropHedge();
  slots_.Cancel(slots_.primary());
  held_ = false;
  if (state_ != State::kIdle) state_ = State::kDone;
}

void AttemptController::Fail(const AttemptOutcome& outcome, int node,
                             const absl::Status& final_status) {
  failed_node_ = node;
  slots_.DropHedge();  // a hedge still waiting for a stream would race the retry
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
                                                    loop_.Now(), window_.deadline, random_);
    RetryBudget& budget = context_.budgets[static_cast<size_t>(node)];
    if (decision.retry && decision.reason != RetryReason::kTransparent) {
      // Storm control: the node's tokens, or the retries already running, may say no.
      // Transparent retries cost the node nothing: the request never reached it.
      if (std::optional<RetryRefusal> refusal = budget.Refusal(context_.active_calls)) {
        // No place among the retries in flight: the call waits for one if it may.
        if (*refusal == RetryRefusal::kInFlight &&
            place_wait_.Begin(window_, node, decision, retry_class, outcome.took, final_status)) {
          state_ = State::kBackoff;
          return;
        }
        decision.retry = false;
        decision.refused = refusal;
      }
    }
    if (decision.retry) {
      RetryTicket ticket;
      if (decision.reason != RetryReason::kTransparent) ticket = RetryTicket(budget);
      if (context_.events != nullptr) context_.events->OnRetry(retry_class, decision.reason);
      SPDLOG_DEBUG("attempt {} failed ({}), retrying in {} us", attempts_,
                   RetryReasonName(decision.reason),
                   std::chrono::duration_cast<std::chrono::microseconds>(decision.delay).count());
      ScheduleRetry(decision.delay, std::move(ticket));
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

void AttemptController::OnNodeUnreachable(const absl::Status& status) {
  // A retry whose attempt found no node to reach adds no load there: its place among the retries
  // in flight goes back to the budget, for a call that can use it.
  retry_ticket_.Release();
  const MonoTime now = loop_.Now();
  const std::optional<Duration> delay = unreachable_.NextTry(window_, now, waiting_.room());
  if (state_ == State::kDone || !delay) {
    GiveUp(unreachable_.GiveUpStatus(status, window_, now));
    return;
  }
  if (context_.events != nullptr) {
    context_.events->OnRetry(host_.ClassifyRequest(), RetryReason::kTransparent);
  }
  waiting_.Set(true);
  ScheduleRetry(*delay, RetryTicket());
}

void AttemptController::ScheduleRetry(Duration delay, RetryTicket ticket) {
  retry_ticket_ = std::move(ticket);
  held_ = false;
  host_.RewindRequest();
  if (delay <= Duration::zero()) {
    StartPrimary();
    return;
  }
  state_ = State::kBackoff;
  retry_timer_.Arm(delay, [this] { StartPrimary(); });
}

void AttemptController::OnPerTryTimeout() {
  const int primary = slots_.primary();
  if (state_ != State::kTrying || !slots_.sent(primary)) return;
  if (slots_.hedge_sent()) {
    slots_.Promote();  // the timed-out primary goes; the hedge already races it
    return;
  }
  const int node = slots_.node(primary);
  AttemptOutcome outcome;
  outcome.failure = Failure::kPerTryTimeout;
  outcome.took = loop_.Now() - slots_.sent_at(primary);
  slots_.Cancel(primary);
  Fail(outcome, node,
       absl::DeadlineExceededError(
           "qpool: no answer within retry.per_try_timeout, and no retry allowed"));
}

void AttemptController::GiveUp(const absl::Status& status) {
  waiting_.Set(false);
  slots_.DropHedge();
  state_ = State::kDone;
  host_.FinishWith(status);
}

}  // namespace qpool::retry
