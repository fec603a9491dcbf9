#include "daemon/metrics/worker_metrics.h"

#include <algorithm>

#include "daemon/common/grpc_code.h"

namespace qpool::metrics {

std::string HttpStatusSlotName(size_t slot) {
  if (slot >= kNoHttpStatusSlot) return "none";
  return std::to_string(slot + kMinHttpStatus);
}

const char* RetryRefusalName(RetryRefusal refusal) {
  switch (refusal) {
    case RetryRefusal::kMaxAttempts:
      return "max_attempts";
    case RetryRefusal::kDeadline:
      return "deadline";
    case RetryRefusal::kBudget:
      return "budget";
    case RetryRefusal::kInFlight:
      return "in_flight";
  }
  return "max_attempts";
}

const char* ReplayLimitName(ReplayLimit limit) {
  return limit == ReplayLimit::kPerCall ? "per_call" : "total";
}

const char* CodeSlotName(size_t slot) {
  // Slots 0-16 are the gRPC codes; kNoStatusSlot is a stream that ended without a status.
  const char* name = slot < kNoStatusSlot ? GrpcCodeName(static_cast<int>(slot)) : nullptr;
  return name != nullptr ? name : "RESET";
}

WorkerMetrics::WorkerMetrics(size_t node_count, size_t rest_node_count) {
  const size_t slots = std::min(std::max(node_count, rest_node_count), kMaxNodeSlots);
  for (size_t i = 0; i < slots; ++i) ResetNode(i);
}

void WorkerMetrics::ResetNode(size_t i) {
  if (i >= kMaxNodeSlots) return;
  owned_.push_back(std::make_unique<SlotMetrics>());
  slots_[i].store(owned_.back().get(), std::memory_order_release);
  if (i >= node_count_.load(std::memory_order_relaxed)) {
    node_count_.store(i + 1, std::memory_order_release);
  }
}

bool NodeUsable(const std::vector<const WorkerMetrics*>& workers, size_t node) {
  bool failing = false;
  for (const WorkerMetrics* worker : workers) {
    if (worker->node(node).live.load(std::memory_order_relaxed)) return true;
    failing = failing || worker->node(node).failing.load(std::memory_order_relaxed);
  }
  return !failing;
}

void PoolMetricsObserver::OnConnectionState(const pool::ConnectionState* from,
                                            const pool::ConnectionState* to) {
  using pool::ConnectionState;
  if (from == nullptr) {
    connecting_since_.push_back(loop_.Now());
  } else if (*from == ConnectionState::kConnecting && !connecting_since_.empty()) {
    const MonoTime started = connecting_since_.front();
    connecting_since_.pop_front();
    // Connected: to ready, or straight to busy when the peer allows no stream at all.
    if (to != nullptr && (*to == ConnectionState::kReady || *to == ConnectionState::kBusy)) {
      metrics_.connects.Add();
      metrics_.connect_duration.Observe(loop_.Now() - started);
    }
  }
  // ready <-> busy changes nothing a router cares about; everything else may.
  const bool ready_busy = from != nullptr && to != nullptr &&
                          (*from == ConnectionState::kReady || *from == ConnectionState::kBusy) &&
                          (*to == ConnectionState::kReady || *to == ConnectionState::kBusy);
  if (!ready_busy && on_change_) on_change_();
}

void PoolMetricsObserver::OnConnectFailed(const absl::Status& reason) {
  metrics_.connect_failures[tls::ConnectFailureSlot(reason)].Add();
  if (std::optional<tls::FailureReason> tls = tls::FailureReasonOf(reason)) {
    metrics_.tls_failures[static_cast<size_t>(*tls)].Add();
  }
  if (on_change_) on_change_();
}

void PoolMetricsObserver::OnConnectionClosed(pool::CloseReason reason, const absl::Status& status) {
  metrics_.disconnects[static_cast<size_t>(reason)].Add();
  if (on_change_) on_change_();
}

}  // namespace qpool::metrics
