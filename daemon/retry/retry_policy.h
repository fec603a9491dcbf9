// When a failed attempt of a call is tried again, and how long qpool waits first.
//
// Two kinds of retry (gRPC's A6 proposal names them):
//  - transparent: the request provably never reached Qdrant (connect failure, REFUSED_STREAM, a
//    stream above a GOAWAY's last-stream-id). Safe for every class, done at once.
//  - policy: the attempt reached Qdrant and failed with a retryable status. Only for reads and
//    id-scoped writes: UNAVAILABLE; RESOURCE_EXHAUSTED when Qdrant said when to come back
//    (retry-after / grpc-retry-pushback-ms), after that long; DEADLINE_EXCEEDED of a per-try
//    timeout, for reads only.
// Either kind is refused when it could not finish before the caller's deadline, when the call has
// used max_attempts, or when the retry budget (RetryBudget) says no.
//
// Thread-safety: RetryPolicy is immutable; Decide() is a pure function of its arguments.
#ifndef QPOOL_DAEMON_RETRY_RETRY_POLICY_H_
#define QPOOL_DAEMON_RETRY_RETRY_POLICY_H_

#include <cstdint>
#include <optional>

#include "daemon/common/event_loop.h"
#include "daemon/retry/method_class.h"

namespace qpool::retry {

struct RetryPolicyOptions {
  uint32_t max_attempts = 3;                              // retry.max_attempts, first one included
  Duration backoff_base = std::chrono::milliseconds(25);  // retry.backoff_base
  Duration backoff_max = std::chrono::seconds(1);         // retry.backoff_max
  bool retry_unavailable = true;                          // retry.on: unavailable
  bool retry_resource_exhausted_with_pushback = true;     // retry.on: resource_exhausted
  bool retry_per_try_timeout = true;                      // retry.on: per_try_timeout (reads)
};

// What happened to one attempt.
struct AttemptOutcome {
  int grpc_code = 0;                    // the attempt's grpc-status (0 OK)
  bool never_reached_upstream = false;  // connect failure, REFUSED_STREAM, above GOAWAY's last id
  bool per_try_timeout = false;         // qpool's own per-try timer ended the attempt
  std::optional<Duration> pushback;     // retry-after / grpc-retry-pushback-ms from Qdrant
  Duration took{};                      // how long the attempt ran
};

enum class RetryReason {
  kNone,         // no retry
  kTransparent,  // never reached Qdrant
  kUnavailable,
  kResourceExhausted,
  kPerTryTimeout,
};
const char* RetryReasonName(RetryReason reason);

struct RetryDecision {
  bool retry = false;
  RetryReason reason = RetryReason::kNone;
  Duration delay{};          // wait this long before the next attempt
  const char* why_not = "";  // when !retry and the outcome was retryable: which limit said no
};

class RetryPolicy {
 public:
  explicit RetryPolicy(RetryPolicyOptions options) : options_(options) {}

  // `attempts_made` counts the attempt that just failed. `deadline` is the caller's (grpc-timeout).
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

// Storm control: how many retries may run, per node and per process.
//  - A token bucket per node, as gRPC's retryThrottling: it starts full (max_tokens); each failed
//    attempt takes 1, each success gives back token_ratio; retries are allowed only while more than
//    half the tokens remain. Under a total outage the bucket drains and retries stop, so a dead
//    node sees at most ~max_tokens/2 extra attempts, not max_attempts x the traffic.
//  - Retries in flight at once: at most max(min_concurrent, ratio x active calls).
// Thread-safety: none; one per worker (and node), used on its thread.
class RetryBudget {
 public:
  struct Options {
    double max_tokens = 100;        // retry.budget.max_tokens
    double token_ratio = 0.1;       // retry.budget.token_ratio
    uint32_t min_concurrent = 3;    // retry.budget.min_retries_in_flight
    double concurrent_ratio = 0.2;  // retry.budget.retries_in_flight_ratio
  };
  explicit RetryBudget(Options options) : options_(options), tokens_(options.max_tokens) {}

  void OnAttemptSucceeded() {
    tokens_ = std::min(options_.max_tokens, tokens_ + options_.token_ratio);
  }
  void OnAttemptFailed() { tokens_ = std::max(0.0, tokens_ - 1); }

  // True when a retry may start now with `active_calls` calls in flight; the caller then calls
  // RetryStarted() and, when the retry attempt ends, RetryEnded().
  bool MayRetry(uint64_t active_calls) const;
  void RetryStarted() { retries_in_flight_++; }
  void RetryEnded() { retries_in_flight_--; }

  double tokens() const { return tokens_; }
  uint32_t retries_in_flight() const { return retries_in_flight_; }

 private:
  Options options_;
  double tokens_;
  uint32_t retries_in_flight_ = 0;
};

}  // namespace qpool::retry

#endif  // QPOOL_DAEMON_RETRY_RETRY_POLICY_H_
