// When a failed attempt of a call is tried again, and how long qpool waits first.
//
// Two kinds of retry (gRPC's A6 proposal names them):
//  - transparent: the request provably never reached Qdrant (connect failure, REFUSED_STREAM, a
//    stream above a GOAWAY's last-stream-id). Safe for every class, done at once.
//  - policy: the attempt reached Qdrant and failed with a retryable status. Only for reads and
//    id-scoped writes: UNAVAILABLE; RESOURCE_EXHAUSTED when Qdrant said when to come back
//    (retry-after / grpc-retry-pushback-ms), after that long; a per-try timeout, for reads only.
// Outcomes are protocol-neutral (Failure): the gRPC path and an HTTP/1.1 path both map onto them.
// Either kind is refused when it could not finish before the caller's deadline, when the call has
// used max_attempts, or when the retry budget (RetryBudget) says no (its in-flight limit alone
// makes the call wait for a place instead, when it can: RetryPlaceWait).
//
// Thread-safety: RetryPolicy is immutable; Decide() is a pure function of its arguments.
#ifndef QPOOL_DAEMON_RETRY_RETRY_POLICY_H_
#define QPOOL_DAEMON_RETRY_RETRY_POLICY_H_

#include <algorithm>
#include <boost/intrusive/list.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "daemon/common/event_loop.h"
#include "daemon/retry/method_class.h"

namespace qpool::retry {

// Stale-connection attempts per call (Failure::kStaleConnection). Each one retires the
// connection it failed on, so a run of them ends once the stale connections are used up: after a
// node restart a REST request can meet several keep-alive connections the old process left
// behind, before their close is read. The bound is a backstop.
inline constexpr uint32_t kMaxStaleConnectionAttempts = 16;

// How long before the caller's deadline a call that waits for an unreachable node stops trying
// (UnreachableWait, RetryPlaceWait): the UNAVAILABLE answer naming the reason has that long to
// reach the caller, whose clock started before qpoold read grpc-timeout. A twentieth of the call's
// timeout, at most 250 ms: 100 ms for a 2 s deadline.
inline Duration UnreachableAnswerMargin(Duration timeout) {
  return std::clamp<Duration>(timeout / 20, Duration::zero(), std::chrono::milliseconds(250));
}

struct RetryPolicyOptions {
  uint32_t max_attempts = 3;                              // retry.max_attempts, first one included
  Duration backoff_base = std::chrono::milliseconds(25);  // retry.backoff_base
  Duration backoff_max = std::chrono::seconds(1);         // retry.backoff_max
  bool retry_unavailable = true;                          // retry.on: unavailable
  bool retry_resource_exhausted_with_pushback = true;     // retry.on: resource_exhausted
  bool retry_per_try_timeout = true;                      // retry.on: per_try_timeout (reads)
};

// How an attempt failed, in terms any front door can report: the gRPC data path maps grpc-status
// and HTTP/2 resets onto it, an HTTP/1.1 exchange would map status codes (503, 429) and lost
// connections.
enum class Failure : uint8_t {
  kNone,               // no failure: an answer (any answer the caller should see), or a clean end
  kNeverReached,       // provably never processed: REFUSED_STREAM, above a GOAWAY's last stream id
  kStaleConnection,    // provably never processed: sent on a reused keep-alive connection the node
                       // had closed (nothing of an answer came back); the connection is retired
  kUnavailable,        // the node cannot serve now (UNAVAILABLE), or the connection was lost before
                       // the answer; counts against the node's health
  kResourceExhausted,  // rate limited (RESOURCE_EXHAUSTED); retried only with a pushback
  kPerTryTimeout,      // qpool's own per-try timer ended the attempt
  kAborted,  // the upstream ended the exchange without an answer, with an error (a reset):
             // passed on, never retried; counts against the node's health
  kOther,    // any other final outcome (another status, a clean reset): passed on as it is
  kNotSent,  // refused by qpool's own upstream session before it left (e.g. a header block over
             // nghttp2's send limit): not the node's doing, and it would fail the same way again,
             // so never retried; the call is answered locally
};

// What happened to one attempt.
struct AttemptOutcome {
  Failure failure = Failure::kNone;
  std::optional<Duration> pushback;  // retry-after / grpc-retry-pushback-ms from Qdrant
  Duration took{};                   // how long the attempt ran
};

// A whole answer with this outcome may be worth another attempt (UNAVAILABLE, or
// RESOURCE_EXHAUSTED with a pushback): the caller holds it back while the controller decides.
inline bool RetryableAnswer(const AttemptOutcome& outcome) {
  return outcome.failure == Failure::kUnavailable ||
         (outcome.failure == Failure::kResourceExhausted && outcome.pushback.has_value());
}

// The failures passive health counts against the node that gave them: UNAVAILABLE, lost
// connections and resets; not rate limiting, nor qpool's own per-try timeout.
inline bool NodeFault(Failure failure) {
  return failure == Failure::kUnavailable || failure == Failure::kAborted;
}

enum class RetryReason {
  kNone,         // no retry
  kTransparent,  // never reached Qdrant
  kUnavailable,
  kResourceExhausted,
  kPerTryTimeout,
};
const char* RetryReasonName(RetryReason reason);

// Why a retry the outcome allowed did not happen (qpool_retries_refused_total{reason}).
enum class RetryRefusal : uint8_t { kMaxAttempts = 0, kDeadline = 1, kBudget = 2, kInFlight = 3 };
inline constexpr size_t kRetryRefusalCount = 4;

struct RetryDecision {
  bool retry = false;
  RetryReason reason = RetryReason::kNone;
  Duration delay{};  // wait this long before the next attempt
  // When !retry and the outcome was retryable: which limit said no (kMaxAttempts or kDeadline).
  std::optional<RetryRefusal> refused;
};

class RetryPolicy {
 public:
  explicit RetryPolicy(RetryPolicyOptions options) : options_(options) {}

  // `attempts_made` counts the attempt that just failed, and the earlier ones of its kind: for a
  // kStaleConnection outcome the call's stale-connection attempts, bounded by
  // kMaxStaleConnectionAttempts; otherwise the other attempts, bounded by retry.max_attempts (a
  // stale connection is qpoold's leftover, not the node's answer, so it does not use one up).
  // `deadline` is the caller's (grpc-timeout).
  // No retry is proposed that would start after the deadline, or that could not run at least as
  // long as the failed attempt did before it.
  RetryDecision Decide(RetryClass retry_class, uint32_t attempts_made,
                       const AttemptOutcome& outcome, MonoTime now,
                       std::optional<MonoTime> deadline, Random& random) const;

  // Full jitter (AWS, "Exponential Backoff And Jitter"): uniform in
  // [0, min(backoff_max, backoff_base * 2^(retry_number - 1))]; retry_number starts at 1.
  Duration Backoff(uint32_t retry_number, Random& random) const;

  const RetryPolicyOptions& options() const { return options_; }

 private:
  RetryPolicyOptions options_;
};

class RetryBudget;

// A call waiting for a place among a budget's retries in flight, in the budget's FIFO queue
// (RetryBudget::Wait). Intrusive (Boost.Intrusive, auto-unlink): the queue allocates nothing, and a
// waiter leaves it with StopWaiting (RetryPlaceWait does on Stop and on destruction; the hook
// would too when destroyed), after which it is never woken.
class RetryPlaceWaiter {
 public:
  RetryPlaceWaiter() = default;
  RetryPlaceWaiter(const RetryPlaceWaiter&) = delete;
  RetryPlaceWaiter& operator=(const RetryPlaceWaiter&) = delete;

  // Something that may let this waiter (the first in line) go happened on its budget: a place
  // freed, the limits changed, the calls in flight grew, or the tokens ran out. Returns true to
  // leave the queue (it took the place, or must fail), false to stay first in line (still no
  // place: nobody behind it is woken either).
  // Called from inside whatever changed the budget (another call's ticket being released, on the
  // same worker thread): it must not call out (no host call), only take its place and arm a timer.
  virtual bool OnRetryPlaceFreed() = 0;

 protected:
  ~RetryPlaceWaiter() = default;  // the owner leaves the queue first (StopWaiting)

 private:
  friend class RetryBudget;
  // Linked while in a budget's queue.
  boost::intrusive::list_member_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>>
      hook_;
};

// Storm control: how many retries may run, per node and per process.
//  - A token bucket per node, as gRPC's retryThrottling: it starts full (max_tokens); each failed
//    attempt takes 1, each success gives back token_ratio; retries are allowed only while more than
//    half the tokens remain. Under a total outage the bucket drains and retries stop, so a dead
//    node sees at most ~max_tokens/2 extra attempts, not max_attempts x the traffic.
//  - Retries in flight at once: at most max(min_concurrent, ratio x active calls). A retry this
//    limit alone refuses waits for a place when its call has time to (RetryPlaceWait): the
//    limit bounds how many retries run at once, the tokens how many a failing node gets. Waiting
//    calls queue here, first come first served, and are woken (WakeWaiters) when a place frees:
//    the first in line takes it on the spot, so a retry starting meanwhile cannot take it first.
// Thread-safety: none; one per worker (and node), used on its thread. Neither copyable nor movable
// (tickets and waiters point at it): RetryContext keeps its budgets in a std::deque.
class RetryBudget {
 public:
  struct Options {
    double max_tokens = 100;        // retry.budget.max_tokens
    double token_ratio = 0.1;       // retry.budget.token_ratio
    uint32_t min_concurrent = 3;    // retry.budget.min_retries_in_flight
    double concurrent_ratio = 0.2;  // retry.budget.retries_in_flight_ratio
  };
  explicit RetryBudget(Options options) : options_(options), tokens_(options.max_tokens) {}
  RetryBudget(const RetryBudget&) = delete;
  RetryBudget& operator=(const RetryBudget&) = delete;
  ~RetryBudget();
  // A config reload: new limits from now on; the tokens are capped at the new maximum and the
  // retries in flight carry over. Waiters are woken (a higher limit has room for them).
  void SetOptions(Options options);

  void OnAttemptSucceeded() {
    tokens_ = std::min(options_.max_tokens, tokens_ + options_.token_ratio);
  }
  // Takes a token; when that leaves half or less, the waiters are woken (they fail: no retry).
  void OnAttemptFailed();

  // True when a retry may start now with `active_calls` calls in flight; the caller then calls
  // RetryStarted() and, when the retry attempt ends, RetryEnded().
  bool MayRetry(uint64_t active_calls) const;
  void RetryStarted() { retries_in_flight_++; }
  // The place goes to the first waiter in line, if any (WakeWaiters).
  void RetryEnded();
  // Whether a retry may start now, and if not which limit says no (kBudget: the tokens;
  // kInFlight: the retries already running).
  std::optional<RetryRefusal> Refusal(uint64_t active_calls) const;

  // Queues `waiter` (not queued anywhere) at the end of the line for a place.
  void Wait(RetryPlaceWaiter& waiter);
  // Takes `waiter` out of the line if it is in it (idempotent): it is not woken afterwards.
  static void StopWaiting(RetryPlaceWaiter& waiter);
  // Asks the waiters, first in line first, whether they can go now (OnRetryPlaceFreed), until
  // one says it cannot or none is left. Called by the budget itself when a place frees, the
  // limits change or the tokens run out, and by the owner of the active-calls count when it grows
  // (the ratio limit with it).
  void WakeWaiters();
  bool has_waiters() const { return !waiters_.empty(); }

  double tokens() const { return tokens_; }
  uint32_t retries_in_flight() const { return retries_in_flight_; }

 private:
  Options options_;
  double tokens_;
  uint32_t retries_in_flight_ = 0;
  // The calls waiting for a place, oldest first.
  boost::intrusive::list<
      RetryPlaceWaiter,
      boost::intrusive::member_hook<RetryPlaceWaiter, decltype(RetryPlaceWaiter::hook_),
                                    &RetryPlaceWaiter::hook_>,
      boost::intrusive::constant_time_size<false>>
      waiters_;
};

// One retry (or hedge) in flight on a node's budget: RetryStarted() when taken, RetryEnded() when
// released or destroyed. Movable, so it can sit in a call and pass to the attempt it pays for.
class RetryTicket {
 public:
  RetryTicket() = default;
  explicit RetryTicket(RetryBudget& budget) : budget_(&budget) { budget.RetryStarted(); }
  RetryTicket(RetryTicket&& other) noexcept : budget_(other.budget_) { other.budget_ = nullptr; }
  RetryTicket& operator=(RetryTicket&& other) noexcept {
    if (this != &other) {
      Release();
      budget_ = other.budget_;
      other.budget_ = nullptr;
    }
    return *this;
  }
  RetryTicket(const RetryTicket&) = delete;
  RetryTicket& operator=(const RetryTicket&) = delete;
  ~RetryTicket() { Release(); }

  void Release() {
    if (budget_ != nullptr) budget_->RetryEnded();
    budget_ = nullptr;
  }
  bool held() const { return budget_ != nullptr; }

 private:
  RetryBudget* budget_ = nullptr;
};

}  // namespace qpool::retry

#endif  // QPOOL_DAEMON_RETRY_RETRY_POLICY_H_
