#include "daemon/retry/unreachable_wait.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"

namespace qpool::retry {

std::optional<Duration> UnreachableWait::NextTry(const CallWindow& window, MonoTime now,
                                                 bool room) {
  const RetryPolicy& policy = context_.policy;
  Duration delay =
      std::max<Duration>(policy.Backoff(++tries_, random_), std::chrono::milliseconds(1));
  bound_ = " (retry.max_attempts)";
  bool in_time = true;
  if (window.callers_deadline) {
    bound_ = ", until the deadline";
  } else if (context_.unreachable_wait > Duration::zero()) {
    bound_ = " (retry.unreachable_wait)";
    const MonoTime window_end = window.started_at + context_.unreachable_wait;
    in_time = window_end - now >= std::chrono::milliseconds(1);
    if (in_time) delay = std::min<Duration>(delay, window_end - now);
  } else {
    in_time = tries_ < policy.options().max_attempts;
  }
  if (in_time && window.deadline && now + delay + window.AnswerMargin() >= *window.deadline) {
    in_time = false;
    bound_ = ", until the deadline";
  }
  room_ = room;
  if (!in_time || !room) return std::nullopt;
  return delay;
}

absl::Status UnreachableWait::GiveUpStatus(const absl::Status& status, const CallWindow& window,
                                           MonoTime now) const {
  const auto waited =
      std::chrono::duration_cast<std::chrono::milliseconds>(now - window.started_at);
  return absl::Status(
      status.code(),
      absl::StrCat(
          status.message(), "; tried ", tries_, tries_ == 1 ? " time" : " times", " over ",
          waited.count(), " ms",
          room_ ? bound_ : "; upstream.max_pending calls wait for a node already, none more"));
}

}  // namespace qpool::retry
