// A REST session's two timers. The phase timer: what the app connection waits for now (an idle
// keep-alive connection's next request, rest.keepalive_timeout; a request's headers,
// rest.header_timeout from their first byte; the next part of its body) -- the phases never
// overlap, so one timer. The request deadline: rest.request_timeout, or the request's own
// ?timeout= plus a second, until the answer starts; RestAttempts reads it for its decisions. Both
// are LazyTimers, re-armed on every request at almost no cost.
//
//   SessionTimers timers(io, owner);
//   timers.ArmPhase(limits.header_timeout, SessionPhase::kHeader);  // -> owner.OnPhaseTimeout
//   timers.CancelPhase();                                            // the headers arrived
//   timers.StartDeadline(now, budget, /*callers=*/false);            // -> owner.OnDeadline
//
// It asks of its owner (SessionTimersOwner) a reference that keeps the owner, and so the timers,
// alive while a wait is pending, and takes the expiries to it.
//
// Ownership: part of a RestSession (by value); its parts arm the phase timer and start the
// deadline through a reference. Thread-safety: none; the session's thread.
#ifndef QPOOL_DAEMON_REST_SESSION_TIMERS_H_
#define QPOOL_DAEMON_REST_SESSION_TIMERS_H_

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <memory>
#include <optional>

#include "daemon/common/event_loop.h"
#include "daemon/rest/lazy_timer.h"

namespace qpool::rest {

// What the phase timer is armed for.
enum class SessionPhase : uint8_t { kNone, kIdle, kHeader, kBody };

class SessionTimersOwner {
 public:
  // A reference to the owner for a pending wait (its shared_from_this()).
  virtual std::shared_ptr<void> Hold() = 0;
  // The phase timer expired, armed for `phase`.
  virtual void OnPhaseTimeout(SessionPhase phase) = 0;
  // The request deadline passed.
  virtual void OnDeadline() = 0;

 protected:
  ~SessionTimersOwner() = default;
};

class SessionTimers {
 public:
  SessionTimers(boost::asio::io_context& io, SessionTimersOwner& owner);
  SessionTimers(const SessionTimers&) = delete;
  SessionTimers& operator=(const SessionTimers&) = delete;

  // The phase timer: OnPhaseTimeout(phase) once `after` has passed, unless re-armed or cancelled.
  void ArmPhase(Duration after, SessionPhase phase);
  void CancelPhase() { phase_timer_.Disarm(); }

  // A request's deadline, `budget` from `now` (none when `budget` is zero). `callers`: the
  // request's own ?timeout= set it (a node that cannot be reached is waited for).
  void StartDeadline(MonoTime now, Duration budget, bool callers);
  // The answer started: the deadline no longer fires (deadline() stays for the attempts).
  void DisarmDeadline() { deadline_timer_.Disarm(); }
  // The request is over (or the next one is read): no deadline.
  void ForgetDeadline() { deadline_.reset(); }
  const std::optional<MonoTime>& deadline() const { return deadline_; }
  bool callers_deadline() const { return callers_deadline_; }
  // How long the deadline gave the request, for the 504's message.
  Duration deadline_budget() const { return deadline_budget_; }

  // Both timers stop, and their pending waits release the owner (the session closes).
  void Stop();

 private:
  SessionTimersOwner& owner_;
  LazyTimer phase_timer_;
  SessionPhase phase_ = SessionPhase::kNone;
  LazyTimer deadline_timer_;
  std::optional<MonoTime> deadline_;
  Duration deadline_budget_{};
  bool callers_deadline_ = false;
};

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_SESSION_TIMERS_H_
