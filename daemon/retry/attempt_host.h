// What the AttemptController (and its AttemptSlots) ask of the call that owns a call's attempts:
// the gRPC CallUpstream (server/call_upstream.h) or a REST exchange (rest/rest_attempts.h). The
// contract is in attempt_controller.h, which includes this header.
// Thread-safety: none; one call, one worker thread.
#ifndef QPOOL_DAEMON_RETRY_ATTEMPT_HOST_H_
#define QPOOL_DAEMON_RETRY_ATTEMPT_HOST_H_

#include <cstdint>

#include "absl/status/status.h"
#include "daemon/retry/method_class.h"

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

}  // namespace qpool::retry

#endif  // QPOOL_DAEMON_RETRY_ATTEMPT_HOST_H_
