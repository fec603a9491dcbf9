// A call's two attempt slots, the primary and a hedge racing it, and the hedge itself
// (docs/retries.md, "Hedged reads"): when to start it, and which slot wins.
//
// Each slot has a phase (free, asked of the host, sent), the node its request went to and when.
// After retry.hedge_delay (ArmHedge, when the primary's request went out) with the primary still
// out and unanswered and the whole request held (AttemptHost::WholeRequestHeld), the request is
// sent again in the other slot, to another node (AttemptHost::PickHedgeNode), paid for with a
// place among the retries in flight of the primary's node (its RetryBudget; a refusal means no
// hedge). Whichever answers first wins: Promote makes the hedge the primary and cancels the old
// one; DropHedge stops the delay and cancels the hedge. The ticket goes back either way.
//
//   AttemptSlots slots(context, loop, host);
//   slots.Asked(slots.primary());          // host.StartAttempt(slots.primary(), ...)
//   slots.Sent(0, node, now);              // its request went out
//   slots.ArmHedge(context.hedge_delay);   // -> host.StartAttempt(1, kHedge, other, node) later
//   if (slots.is_hedge(answered_slot)) slots.Promote();
//
// What it decides is only the race; whether a call hedges at all (a read, retries on, a replay
// copy), and what an answer means, are the AttemptController's. The owner stops the hedge delay
// (CancelHedgeDelay) once no hedge may start (an answer held); the slots ask it nothing else.
// Host calls: StartAttempt from the hedge timer only; CancelAttempt from Cancel, Promote and
// DropHedge.
// Thread-safety: none; one call, one worker thread.
#ifndef QPOOL_DAEMON_RETRY_ATTEMPT_SLOTS_H_
#define QPOOL_DAEMON_RETRY_ATTEMPT_SLOTS_H_

#include <cstdint>

#include "daemon/common/event_loop.h"
#include "daemon/retry/attempt_host.h"
#include "daemon/retry/on_demand_timer.h"
#include "daemon/retry/retry_context.h"
#include "daemon/retry/retry_policy.h"

namespace qpool::retry {

class AttemptSlots {
 public:
  static constexpr int kSlots = 2;

  // `context`, `loop` and `host` must outlive the slots.
  AttemptSlots(RetryContext& context, EventLoop& loop, AttemptHost& host)
      : context_(context), host_(host), hedge_timer_(loop) {}

  // `slot`'s attempt was asked of the host (StartAttempt): no stream yet.
  void Asked(int slot) { tries_[slot].phase = Phase::kAsked; }
  // `slot`'s request went out to `node` at `now`.
  void Sent(int slot, int node, MonoTime now) {
    Try& t = tries_[slot];
    t.phase = Phase::kSent;
    t.node = node;
    t.sent_at = now;
  }
  // `slot`'s attempt is over on the host's side (it ended, never started, or finished): free.
  void Released(int slot) { tries_[slot].phase = Phase::kFree; }
  // Stops `slot`'s attempt, if it has one, with the host (CancelAttempt): free.
  void Cancel(int slot) {
    if (tries_[slot].phase == Phase::kFree) return;
    tries_[slot].phase = Phase::kFree;
    host_.CancelAttempt(slot);
  }

  // The primary's request went out: the hedge may start after `delay`.
  void ArmHedge(Duration delay);
  // No hedge may start any more (the primary's answer is held): the delay stops; a hedge already
  // started runs on.
  void CancelHedgeDelay() { hedge_timer_.Cancel(); }
  // The hedge won: it is the primary from here on, the old primary is cancelled, and the hedge's
  // place goes back to the budget.
  void Promote();
  // No hedge: the delay stops, and a hedge started is cancelled, its place given back.
  void DropHedge() {
    hedge_timer_.Cancel();
    if (hedge_ >= 0) CancelHedge();
  }

  // The slot whose answer is the call's (the winner once a hedge won).
  int primary() const { return primary_; }
  bool is_hedge(int slot) const { return slot == hedge_; }
  // A hedge is out: its request went out.
  bool hedge_sent() const { return hedge_ >= 0 && tries_[hedge_].phase == Phase::kSent; }
  bool sent(int slot) const { return tries_[slot].phase == Phase::kSent; }
  int node(int slot) const { return tries_[slot].node; }
  MonoTime sent_at(int slot) const { return tries_[slot].sent_at; }

 private:
  enum class Phase : uint8_t { kFree, kAsked, kSent };  // free, queued, stream open
  struct Try {
    Phase phase = Phase::kFree;
    int node = -1;
    MonoTime sent_at{};
    RetryTicket ticket;  // a hedge's place in its budget's retries in flight
  };

  // From the hedge timer: the hedge starts if the primary is out unanswered, the whole request is
  // held, another node is up and the budget has a place.
  void OnHedgeDelay();
  void CancelHedge();

  RetryContext& context_;
  AttemptHost& host_;
  Try tries_[kSlots];
  int8_t primary_ = 0;
  int8_t hedge_ = -1;  // the hedge's slot, or -1
  OnDemandTimer hedge_timer_;
};

}  // namespace qpool::retry

#endif  // QPOOL_DAEMON_RETRY_ATTEMPT_SLOTS_H_
