// The upstream attempts of one REST request, decided by the same retry::AttemptController as a
// gRPC call (docs/retries.md): retries after a backoff or Retry-After, the per-node retry budgets,
// the retries-in-flight limit, the per-try timeout, hedged reads and unreachable-node waits. This
// class is the controller's AttemptHost for HTTP/1.1: it turns what an exchange reports (an
// answer's status, a lost connection, a pool's refusal) into protocol-neutral outcomes
// (retry::Failure), and the controller's decisions into calls on RestExchanges, which the session
// carries out on sockets. It holds no socket itself, so it runs against the fake clock in tests.
//
//   RestAttempts attempts(context, loop, random, exchanges);
//   attempts.Begin(deadline, false, retry_class, /*replayable=*/true);  // -> StartExchange(0, ...)
//   attempts.OnSent(0, node);                   // the request went out on slot 0
//   attempts.OnAnswerHead(0, 503, std::nullopt);  // -> a retry (StartExchange later) or
//                                               //    ForwardAnswer(0) / ReplyLocally(...)
//   attempts.End();                             // the request is answered
//
// An answer's head with 503 (UNAVAILABLE) or 429 with Retry-After (RESOURCE_EXHAUSTED with a
// pushback) is a whole, retryable answer: held (its connection and parser kept, its body unread)
// while the controller decides, then either dropped for a retry or forwarded as Qdrant sent it.
// Any other answer is forwarded: the commit point.
//
// Thread-safety: none; one session, one worker thread.
#ifndef QPOOL_DAEMON_REST_REST_ATTEMPTS_H_
#define QPOOL_DAEMON_REST_REST_ATTEMPTS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "daemon/common/event_loop.h"
#include "daemon/retry/attempt_controller.h"
#include "daemon/retry/method_class.h"
#include "daemon/retry/retry_context.h"

namespace qpool::rest {

// What RestAttempts asks of the session that carries the HTTP exchanges. Slots are 0 and 1 (a
// hedge races the primary in the other slot).
class RestExchanges {
 public:
  virtual ~RestExchanges() = default;
  // Starts an exchange in `slot`: to `node` when >= 0, else to the balancer's choice, another
  // node than `avoid_node` when there is one; a connection from that node's pool, then the whole
  // request from its first byte. Reports with RestAttempts::OnSent or OnNotStarted, now or later.
  virtual void StartExchange(int slot, int node, int avoid_node) = 0;
  // Abandons `slot`'s exchange (leaves the pool's queue, or closes its connection). Final.
  virtual void CancelExchange(int slot) = 0;
  // A node other than `node` with a connection up, for a hedge; -1 when there is none.
  virtual int PickOtherNode(int node) = 0;
  // `slot`'s answer (its head read, its body not yet) goes to the app as Qdrant sent it.
  virtual void ForwardAnswer(int slot) = 0;
  // The app gets qpoold's own answer (Qdrant's error shape).
  virtual void ReplyLocally(unsigned status, const std::string& message,
                            std::optional<int> retry_after_seconds) = 0;
};

class RestAttempts final : public retry::AttemptHost {
 public:
  // Everything passed must outlive this object.
  RestAttempts(retry::RetryContext& context, EventLoop& loop, Random& random,
               RestExchanges& exchanges);

  // A request is ready to go (its body read whole when `replayable`; a streamed body is never
  // retried): the first exchange starts. `deadline`: rest.request_timeout or ?timeout= (then
  // `callers_deadline`: an unreachable node is waited for up to it, as for a gRPC deadline).
  void Begin(std::optional<MonoTime> deadline, bool callers_deadline, retry::RetryClass retry_class,
             bool replayable);
  // The request is answered (or abandoned): attempts in flight are cancelled, timers stop, the
  // request stops counting as active. Idempotent; Begin may follow.
  void End();
  // No further attempt, retry or hedge for this request (it is being answered): attempts in
  // flight are cancelled, timers stop. Unlike End, safe from within an exchanges' callback.
  void Stop();
  bool active() const { return controller_.has_value(); }

  // Exchange reports. ---------------------------------------------------------------------------
  // `slot`'s request went out to `node` (its first bytes are written).
  void OnSent(int slot, int node);
  // `slot` got no connection: `status` from the pool. `node_unreachable` when the node could not
  // be reached at all (nothing left qpoold).
  void OnNotStarted(int slot, int node, const absl::Status& status, bool node_unreachable);
  // `slot`'s answer head arrived with `http_status` (and Retry-After, if any). Forwards it, holds
  // it for a retry, or drops it (the slot lost a race); the exchanges hear which.
  void OnAnswerHead(int slot, unsigned http_status, std::optional<int> retry_after_seconds);
  // `slot`'s connection was lost before its answer's head. `never_reached`: provably before
  // Qdrant read the request (a reused keep-alive connection the server had closed). `message`:
  // the app's 502 if the call gives up.
  void OnLost(int slot, bool never_reached, const std::string& message);
  // The slot whose answer is the request's (the winner once an answer is forwarded).
  int primary() const { return controller_ ? controller_->primary() : 0; }
  // Upstream exchanges sent for this request, hedges not included.
  uint32_t attempts() const { return controller_ ? controller_->attempts() : 0; }

  // retry::AttemptHost. ---------------------------------------------------------------------------
  void StartAttempt(int slot, retry::AttemptKind kind, int node, int avoid_node) override;
  void CancelAttempt(int slot) override;
  int PickHedgeNode(int node) override;
  retry::RetryClass ClassifyRequest() override { return retry_class_; }
  bool CanReplay() const override { return replayable_; }
  bool WholeRequestHeld() const override { return replayable_; }
  void HoldAnswer(int slot) override { held_slot_ = slot; }
  void RewindRequest() override;
  void PassOnHeldAnswer() override;
  void FinishWith(const absl::Status& status) override;

 private:
  retry::RetryContext& context_;
  EventLoop& loop_;
  Random& random_;
  RestExchanges& exchanges_;
  retry::RetryClass retry_class_ = retry::RetryClass::kNeverRepeat;
  bool replayable_ = false;
  int held_slot_ = -1;  // the slot whose retryable answer is held; -1: none
  // The HTTP status of an UNAVAILABLE give-up: 503 when no connection was had, 502 when one was
  // lost.
  unsigned unavailable_status_ = 503;
  std::optional<retry::AttemptController> controller_;  // one per request, from Begin to End
};

// How an answer's HTTP status reads as an attempt's outcome: 503 is UNAVAILABLE, 429 is
// RESOURCE_EXHAUSTED (retried only with Retry-After), anything else is an answer to pass on.
retry::Failure FailureOfHttpStatus(unsigned status);
// The HTTP status qpoold answers a given-up request with: 429 for RESOURCE_EXHAUSTED, 504 for a
// deadline (the request's, or retry.per_try_timeout), `unavailable` for UNAVAILABLE, else 502.
unsigned HttpStatusOf(const absl::Status& status, unsigned unavailable);

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_REST_ATTEMPTS_H_
