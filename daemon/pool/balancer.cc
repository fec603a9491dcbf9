#include "daemon/pool/balancer.h"

#include "absl/time/time.h"
#include "daemon/metrics/health_metrics.h"
#include "daemon/metrics/worker_metrics.h"
#include "spdlog/spdlog.h"

namespace qpool::pool {

health::OutlierOptions OutlierOptionsOf(const config::HealthConfig& health) {
  health::OutlierOptions options;
  options.consecutive_failures = health.consecutive_failures;
  options.base_ejection_time = absl::ToChronoNanoseconds(health.base_ejection_time);
  options.max_ejection_time = absl::ToChronoNanoseconds(health.max_ejection_time);
  options.max_ejection_percent = health.max_ejection_percent;
  options.jitter = health.jitter_percent / 100.0;
  return options;
}

Balancer::Balancer(EventLoop& loop, Random& random, metrics::WorkerMetrics& metrics,
                   const metrics::HealthMetrics* health)
    : loop_(loop), random_(random), metrics_(metrics), health_(health) {}

Balancer::~Balancer() = default;

void Balancer::SetPools(Protocol protocol, const SlotPools* pools) {
  pools_[static_cast<size_t>(protocol)] = pools;
}

void Balancer::Rebuild(const config::NodeTable& table, const config::HealthConfig& health) {
  table_ = &table;
  consecutive_failures_ = health.consecutive_failures;
  active_.clear();
  router_index_.assign(table.slots.size(), -1);
  for (size_t s = 0; s < table.slots.size(); ++s) {
    if (!table.slots[s].active) continue;
    router_index_[s] = static_cast<int>(active_.size());
    active_.push_back(s);
  }
  router_ = std::make_unique<health::NodeRouter>(active_.size(), OutlierOptionsOf(health),
                                                 health.enabled && health.passive_enabled, random_);
}

int Balancer::RouterIndexOf(size_t slot) const {
  return slot < router_index_.size() ? router_index_[slot] : -1;
}

void Balancer::Refresh(Protocol protocol) {
  const SlotPools* pools = pools_[static_cast<size_t>(protocol)];
  for (size_t i = 0; i < active_.size(); ++i) {
    const size_t s = active_[i];
    health::NodeRouter::NodeState& state = router_->node(i);
    state.healthy = health_ == nullptr || health_->healthy(s);
    const NodePool* pool = pools != nullptr ? pools->pool(s) : nullptr;
    // A pool that never opened a connection (a node just added, min_connections 0) counts as
    // up: else the router, which prefers nodes with a connection up, would never send it a call.
    state.live = pool != nullptr && (pool->has_live_connection() || pool->never_connected());
    state.usable = pool != nullptr && pool->usable();
    state.load = pool != nullptr ? pool->load() : 0;
  }
}

size_t Balancer::Pick(Protocol protocol) {
  if (active_.size() == 1) return active_.front();
  // Health first, then a connection up, then power of two choices on streams in flight plus
  // calls waiting.
  Refresh(protocol);
  bool panic = false;
  const size_t node = router_->Pick(loop_.Now(), &panic);
  if (panic) metrics_.AddPanicRoute();
  return active_[node];
}

std::optional<size_t> Balancer::PickOtherThan(Protocol protocol, size_t except) {
  const SlotPools* pools = pools_[static_cast<size_t>(protocol)];
  if (pools == nullptr || except >= pools->size()) return std::nullopt;
  Refresh(protocol);
  const int except_index = RouterIndexOf(except);
  const std::optional<size_t> node = router_->PickOtherThan(
      except_index < 0 ? router_->size() : static_cast<size_t>(except_index), loop_.Now());
  if (!node) return std::nullopt;
  return active_[*node];
}

void Balancer::OnAttemptEnd(size_t slot, bool failed) {
  const int index = RouterIndexOf(slot);
  if (index < 0) return;  // removed from the node set meanwhile
  if (!failed) {
    router_->OnAttemptEnd(static_cast<size_t>(index), false, loop_.Now());
    return;
  }
  if (router_->size() < 2) return;  // one node: nowhere else to go
  if (router_->OnAttemptEnd(static_cast<size_t>(index), true, loop_.Now())) {
    metrics_.node(slot).ejections.Add();
    SPDLOG_WARN("upstream {}: ejected after {} failures in a row (health.consecutive_failures)",
                table_->slots[slot].name, consecutive_failures_);
  }
}

bool Balancer::IsEjected(size_t slot) const {
  const int index = RouterIndexOf(slot);
  return index >= 0 && router_->IsEjected(static_cast<size_t>(index), loop_.Now());
}

}  // namespace qpool::pool
