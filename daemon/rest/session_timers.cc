#include "daemon/rest/session_timers.h"

namespace qpool::rest {

SessionTimers::SessionTimers(boost::asio::io_context& io, SessionTimersOwner& owner)
    : owner_(owner),
      phase_timer_(io, [this] { owner_.OnPhaseTimeout(phase_); }),
      deadline_timer_(io, [this] { owner_.OnDeadline(); }) {}

void SessionTimers::ArmPhase(Duration after, SessionPhase phase) {
  phase_ = phase;
  phase_timer_.ArmAtHolding(MonoClock::now() + after, [this] { return owner_.Hold(); });
}

void SessionTimers::StartDeadline(MonoTime now, Duration budget, bool callers) {
  callers_deadline_ = callers;
  if (budget <= Duration::zero()) return;
  deadline_ = now + budget;
  deadline_budget_ = budget;
  deadline_timer_.ArmAtHolding(*deadline_, [this] { return owner_.Hold(); });
}

void SessionTimers::Stop() {
  phase_timer_.Stop();
  deadline_timer_.Stop();
}

}  // namespace qpool::rest
