#include "daemon/rest/rest_attempts.h"

#include <chrono>

namespace qpool::rest {

retry::Failure FailureOfHttpStatus(unsigned status) {
  if (status == 503) return retry::Failure::kUnavailable;
  if (status == 429) return retry::Failure::kResourceExhausted;
  return retry::Failure::kNone;
}

unsigned HttpStatusOf(const absl::Status& status, unsigned unavailable) {
  switch (status.code()) {
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    case absl::StatusCode::kUnavailable:
      return unavailable;
    default:
      return 502;
  }
}

RestAttempts::RestAttempts(retry::RetryContext& context, EventLoop& loop, Random& random,
                           RestExchanges& exchanges)
    : context_(context), loop_(loop), random_(random), exchanges_(exchanges) {}

void RestAttempts::Begin(std::optional<MonoTime> deadline, bool callers_deadline,
                         retry::RetryClass retry_class, bool replayable) {
  End();
  retry_class_ = retry_class;
  replayable_ = replayable;
  held_slot_ = -1;
  unavailable_status_ = 503;
  controller_.emplace(context_, loop_, random_, *this);
  controller_->Start(loop_.Now(), deadline, callers_deadline);
}

void RestAttempts::Stop() {
  if (!controller_) return;
  controller_->Stop();
  if (held_slot_ >= 0) CancelAttempt(held_slot_);
}

void RestAttempts::End() {
  Stop();
  controller_.reset();  // the request stops counting as active
}

void RestAttempts::OnSent(int slot, int node) {
  if (controller_) controller_->OnAttemptSent(slot, node, loop_.Now());
}

void RestAttempts::OnNotStarted(int slot, int node, const absl::Status& status,
                                bool node_unreachable) {
  if (!controller_) return;
  unavailable_status_ = 503;
  controller_->OnAttemptNotStarted(slot, node, status, node_unreachable);
}

void RestAttempts::OnAnswerHead(int slot, unsigned http_status,
                                std::optional<int> retry_after_seconds) {
  if (!controller_) return;
  retry::AttemptOutcome outcome;
  outcome.failure = FailureOfHttpStatus(http_status);
  if (retry_after_seconds) outcome.pushback = std::chrono::seconds(*retry_after_seconds);
  // A 503 or a 429 with Retry-After is Qdrant's whole refusal (its small body is not needed to
  // decide); every request byte went out before the answer's head was read.
  const bool whole_answer = retry::RetryableAnswer(outcome);
  switch (controller_->OnResponseHeaders(slot, outcome, whole_answer, /*request_sent=*/true)) {
    case retry::HeadersVerdict::kForward:
      exchanges_.ForwardAnswer(controller_->primary());
      return;
    case retry::HeadersVerdict::kDiscard:
      return;  // the slot lost a race, or failed while a hedge runs: cancelled already
    case retry::HeadersVerdict::kHeld:
      // Decided at once: a retry drops the held answer (RewindRequest), no retry forwards it
      // (PassOnHeldAnswer).
      unavailable_status_ = http_status;
      controller_->OnAttemptEnded(slot, retry::AttemptOutcome{}, absl::OkStatus());
      return;
  }
}

void RestAttempts::OnLost(int slot, bool never_reached, const std::string& message) {
  if (!controller_) return;
  retry::AttemptOutcome outcome;
  outcome.failure = never_reached ? retry::Failure::kStaleConnection : retry::Failure::kUnavailable;
  unavailable_status_ = 502;
  // Neither failure is passed on as a close: the controller retries or gives up (FinishWith).
  controller_->OnAttemptEnded(slot, outcome, absl::UnavailableError(message));
}

void RestAttempts::StartAttempt(int slot, retry::AttemptKind /*kind*/, int node, int avoid_node) {
  exchanges_.StartExchange(slot, node, avoid_node);
}

void RestAttempts::CancelAttempt(int slot) {
  if (slot == held_slot_) held_slot_ = -1;
  exchanges_.CancelExchange(slot);
}

int RestAttempts::PickHedgeNode(int node) {
  if (node < 0) return -1;
  return exchanges_.PickOtherNode(node);
}

void RestAttempts::RewindRequest() {
  // The session keeps the whole body until the request is answered: only a held answer goes.
  if (held_slot_ >= 0) CancelAttempt(held_slot_);
}

void RestAttempts::PassOnHeldAnswer() {
  const int slot = held_slot_;
  held_slot_ = -1;
  if (slot >= 0) exchanges_.ForwardAnswer(slot);
}

void RestAttempts::FinishWith(const absl::Status& status) {
  const unsigned http_status = HttpStatusOf(status, unavailable_status_);
  std::optional<int> retry_after;
  if (http_status == 429) retry_after = 1;
  exchanges_.ReplyLocally(http_status, std::string(status.message()), retry_after);
}

}  // namespace qpool::rest
