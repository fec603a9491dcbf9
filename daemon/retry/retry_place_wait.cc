#include "daemon/retry/retry_place_wait.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"

namespace qpool::retry {

bool RetryPlaceWait::Begin(const CallWindow& window, int node, const RetryDecision& decision,
                           RetryClass retry_class, Duration took,
                           const absl::Status& final_status) {
  // Waiting calls are bounded like queued ones (upstream.max_pending, this worker's share).
  if (!count_.room()) return false;
  const MonoTime now = loop_.Now();
  pending_ = Pending{window, node, decision, retry_class, took, now + decision.delay, final_status};
  const std::optional<MonoTime> end = End();
  if (!end || *end - now < std::chrono::milliseconds(1)) {
    pending_.reset();
    return false;
  }
  count_.Set(true);
  Queue(*end);
  return true;
}

void RetryPlaceWait::Abandon() {
  count_.Set(false);
  RetryBudget::StopWaiting(*this);
  pending_.reset();
  timer_.Cancel();
  ticket_.Release();
}

void RetryPlaceWait::Queue(MonoTime end) {
  // A place frees when a retry's attempt ends, fails, or finds its node unreachable; the budget
  // then wakes the first call in line (OnRetryPlaceFreed). The timer ends the wait.
  budget().Wait(*this);
  timer_.Arm(end - loop_.Now(), [this] { OnLook(); });
}

bool RetryPlaceWait::OnRetryPlaceFreed() {
  RetryBudget& budget = this->budget();
  const std::optional<RetryRefusal> refusal = budget.Refusal(context_.active_calls);
  if (refusal == RetryRefusal::kInFlight) return false;  // still none: first in line still
  // The place is this call's from now. Out of the queue, the timer goes on (no time passes):
  // starting the retry calls the host, which the call that freed the place, still on the stack,
  // must not see happen.
  if (!refusal) ticket_ = RetryTicket(budget);
  timer_.Arm(Duration::zero(), [this] { OnLook(); });
  return true;
}

std::optional<MonoTime> RetryPlaceWait::End() const {
  const CallWindow& window = pending_->window;
  std::optional<MonoTime> end;
  if (!window.callers_deadline) {
    // Without a deadline of its own the call waits as it would for an unreachable node; with
    // retry.unreachable_wait off, not at all (the refusal fails it, as before the wait).
    if (context_.unreachable_wait <= Duration::zero()) return std::nullopt;
    end = window.started_at + context_.unreachable_wait;
  }
  if (window.deadline) {
    // The retry must be able to run as long as the failed attempt did, and its answer reach the
    // caller before the caller gives up (UnreachableAnswerMargin).
    const MonoTime latest = *window.deadline - window.AnswerMargin() - pending_->took;
    end = end ? std::min(*end, latest) : latest;
  }
  return end;
}

void RetryPlaceWait::OnLook() {
  const MonoTime now = loop_.Now();
  RetryBudget& budget = this->budget();
  RetryBudget::StopWaiting(*this);
  std::optional<RetryRefusal> refusal;
  if (!ticket_.held()) {
    // At the window's end, or woken because the tokens ran out: one last look.
    refusal = budget.Refusal(context_.active_calls);
    if (!refusal) ticket_ = RetryTicket(budget);
  }
  if (!refusal) {
    const Pending retry = std::move(*pending_);
    pending_.reset();
    count_.Set(false);
    if (context_.events != nullptr) {
      context_.events->OnRetry(retry.retry_class, retry.decision.reason);
    }
    owner_.ScheduleRetry(std::max(Duration::zero(), retry.due - now), std::move(ticket_));
    return;
  }
  if (*refusal == RetryRefusal::kInFlight) {
    // The tokens that woke the call came back meanwhile: it waits on, at the end of the line.
    const std::optional<MonoTime> end = End();
    if (end && *end - now >= std::chrono::milliseconds(1)) {
      Queue(*end);
      return;
    }
  }
  // No place in time, or the node's tokens ran out meanwhile: the failure goes to the app.
  absl::Status status = std::move(pending_->final_status);
  const MonoTime started_at = pending_->window.started_at;
  pending_.reset();
  count_.Set(false);
  if (context_.events != nullptr) context_.events->OnRetryRefused(*refusal);
  if (!status.ok()) {
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(now - started_at);
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
  owner_.FinishWithoutRetry(status);
}

}  // namespace qpool::retry
