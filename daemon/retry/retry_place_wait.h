// A call's wait for a place among its node's retries in flight (docs/retries.md, "Storm
// control"). When that limit of the node's RetryBudget alone refuses a retry the policy allowed,
// the call need not fail: the tokens still bound how many retries a failing node gets, the limit
// only how many run at once, and a burst of calls losing their connection together (a node
// restart) should not fail for it. The call queues in the budget (RetryPlaceWaiter, first come
// first served) until a place frees, its window ends (End below) or the node's tokens run out.
//
//   RetryPlaceWait wait(context, loop, count, owner);
//   if (refusal == RetryRefusal::kInFlight &&
//       wait.Begin(window, node, decision, retry_class, took, final_status)) {
//     return;  // later: owner.ScheduleRetry(delay, ticket), or owner.FinishWithoutRetry(status)
//   }
//
// Woken by the budget from inside the call that freed a place (OnRetryPlaceFreed), the wait takes
// the place on the spot (a retry starting meanwhile cannot take it first) and goes on from its
// timer armed for then, no time passing: the owner is never called from inside another call.
// How long it may wait: up to the caller's deadline (less the failed attempt's duration, which
// the retry needs as well, and CallWindow::AnswerMargin), else retry.unreachable_wait from the
// call's start; not at all with neither. It counts as waiting for a node (NodeWaitCount) from
// Begin to its end.
// Thread-safety: none; one call, one worker thread (the budget's).
#ifndef QPOOL_DAEMON_RETRY_RETRY_PLACE_WAIT_H_
#define QPOOL_DAEMON_RETRY_RETRY_PLACE_WAIT_H_

#include <optional>

#include "absl/status/status.h"
#include "daemon/common/event_loop.h"
#include "daemon/retry/method_class.h"
#include "daemon/retry/node_wait.h"
#include "daemon/retry/on_demand_timer.h"
#include "daemon/retry/retry_context.h"
#include "daemon/retry/retry_policy.h"

namespace qpool::retry {

// What a RetryPlaceWait asks of the call that waits, once, when the wait ends on its own (never
// after Stop, never from inside Begin).
class RetryPlaceWaitOwner {
 public:
  // The place is the call's: the retry starts after `delay` (what is left of the decision's delay
  // after the wait; zero: at once), paying with `ticket`, the place (held).
  virtual void ScheduleRetry(Duration delay, RetryTicket ticket) = 0;
  // No place in time, or the node's tokens ran out meanwhile: no retry. `final_status` is the
  // call's (as given to Begin), with why it was not retried; OK when the call had none (a held
  // answer goes on as it came).
  virtual void FinishWithoutRetry(const absl::Status& final_status) = 0;

 protected:
  ~RetryPlaceWaitOwner() = default;
};

class RetryPlaceWait final : private RetryPlaceWaiter {
 public:
  // `context`, `loop`, `count` (the call's, shared with its other wait) and `owner` must outlive
  // the wait.
  RetryPlaceWait(RetryContext& context, EventLoop& loop, NodeWaitCount& count,
                 RetryPlaceWaitOwner& owner)
      : context_(context), loop_(loop), count_(count), owner_(owner), timer_(loop) {}
  ~RetryPlaceWait() { RetryBudget::StopWaiting(*this); }  // never woken from here on

  // The retries-in-flight limit of `node`'s budget refused the retry `decision` of a call
  // (`window`) whose attempt failed after `took`: queues the call for a place and returns true
  // when it may wait (room among the waiting calls, at least 1 ms left in its window), else false
  // and nothing changed (the call fails now). `final_status`: the call's answer if the wait ends
  // without a place. Not while waiting().
  bool Begin(const CallWindow& window, int node, const RetryDecision& decision,
             RetryClass retry_class, Duration took, const absl::Status& final_status);
  // The call is over: out of the queue (and of the waiting calls' count), the timer stopped, a
  // place taken given back; the owner hears nothing. Idempotent.
  void Stop() {
    if (pending_) Abandon();  // not waiting: not queued, no timer, no place (nothing to do)
  }
  bool waiting() const { return pending_.has_value(); }

 private:
  // What the retry will be once it has a place.
  struct Pending {
    CallWindow window;
    int node = -1;  // whose budget
    RetryDecision decision;
    RetryClass retry_class = RetryClass::kRead;
    Duration took{};  // the failed attempt's duration: the retry needs as long
    MonoTime due{};   // the failure plus the decision's delay: the retry starts no earlier
    absl::Status final_status;  // the app's answer if the wait ends without a place
  };

  // Stop's work while waiting.
  void Abandon();
  // The budget woke this call, first in its queue: it takes the place if there is one now, and
  // arms the timer to go on (OnLook) with no delay.
  bool OnRetryPlaceFreed() override;
  // From the timer, after a wake or at the window's end: the retry is scheduled if the call holds
  // a place or one is free, the wait goes on while the limit still says no and the window
  // allows, or the call fails as the refusal says.
  void OnLook();
  // Queues the call in its node's budget, the window's end armed.
  void Queue(MonoTime end);
  // Until when the retry may still start; none (no wait) when neither bound applies.
  std::optional<MonoTime> End() const;
  RetryBudget& budget() { return context_.budgets[static_cast<size_t>(pending_->node)]; }

  RetryContext& context_;
  EventLoop& loop_;
  NodeWaitCount& count_;
  RetryPlaceWaitOwner& owner_;
  std::optional<Pending> pending_;  // while waiting
  RetryTicket ticket_;              // the place, taken when woken, until handed to the owner
  OnDemandTimer timer_;             // the window's end, or the look after a wake
};

}  // namespace qpool::retry

#endif  // QPOOL_DAEMON_RETRY_RETRY_PLACE_WAIT_H_
