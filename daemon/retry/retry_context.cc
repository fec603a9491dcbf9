#include "daemon/retry/retry_context.h"

namespace qpool::retry {

RetryContext::RetryContext(const RetryPolicyOptions& policy_options,
                           const RetryBudget::Options& budget, size_t nodes, RetryEvents* events)
    : policy(policy_options), budgets(nodes, RetryBudget(budget)), events(events) {}

}  // namespace qpool::retry
