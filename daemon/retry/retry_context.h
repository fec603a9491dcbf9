// What the calls of one I/O worker share for retries (docs/retries.md): the policy, the method
// classes, a retry budget per node, the per-try and hedge timings, the replay limits, and where
// retry events are reported (metrics, passive health). Front doors (the gRPC Call, a REST
// exchange) reach it through their AttemptController and ReplayBuffer.
//
//   RetryContext context(policy_options, budget_options, /*nodes=*/2, &events);
//   context.per_try_timeout = 200ms;
//   AttemptController controller(context, loop, random, host);
//
// Thread-safety: none; one per worker, used on its thread only.
#ifndef QPOOL_DAEMON_RETRY_RETRY_CONTEXT_H_
#define QPOOL_DAEMON_RETRY_RETRY_CONTEXT_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>

#include "daemon/common/event_loop.h"
#include "daemon/retry/method_class.h"
#include "daemon/retry/retry_policy.h"

namespace qpool::retry {

// Which limit made a call give up its replay copy (qpool_replay_buffer_refusals_total{limit}).
enum class ReplayLimit : uint8_t { kPerCall = 0, kTotal = 1 };
inline constexpr size_t kReplayLimitCount = 2;

// Where retry decisions are reported. The worker forwards them to its metrics and its router;
// tests record them. Called on the worker's thread, never re-entrantly into the controller.
class RetryEvents {
 public:
  virtual ~RetryEvents() = default;
  // A retry was scheduled (reason kTransparent: the request never reached the node).
  virtual void OnRetry(RetryClass retry_class, RetryReason reason) = 0;
  virtual void OnRetryRefused(RetryRefusal refusal) = 0;
  // A hedge started (`won` false), or a hedge became the call's attempt (`won` true).
  virtual void OnHedge(bool won) = 0;
  // An attempt on `node` ended: `node_fault` for passive health (UNAVAILABLE, a lost connection,
  // a reset); `tokens` is the node's retry budget afterwards.
  virtual void OnAttemptResult(size_t node, bool node_fault, double tokens) = 0;
  virtual void OnReplayRefused(ReplayLimit limit) = 0;
};

// The replay copy's limits (retry.replay_buffer_per_call, retry.replay_buffer_total).
struct ReplayLimits {
  size_t per_call = 4 << 20;
  int64_t total = 64 << 20;
  // Bytes held by every call's copy in the process (shared by the workers); may be null.
  std::atomic<int64_t>* total_bytes = nullptr;
};

struct RetryContext {
  // `nodes` budgets, all with `budget`; `events` must outlive the context (null: not reported).
  RetryContext(const RetryPolicyOptions& policy_options, const RetryBudget::Options& budget,
               size_t nodes, RetryEvents* events);

  // A finished attempt tells its node's budget (`failed`: a retryable failure) and passive health
  // (`node_fault`) how it went. `node` < 0 (none): nothing.
  void RecordAttemptResult(int node, bool failed, bool node_fault) {
    if (node < 0 || static_cast<size_t>(node) >= budgets.size()) return;
    RetryBudget& budget = budgets[static_cast<size_t>(node)];
    if (failed) {
      budget.OnAttemptFailed();
    } else {
      budget.OnAttemptSucceeded();
    }
    if (events != nullptr) {
      events->OnAttemptResult(static_cast<size_t>(node), node_fault, budget.tokens());
    }
  }
  size_t nodes() const { return budgets.size(); }
  // A call started (active_calls grew, and the budgets' ratio limits with it): calls waiting for a
  // retry place are woken if one opened.
  void OnCallStarted() {
    active_calls++;
    if (waiting_for_node == 0) return;
    for (RetryBudget& budget : budgets) {
      if (budget.has_waiters()) budget.WakeWaiters();
    }
  }

  RetryPolicy policy;
  MethodClassifier classifier;
  // Per node, config order. A deque: a reload adding nodes appends budgets without moving the
  // others, which the retry tickets and waiters of calls in flight point at.
  std::deque<RetryBudget> budgets;
  RetryEvents* events;
  bool policy_retries = true;  // retry.enabled
  Duration per_try_timeout{};  // zero: off
  Duration hedge_delay{};      // zero: no hedged reads
  // How long a call without a deadline of its own waits for an unreachable node; zero: it tries
  // retry.max_attempts times instead (retry.unreachable_wait).
  Duration unreachable_wait{};
  // Calls waiting for an unreachable node now, and how many may (this worker's share of
  // upstream.max_pending): one more gives up at once.
  uint32_t waiting_for_node = 0;
  uint32_t max_waiting_for_node = UINT32_MAX;
  ReplayLimits replay;
  uint64_t active_calls = 0;  // this worker's calls from request headers to their end
};

}  // namespace qpool::retry

#endif  // QPOOL_DAEMON_RETRY_RETRY_CONTEXT_H_
