// The upstream attempts of one call, decided: when to send the request again (at once, or after a
// backoff or a pushback), when to race a second attempt (a hedge), when to stop waiting for one
// (per-try timeout), and when to give up and pass on what the upstream said or answer locally.
// Protocol-agnostic: the gRPC Call (server/call_upstream.h) drives it today, an HTTP/1.1 exchange
// can drive it the same way; both speak to it in AttemptOutcome terms and act for it through
// AttemptHost.
//
// A call has at most two attempts at a time, in two slots: the primary, and a hedge racing it.
// The host owns the attempt objects (a stream, a connection); the controller tracks each slot's
// phase, node and start time, and the budget ticket a hedge holds (in its AttemptSlots). The
// first response headers of either decide the race; the primary() slot is the winner from then
// on.
//
//   controller.Start(now, deadline);            // -> host.StartAttempt(0, kFirst, ...)
//   controller.OnAttemptSent(0, node, now);     // request headers went out
//   switch (controller.OnResponseHeaders(0, outcome, whole_answer, request_sent)) {
//     case HeadersVerdict::kForward: ...        // pass the headers on: the call is committed
//     case HeadersVerdict::kHeld:               // host.HoldAnswer(0) was called; wait
//     case HeadersVerdict::kDiscard: ...        // the attempt lost or was cancelled
//   }
//   controller.OnAttemptEnded(0, outcome, final_status);   // stream closed without an answer
//
// Contract with the host: StartAttempt reports back (now or later) with OnAttemptSent or
// OnAttemptNotStarted; CancelAttempt is final (no report follows). The controller never calls the
// host from a host call it is not answering, except from its own timers.
//
// The controller decides retries and gives up; its parts, each with its own header, do the rest:
//  - AttemptSlots: the two slots' phases, nodes and send times, and the hedge (its delay, start,
//    promotion, drop);
//  - UnreachableWait: how long the call waits for an unreachable node, and what it fails with;
//  - RetryPlaceWait: the wait for a place among the node's retries in flight (in its budget's
//    queue), which hands the retry back (RetryPlaceWaitOwner);
//  - NodeWaitCount and CallWindow (node_wait.h): what the two waits share.
// A call waits, without an attempt out, for an unreachable node or for a retry place; both waits
// count as waiting for a node (RetryContext::waiting_for_node) and end with Stop(). Timers are
// created on first use (OnDemandTimer): a call that neither retries nor hedges allocates none.
// Thread-safety: none; one call, one worker thread.
#ifndef QPOOL_DAEMON_RETRY_ATTEMPT_CONTROLLER_H_
#define QPOOL_DAEMON_RETRY_ATTEMPT_CONTROLLER_H_

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "daemon/common/event_loop.h"
#include "daemon/retry/attempt_host.h"
#include "daemon/retry/attempt_slots.h"
#include "daemon/retry/method_class.h"
#include "daemon/retry/node_wait.h"
#include "daemon/retry/on_demand_timer.h"
#include "daemon/retry/retry_context.h"
#include "daemon/retry/retry_place_wait.h"
#include "daemon/retry/retry_policy.h"
#include "daemon/retry/unreachable_wait.h"

namespace qpool::retry {

// What the host does with response headers (OnResponseHeaders).
enum class HeadersVerdict : uint8_t {
  kForward,  // pass them on: this attempt is the call's answer (the commit point)
  kHeld,     // a retryable whole answer, held (HoldAnswer); a decision follows
  kDiscard,  // the attempt lost a race or failed while another runs; it has been cancelled
};

// What the host does when an attempt ended without an answer (OnAttemptEnded).
enum class EndVerdict : uint8_t {
  kHandled,      // the controller retried, gave up (FinishWith) or let the other attempt go on
  kPassOnClose,  // no retry: pass the way the upstream ended the exchange on (its reset)
};

class AttemptController final : private RetryPlaceWaitOwner {
 public:
  static constexpr int kSlots = AttemptSlots::kSlots;

  // `context`, `loop`, `random` and `host` must outlive the controller.
  AttemptController(RetryContext& context, EventLoop& loop, Random& random, AttemptHost& host)
      : context_(context),
        loop_(loop),
        random_(random),
        host_(host),
        slots_(context, loop, host),
        retry_timer_(loop),
        waiting_(context),
        unreachable_(context, random),
        place_wait_(context, loop, waiting_, *this) {}
  ~AttemptController() {
    if (state_ != State::kIdle) context_.active_calls--;
  }
  AttemptController(const AttemptController&) = delete;
  AttemptController& operator=(const AttemptController&) = delete;

  // The call's request is ready to go at `now` (`deadline`: the caller's, if any): the first
  // attempt starts. The call counts as active (RetryContext::active_calls) until the controller is
  // gone. (Times come from the host, which reads the clock anyway.)
  // `callers_deadline`: the deadline is the caller's own (grpc-timeout, REST ?timeout=), so a call
  // whose node cannot be reached waits for one up to it; otherwise (qpoold's own limit, e.g.
  // rest.request_timeout) the deadline bounds the call but the wait is bounded as for a call
  // without one.
  void Start(MonoTime now, std::optional<MonoTime> deadline, bool callers_deadline = true);

  // Host reports. -----------------------------------------------------------------------------
  // `slot`'s request headers went out to `node` at `now`: per-try timeout and hedge delay are
  // armed.
  void OnAttemptSent(int slot, int node, MonoTime now);
  // `slot` got no stream: `status` from the pool (or the stream could not be opened).
  // `node_unreachable` when the node could not be reached at all (the request never left).
  void OnAttemptNotStarted(int slot, int node, const absl::Status& status, bool node_unreachable);
  // `slot`'s response headers ended. `outcome` is a whole answer's (`whole_answer`: no body
  // follows), else kNone. `request_sent`: every request byte went out on this attempt.
  HeadersVerdict OnResponseHeaders(int slot, const AttemptOutcome& outcome, bool whole_answer,
                                   bool request_sent);
  // `slot`'s exchange ended before its answer was complete (the host let go of it). `outcome`:
  // kNone (clean end), kNeverReached, kStaleConnection, kUnavailable (connection lost), kAborted
  // (reset), kOther, kNotSent (refused on qpool's side before it left: answered with
  // `final_status`, no retry). `final_status` is the app's answer if the call gives up.
  EndVerdict OnAttemptEnded(int slot, AttemptOutcome outcome, const absl::Status& final_status);
  // `slot`'s exchange ended after its answer was complete.
  void OnAttemptFinished(int slot) { slots_.Released(slot); }
  // The call is over (the app went away, its deadline passed): timers stop, the attempts in
  // flight are cancelled, budget tickets are returned. Idempotent.
  void Stop();

  // The slot whose answer is the call's (the primary; the winner once committed).
  int primary() const { return slots_.primary(); }
  bool committed() const { return state_ == State::kCommitted; }
  // Upstream streams opened for this call, hedges not included.
  uint32_t attempts() const { return attempts_; }

 private:
  enum class State : uint8_t {
    kIdle,       // not started
    kTrying,     // an attempt is queued or out
    kBackoff,    // waiting before the next attempt (or for a node, or for a retry place)
    kCommitted,  // an attempt's answer is being passed on
    kDone,       // settled: given up, answered locally, or stopped
  };

  void StartPrimary();
  // The primary attempt failed without an answer passed on (its slot is idle already): retries,
  // waits for a retry place (RetryPlaceWait), or passes the held answer on, or answers with
  // `final_status`.
  void Fail(const AttemptOutcome& outcome, int node, const absl::Status& final_status);
  // The node could not be reached: tries again while UnreachableWait allows, else gives up.
  void OnNodeUnreachable(const absl::Status& status);
  // No retry: the held answer goes on as it came, or the app gets `final_status`. (Also
  // RetryPlaceWait's, when its wait ends without a place.)
  void FinishWithoutRetry(const absl::Status& final_status) override;
  // The next attempt starts after `delay` (at once when zero or less), its retry in flight held
  // by `ticket` (empty for a transparent retry). (Also RetryPlaceWait's, when it got the place.)
  void ScheduleRetry(Duration delay, RetryTicket ticket) override;
  void OnPerTryTimeout();
  void GiveUp(const absl::Status& status);

  RetryContext& context_;
  EventLoop& loop_;
  Random& random_;
  AttemptHost& host_;
  State state_ = State::kIdle;
  AttemptSlots slots_;
  bool held_ = false;      // the host holds a retryable whole answer (held_outcome_)
  uint32_t attempts_ = 0;  // sent by the primary slot, retries included
  uint32_t stale_connection_attempts_ = 0;  // of those, ended kStaleConnection (Decide)
  int failed_node_ = -1;                    // the last attempt's node: a retry prefers another
  AttemptOutcome held_outcome_;
  // The retry in flight, from its scheduling to the next failure, or until its attempt finds the
  // node unreachable (it adds no load there: the place goes to another call).
  RetryTicket retry_ticket_;
  CallWindow window_;
  // Backoff before the next attempt, or the per-try timeout of the current attempt (never both).
  OnDemandTimer retry_timer_;
  NodeWaitCount waiting_;  // the waits for a node: unreachable_, place_wait_
  UnreachableWait unreachable_;
  RetryPlaceWait place_wait_;
};

}  // namespace qpool::retry

#endif  // QPOOL_DAEMON_RETRY_ATTEMPT_CONTROLLER_H_
