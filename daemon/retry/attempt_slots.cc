#include "daemon/retry/attempt_slots.h"

#include <optional>

namespace qpool::retry {

void AttemptSlots::ArmHedge(Duration delay) {
  hedge_timer_.Arm(delay, [this] { OnHedgeDelay(); });
}

void AttemptSlots::OnHedgeDelay() {
  // Only while the primary is out with the whole request, with no answer yet (the owner stops the
  // delay when it holds one).
  if (hedge_ >= 0 || tries_[primary_].phase != Phase::kSent || !host_.WholeRequestHeld()) return;
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
  tries_[slot].phase = Phase::kAsked;
  if (context_.events != nullptr) context_.events->OnHedge(/*won=*/false);
  host_.StartAttempt(slot, AttemptKind::kHedge, other, node);
}

void AttemptSlots::Promote() {
  const int loser = primary_;
  primary_ = hedge_;
  hedge_ = -1;
  Cancel(loser);
  tries_[primary_].ticket.Release();
  if (context_.events != nullptr) context_.events->OnHedge(/*won=*/true);
}

void AttemptSlots::CancelHedge() {
  const int slot = hedge_;
  hedge_ = -1;
  Cancel(slot);
  tries_[slot].ticket.Release();
}

}  // namespace qpool::retry
