#include "daemon/retry/retry_context.h"

namespace qpool::retry {

RetryContext::RetryContext(const RetryPolicyOptions& policy_options,
                           const RetryBudget::Options& budget, size_t nodes, RetryEvents* events)
    : policy(policy_options), events(events) {
  for (size_t i = 0; i < nodes; ++i) budgets.emplace_back(budget);
}

}  // namespace qpool::retry
