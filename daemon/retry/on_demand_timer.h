// A Timer made on its first Arm(): a call that never arms it (most calls neither retry nor hedge)
// allocates none. The attempt controller and its parts (AttemptSlots' hedge delay, RetryPlaceWait)
// each hold one.
//
//   OnDemandTimer timer(loop);
//   timer.Cancel();                               // nothing armed, nothing made: a no-op
//   timer.Arm(25ms, [this] { StartPrimary(); });  // makes the Timer, then as Timer::Arm
//
// Arm() replaces an earlier arming, Cancel() guarantees the callback will not run, destroying the
// timer cancels it (as Timer's).
// Thread-safety: none; the loop's thread only.
#ifndef QPOOL_DAEMON_RETRY_ON_DEMAND_TIMER_H_
#define QPOOL_DAEMON_RETRY_ON_DEMAND_TIMER_H_

#include <functional>
#include <memory>
#include <utility>

#include "daemon/common/event_loop.h"

namespace qpool::retry {

class OnDemandTimer {
 public:
  // `loop` must outlive the timer.
  explicit OnDemandTimer(EventLoop& loop) : loop_(loop) {}
  OnDemandTimer(const OnDemandTimer&) = delete;
  OnDemandTimer& operator=(const OnDemandTimer&) = delete;

  void Arm(Duration after, std::function<void()> callback) {
    if (!timer_) timer_ = loop_.CreateTimer();
    timer_->Arm(after, std::move(callback));
  }
  void Cancel() {
    if (timer_) timer_->Cancel();
  }
  bool armed() const { return timer_ && timer_->armed(); }

 private:
  EventLoop& loop_;
  std::unique_ptr<Timer> timer_;
};

}  // namespace qpool::retry

#endif  // QPOOL_DAEMON_RETRY_ON_DEMAND_TIMER_H_
