// The upstream attempts of one call, decided: when to send the request again (at once, or after a
// backoff or a pushback), when to race a second attempt (a hedge), when to stop waiting for one
// (per-try timeout), and when to give up and pass on what the upstream said or answer locally.
// Protocol-agnostic: the gRPC Call (server/call_upstream.h) drives it today, an HTTP/1.1 exchange
// can drive it the same way; both speak to it in AttemptOutcome terms and act for it through
// AttemptHost.
//
// A call has at most two attempts at a time, in two slots: the primary, and a hedge racing it.
// The host owns the attempt objects (a stream, a connection); the controller tracks each slot's
// phase, node and start time, and the budget ticket a hedge holds. The first response headers of
// either decide the race; the primary() slot is the winner from then on.
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
// A call waits, without an attempt out, for an unreachable node (OnNodeUnreachable) or for a place
// among its node's retries in flight (WaitForRetryPlace); both waits count as waiting for a node
// (RetryContext::waiting_for_node) and end with Stop(). The second waits in its budget's queue
// (RetryPlaceWaiter) and is woken when a place frees; it takes the place there and starts the
// retry from a timer armed for then (no time passes), never from inside the call that freed it.
// Timers are created on first use: a call that neither retries nor hedges allocates none.
// Thread-safety: none; one call, one worker thread.
#ifndef QPOOL_DAEMON_RETRY_ATTEMPT_CONTROLLER_H_
#define QPOOL_DAEMON_RETRY_ATTEMPT_CONTROLLER_H_

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "daemon/common/event_loop.h"
#include "daemon/retry/method_class.h"
#include "daemon/retry/retry_context.h"
#include "daemon/retry/retry_policy.h"

namespace qpool::retry {

enum class AttemptKind : uint8_t { kFirst, kRetry, kHedge };

// What the controller asks of the call that owns the attempts.
class AttemptHost {
 public:
  virtual ~AttemptHost() = default;
  // Sends the request, from its first byte, in `slot`: to `node` when >= 0 (a hedge's, from
  // PickHedgeNode), else to the balancer's choice, another node than `avoid_node` when there is
  // one. Reports with OnAttemptSent or OnAttemptNotStarted, now or later.
  virtual void StartAttempt(int slot, AttemptKind kind, int node, int avoid_node) = 0;
  // Stops the attempt in `slot` (resets its stream, or leaves the pool's queue). Final.
  virtual void CancelAttempt(int slot) = 0;
  // A node other than `node` with a connection up, for a hedge; -1 when there is none.
  virtual int PickHedgeNode(int node) = 0;
  // The request's retry class (may read the request's first message).
  virtual RetryClass ClassifyRequest() = 0;
  // The request can be sent again: its replay copy is whole.
  virtual bool CanReplay() const = 0;
  // The whole request is held (the app finished sending it, all of it went out, the copy is
  // whole): a hedge may start.
  virtual bool WholeRequestHeld() const = 0;
  // Keeps `slot`'s answer (a whole answer with a retryable failure) while the controller decides.
  virtual void HoldAnswer(int slot) = 0;
  // The next attempt sends the request from its start: the copy goes back in front of the unsent
  // bytes; a held answer is dropped.
  virtual void RewindRequest() = 0;
  // No retry: the held answer goes to the app as it came.
  virtual void PassOnHeldAnswer() = 0;
  // No retry and nothing to pass on: the app gets `status`, answered locally.
  virtual void FinishWith(const absl::Status& status) = 0;
};

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

class AttemptController final : private RetryPlaceWaiter {
 public:
  static constexpr int kSlots = 2;

  // `context`, `loop`, `random` and `host` must outlive the controller.
  AttemptController(RetryContext& context, EventLoop& loop, Random& random, AttemptHost& host)
      : context_(context), loop_(loop), random_(random), host_(host) {}
  ~AttemptController() {
    RetryBudget::StopWaiting(*this);  // never woken from here on
    if (state_ != State::kIdle) context_.active_calls--;
    if (waiting_for_node_) context_.waiting_for_node--;
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
  void OnAttemptFinished(int slot) { tries_[slot].phase = Phase::kIdle; }
  // The call is over (the app went away, its deadline passed): timers stop, the attempts in
  // flight are cancelled, budget tickets are returned. Idempotent.
  void Stop();

  // The slot whose answer is the call's (the primary; the winner once committed).
  int primary() const { return primary_; }
  bool committed() const { return state_ == State::kCommitted; }
  // Upstream streams opened for this call, hedges not included.
  uint32_t attempts() const { return attempts_; }

 private:
  enum class Phase : uint8_t { kIdle, kWaiting, kSent };  // a slot: free, queued, stream open
  enum class State : uint8_t {
    kIdle,       // not started
    kTrying,     // an attempt is queued or out
    kBackoff,    // waiting before the next attempt
    kCommitted,  // an attempt's answer is being passed on
    kDone,       // settled: given up, answered locally, or stopped
  };
  struct Try {
    Phase phase = Phase::kIdle;
    int node = -1;
    MonoTime sent_at{};
    RetryTicket ticket;  // a hedge's place in its budget's retries in flight
  };

  void StartPrimary();
  // The primary attempt failed without an answer passed on (its slot is idle already): retries,
  // or passes the held answer on, or answers with `final_status`.
  void Fail(const AttemptOutcome& outcome, int node, const absl::Status& final_status);
  // The node could not be reached: tries again within max_attempts, or the deadline when set.
  void OnNodeUnreachable(const absl::Status& status);
  // The retries-in-flight limit of `node`'s budget refused the retry `decision`: waits for a place
  // (WaitForRetryPlace) when the call may wait, and returns true; false: the call fails now.
  bool WaitForRetryPlace(int node, const RetryDecision& decision, RetryClass retry_class,
                         Duration took, const absl::Status& final_status);
  // The budget woke this call, first in its queue (RetryPlaceWaiter): it takes the place if
  // there is one now, and arms retry_timer_ to go on (OnRetryPlaceLook) with no delay.
  bool OnRetryPlaceFreed() override;
  // From retry_timer_, after a wake or at the window's end: the retry starts if the call holds a
  // place or one is free, the wait goes on while the limit still says no and the window allows,
  // or the call fails as the refusal says.
  void OnRetryPlaceLook();
  // Queues the call for a place in its node's budget, the window's end (RetryPlaceWaitEnd) armed.
  void QueueForRetryPlace(MonoTime end);
  // Until when a retry waiting for a budget place may still start: the caller's deadline (less the
  // failed attempt's duration and the answer's margin), else retry.unreachable_wait from the
  // call's start; none (no wait) when neither applies.
  std::optional<MonoTime> RetryPlaceWaitEnd() const;
  // No retry: the held answer goes on as it came, or the app gets `final_status`.
  void FinishWithoutRetry(const absl::Status& final_status);
  void ScheduleRetry(Duration delay);
  void OnPerTryTimeout();
  void OnHedgeDelay();
  void PromoteHedge();
  void DropHedge();
  void CancelSlot(int slot);
  void GiveUp(const absl::Status& status);
  // Counts the call in (or out of) the worker's calls waiting for an unreachable node (or for a
  // place in a retry budget).
  void SetWaitingForNode(bool waiting);
  bool HedgeSent() const { return hedge_ >= 0 && tries_[hedge_].phase == Phase::kSent; }
  Timer& TimerOf(std::unique_ptr<Timer>& timer);

  RetryContext& context_;
  EventLoop& loop_;
  Random& random_;
  AttemptHost& host_;
  State state_ = State::kIdle;
  Try tries_[kSlots];
  int8_t primary_ = 0;
  int8_t hedge_ = -1;              // the hedge's slot, or -1
  bool held_ = false;              // the host holds a retryable whole answer (held_outcome_)
  bool waiting_for_node_ = false;  // counted in RetryContext::waiting_for_node
  uint32_t attempts_ = 0;          // sent by the primary slot, retries included
  uint32_t stale_connection_attempts_ = 0;  // of those, ended kStaleConnection (Decide)
  uint32_t unreachable_tries_ = 0;          // picks of a node that could not be reached
  int failed_node_ = -1;                    // the last attempt's node: a retry prefers another
  AttemptOutcome held_outcome_;
  // The retry in flight, from its scheduling to the next failure, or until its attempt finds the
  // node unreachable (it adds no load there: the place goes to another call).
  RetryTicket retry_ticket_;
  // A retry waiting for a place in its node's budget (retries in flight): what it will be.
  struct PendingRetry {
    int node = -1;  // whose budget
    RetryDecision decision;
    RetryClass retry_class = RetryClass::kRead;
    Duration took{};  // the failed attempt's duration: the retry needs as long
    MonoTime due{};   // the failure plus the decision's delay: the retry starts no earlier
    absl::Status final_status;  // the app's answer if the wait ends without a place
  };
  std::optional<PendingRetry> pending_retry_;
  std::optional<MonoTime> deadline_;
  bool callers_deadline_ = false;  // deadline_ is the caller's own
  MonoTime started_at_{};
  // Backoff before the next attempt, the end of the wait for a retry place (or the look after a
  // wake), or the per-try timeout of the current attempt (never two at once).
  std::unique_ptr<Timer> retry_timer_;
  std::unique_ptr<Timer> hedge_timer_;
};

}  // namespace qpool::retry

#endif  // QPOOL_DAEMON_RETRY_ATTEMPT_CONTROLLER_H_
