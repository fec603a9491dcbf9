#include "daemon/retry/retry_policy.h"

#include <algorithm>

namespace qpool::retry {

const char* RetryReasonName(RetryReason reason) {
  switch (reason) {
    case RetryReason::kNone:
      return "none";
    case RetryReason::kTransparent:
      return "transparent";
    case RetryReason::kUnavailable:
      return "unavailable";
    case RetryReason::kResourceExhausted:
      return "resource_exhausted";
    case RetryReason::kPerTryTimeout:
      return "per_try_timeout";
  }
  return "none";
}

Duration RetryPolicy::Backoff(uint32_t retry_number, Random& random) const {
  const uint32_t exponent = std::min<uint32_t>(retry_number == 0 ? 0 : retry_number - 1, 20);
  const Duration ceiling =
      std::min(options_.backoff_base * (int64_t{1} << exponent), options_.backoff_max);
  return std::chrono::duration_cast<Duration>(ceiling * random.Uniform01());
}

RetryDecision RetryPolicy::Decide(RetryClass retry_class, uint32_t attempts_made,
                                  const AttemptOutcome& outcome, MonoTime now,
                                  std::optional<MonoTime> deadline, Random& random) const {
  RetryDecision decision;
  if (outcome.failure == Failure::kNone) return decision;

  // Which kind of retry, if any, the outcome allows.
  const bool policy_class =
      retry_class == RetryClass::kRead || retry_class == RetryClass::kIdScopedWrite;
  if (outcome.failure == Failure::kNeverReached || outcome.failure == Failure::kStaleConnection) {
    decision.reason = RetryReason::kTransparent;
  } else if (!policy_class) {
    return decision;
  } else if (outcome.failure == Failure::kPerTryTimeout) {
    if (retry_class != RetryClass::kRead || !options_.retry_per_try_timeout) return decision;
    decision.reason = RetryReason::kPerTryTimeout;
  } else if (outcome.failure == Failure::kUnavailable && options_.retry_unavailable) {
    decision.reason = RetryReason::kUnavailable;
  } else if (outcome.failure == Failure::kResourceExhausted && outcome.pushback &&
             options_.retry_resource_exhausted_with_pushback) {
    decision.reason = RetryReason::kResourceExhausted;
  } else {
    // Anything else is final, DEADLINE_EXCEEDED from Qdrant included (its own operation timeout):
    // kOther, kAborted.
    return decision;
  }

  const uint32_t bound = outcome.failure == Failure::kStaleConnection ? kMaxStaleConnectionAttempts
                                                                      : options_.max_attempts;
  if (attempts_made >= bound) {
    decision.refused = RetryRefusal::kMaxAttempts;
    return decision;
  }
  // Transparent retries go at once; policy retries back off, or wait as long as Qdrant asked.
  if (decision.reason == RetryReason::kResourceExhausted) {
    decision.delay = std::max(Duration::zero(), *outcome.pushback);
  } else if (decision.reason != RetryReason::kTransparent) {
    decision.delay = Backoff(attempts_made, random);
  }
  if (deadline) {
    // Start only if the retry could run at least as long as the failed attempt did.
    const Duration needed =
        decision.delay +
        (decision.reason == RetryReason::kTransparent ? Duration::zero() : outcome.took);
    if (now + needed >= *deadline) {
      decision.refused = RetryRefusal::kDeadline;
      return decision;
    }
  }
  decision.retry = true;
  return decision;
}

RetryBudget::~RetryBudget() = default;  // the queue's hooks are left unlinked: told nothing more

void RetryBudget::SetOptions(Options options) {
  options_ = options;
  tokens_ = std::min(tokens_, options_.max_tokens);
  WakeWaiters();
}

void RetryBudget::OnAttemptFailed() {
  tokens_ = std::max(0.0, tokens_ - 1);
  if (tokens_ <= options_.max_tokens / 2) WakeWaiters();
}

void RetryBudget::RetryEnded() {
  retries_in_flight_--;
  WakeWaiters();
}

void RetryBudget::Wait(RetryPlaceWaiter& waiter) { waiters_.push_back(waiter); }

void RetryBudget::StopWaiting(RetryPlaceWaiter& waiter) {
  if (waiter.hook_.is_linked()) waiter.hook_.unlink();
}

void RetryBudget::WakeWaiters() {
  // A waiter that goes takes its place (RetryStarted) from inside OnRetryPlaceFreed, which does
  // not come back here: the loop ends when the first in line finds no place, normally the one
  // after the waiter that took the freed place.
  while (!waiters_.empty()) {
    RetryPlaceWaiter& first = waiters_.front();
    if (!first.OnRetryPlaceFreed()) return;
    StopWaiting(first);
  }
}

std::optional<RetryRefusal> RetryBudget::Refusal(uint64_t active_calls) const {
  if (MayRetry(active_calls)) return std::nullopt;
  return tokens_ > options_.max_tokens / 2 ? RetryRefusal::kInFlight : RetryRefusal::kBudget;
}

bool RetryBudget::MayRetry(uint64_t active_calls) const {
  if (tokens_ <= options_.max_tokens / 2) return false;
  const double ratio_limit = options_.concurrent_ratio * static_cast<double>(active_calls);
  const double limit = std::max(static_cast<double>(options_.min_concurrent), ratio_limit);
  return retries_in_flight_ < limit;
}

}  // namespace qpool::retry
