// How long a call waits for a node it cannot reach (docs/retries.md, "Unreachable nodes"). Nothing
// was sent, so any method may try again, after a jittered backoff (RetryPolicy::Backoff, at least
// 1 ms: the next try runs from a timer, never from inside the host's own StartAttempt). The call
// waits, like a gRPC wait-for-ready call:
//  - with the caller's own deadline, until a try could no longer start before it, less a margin
//    (CallWindow::AnswerMargin) for the answer that ends the wait to reach the caller: qpoold's
//    clock starts when it reads grpc-timeout, after the caller's, and an answer sent at the
//    deadline arrives after the caller gave up, which then sees DEADLINE_EXCEEDED instead of
//    UNAVAILABLE with the reason;
//  - without one, for retry.unreachable_wait from the call's start (the last try at its end), or,
//    with that off, for retry.max_attempts tries.
// qpoold's own deadline (rest.request_timeout) bounds the latter too. A call without room among
// the worker's waiting calls (NodeWaitCount::room) gives up at once.
//
//   std::optional<Duration> delay = wait.NextTry(window, now, count.room());
//   if (!delay) return host.FinishWith(wait.GiveUpStatus(pool_status, window, now));
//   count.Set(true);  // and the next try after *delay
//
// A decider only: it counts the tries and computes, and never arms a timer or calls out; the
// AttemptController acts on what it says.
// Thread-safety: none; one call, one worker thread.
#ifndef QPOOL_DAEMON_RETRY_UNREACHABLE_WAIT_H_
#define QPOOL_DAEMON_RETRY_UNREACHABLE_WAIT_H_

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "daemon/common/event_loop.h"
#include "daemon/retry/node_wait.h"
#include "daemon/retry/retry_context.h"

namespace qpool::retry {

class UnreachableWait {
 public:
  // `context` (the policy, retry.unreachable_wait) and `random` (the backoff's jitter) must
  // outlive the wait.
  UnreachableWait(const RetryContext& context, Random& random)
      : context_(context), random_(random) {}

  // A try of the call (`window`) found its node unreachable at `now`: the delay before the next
  // try, or none when the call may wait no longer. `room`: the call may wait (NodeWaitCount).
  std::optional<Duration> NextTry(const CallWindow& window, MonoTime now, bool room);
  // What the call fails with when it waits no longer (NextTry said none): `status` (the pool's)
  // with the tries made, for how long since the call's start, and the bound that ended the wait.
  absl::Status GiveUpStatus(const absl::Status& status, const CallWindow& window,
                            MonoTime now) const;
  // Tries that found the node unreachable so far.
  uint32_t tries() const { return tries_; }

 private:
  const RetryContext& context_;
  Random& random_;
  uint32_t tries_ = 0;
  // As of the last NextTry: which bound the wait has (for GiveUpStatus), and whether it had room.
  const char* bound_ = "";
  bool room_ = true;
};

}  // namespace qpool::retry

#endif  // QPOOL_DAEMON_RETRY_UNREACHABLE_WAIT_H_
