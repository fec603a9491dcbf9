#include "daemon/retry/retry_context.h"

namespace qpool::retry {

RetryContext::RetryContext(const RetryPolicyOptions& policy_options,
                           const RetryBudget::Options& budget, size_t nodes, RetryEvents* events)
    : policy(policy_options), budgets(nodes, RetryBudget(budget)), events(events) {}

void RetryContext::RecordAttemptResult(int node, bool failed, bool node_fault) {
  if (node < 0 || static_cast<size_t>(node) >= budgets.size()) return;
  RetryBudget& budget = budgets[static_cast<size_t>(node)];
  if (failed) {
    budget.OnAttemptFailed();
  } else {
    budget.OnAttemptSucceeded();
  }
  if (events != nullptr)
    events->OnAttemptResult(static_cast<size_t>(node), node_fault, budget.tokens());
}

}  // namespace qpool::retry
