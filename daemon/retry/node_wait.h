// What a call's two waits for a node share (docs/retries.md): the call's time window, which bounds
// both, and its place in the worker's count of calls waiting for a node. The waits:
//  - UnreachableWait (unreachable_wait.h): its node could not be reached; the call tries again
//    after a backoff, like a gRPC wait-for-ready call;
//  - RetryPlaceWait (retry_place_wait.h): its retry found no place among its node's retries in
//    flight (RetryBudget); the call waits in the budget's queue for one.
// Both count in RetryContext::waiting_for_node, bounded by max_waiting_for_node (this worker's
// share of upstream.max_pending): a call that would be one more gives up at once. Thread-safety:
// none; one call, one worker thread.
#ifndef QPOOL_DAEMON_RETRY_NODE_WAIT_H_
#define QPOOL_DAEMON_RETRY_NODE_WAIT_H_

#include <optional>

#include "daemon/common/event_loop.h"
#include "daemon/retry/retry_context.h"
#include "daemon/retry/retry_policy.h"

namespace qpool::retry {

// When a call started and until when it may run.
struct CallWindow {
  MonoTime started_at{};
  std::optional<MonoTime> deadline;  // the call's, if any
  // `deadline` is the caller's own (grpc-timeout, REST ?timeout=): a wait for a node may last up
  // to it. Otherwise (qpoold's own limit, e.g. rest.request_timeout) a wait is bounded as for a
  // call without a deadline (retry.unreachable_wait), and by the deadline too.
  bool callers_deadline = false;

  // How long before the caller's deadline a wait must end for the answer that ends it to reach
  // the caller in time (UnreachableAnswerMargin); zero without a caller's deadline.
  Duration AnswerMargin() const {
    return callers_deadline ? UnreachableAnswerMargin(*deadline - started_at) : Duration::zero();
  }
};

// One call's place in RetryContext::waiting_for_node: counted in while it waits, out when the wait
// ends or the count is destroyed.
class NodeWaitCount {
 public:
  // `context` must outlive the count.
  explicit NodeWaitCount(RetryContext& context) : context_(context) {}
  ~NodeWaitCount() { Set(false); }
  NodeWaitCount(const NodeWaitCount&) = delete;
  NodeWaitCount& operator=(const NodeWaitCount&) = delete;

  // Counts the call in (`waiting`) or out; idempotent.
  void Set(bool waiting) {
    if (waiting == counted_) return;
    counted_ = waiting;
    if (waiting) {
      context_.waiting_for_node++;
    } else {
      context_.waiting_for_node--;
    }
  }
  bool counted() const { return counted_; }
  // The call may wait: it is counted already, or the worker's waiting calls leave room for one
  // more.
  bool room() const {
    return counted_ || context_.waiting_for_node < context_.max_waiting_for_node;
  }

 private:
  RetryContext& context_;
  bool counted_ = false;
};

}  // namespace qpool::retry

#endif  // QPOOL_DAEMON_RETRY_NODE_WAIT_H_
