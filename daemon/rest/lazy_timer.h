// A one-shot timer that is cheap to move later: the REST sessions re-arm their timeouts (keep-alive
// idle, header read, request deadline) on every request, almost always to a later expiry than the
// one pending, and an Asio timer re-armed that way costs a cancel, a completion and a new wait
// each time. LazyTimer keeps one Asio wait pending and only records a later expiry; when the wait
// completes early it waits again for what remains. An earlier expiry re-arms the Asio timer at
// once, so a timer never fires late; it may wake up (not fire) early.
//
//   LazyTimer timer(io, [this] { OnTimeout(); });  // runs on expiry; `this` owns the timer
//   timer.ArmAt(MonoClock::now() + 10s, *this);   // the pending wait keeps shared_from_this()
//   timer.ArmAt(MonoClock::now() + 60s, *this);   // later: recorded, no Asio call
//   timer.Disarm();                               // the pending wait completes and does nothing
//   timer.Stop();                                 // cancels the pending wait (owner closing)
//
// The pending Asio wait holds a shared_ptr to the owner (from ArmAt's `owner`), so the owner and
// its timer stay alive until that wait completes; an owner that closes calls Stop().
// Thread-safety: none; one thread (the io_context's) uses it.
#ifndef QPOOL_DAEMON_REST_LAZY_TIMER_H_
#define QPOOL_DAEMON_REST_LAZY_TIMER_H_

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <utility>

#include "daemon/common/event_loop.h"

namespace qpool::rest {

class LazyTimer {
 public:
  // `on_expiry` runs on the io_context's thread each time an armed expiry passes.
  LazyTimer(boost::asio::io_context& io, std::function<void()> on_expiry)
      : timer_(io), on_expiry_(std::move(on_expiry)) {}

  LazyTimer(const LazyTimer&) = delete;
  LazyTimer& operator=(const LazyTimer&) = delete;

  // Runs on_expiry once MonoClock reaches `at` (replacing any earlier arming). `owner`
  // (enable_shared_from_this) is kept alive by the Asio wait, when one has to start.
  template <class Owner>
  void ArmAt(MonoTime at, Owner& owner) {
    ArmAtHolding(at, [&owner] { return owner.shared_from_this(); });
  }
  // The same for an owner reached through an interface: `hold()` returns the reference the Asio
  // wait keeps (a shared_ptr), and is called only when a wait has to start.
  template <class Hold>
  void ArmAtHolding(MonoTime at, Hold&& hold) {
    expiry_ = at;
    if (pending_ && pending_at_ <= at) return;  // that wait completes first and waits again
    StartWait(at, hold());
  }
  // Nothing runs until the next ArmAt.
  void Disarm() { expiry_.reset(); }
  // Disarm, and the pending wait (and the owner reference it keeps) goes now.
  void Stop() {
    expiry_.reset();
    if (!pending_) return;
    pending_ = false;
    generation_++;
    timer_.cancel();
  }
  bool armed() const { return expiry_.has_value(); }

 private:
  void StartWait(MonoTime at, std::shared_ptr<void> keep) {
    if (pending_) timer_.cancel();  // its completion sees another generation
    pending_ = true;
    pending_at_ = at;
    const uint64_t generation = ++generation_;
    timer_.expires_at(at);
    // `keep` holds the owner (and so this timer) alive while the wait is pending.
    timer_.async_wait(
        [this, generation, keep = std::move(keep)](const boost::system::error_code& ec) mutable {
          if (ec || generation != generation_) return;
          pending_ = false;
          if (!expiry_) return;
          if (*expiry_ > MonoClock::now()) {
            StartWait(*expiry_, std::move(keep));
            return;
          }
          expiry_.reset();
          on_expiry_();  // may arm the timer again
        });
  }

  boost::asio::steady_timer timer_;
  const std::function<void()> on_expiry_;
  std::optional<MonoTime> expiry_;  // when on_expiry_ is due; nullopt: disarmed
  bool pending_ = false;            // an Asio wait is pending, for pending_at_
  MonoTime pending_at_{};
  uint64_t generation_ = 0;  // a superseded wait's completion sees another generation
};

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_LAZY_TIMER_H_
