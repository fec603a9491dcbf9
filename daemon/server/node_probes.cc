#include "daemon/server/node_probes.h"

#include <algorithm>

#include "absl/time/time.h"
#include "daemon/health/health_scheduler.h"
#include "daemon/server/health_probe.h"
#include "daemon/server/worker.h"
#include "spdlog/spdlog.h"

namespace qpool::server {

NodeProbes::NodeProbes(Worker& worker, const pool::SlotPools& pools)
    : worker_(worker), pools_(pools) {}

NodeProbes::~NodeProbes() = default;

void NodeProbes::Configure(const config::HealthConfig& health, const config::NodeTable& table) {
  table_ = &table;
  fast_interval_ = absl::ToChronoNanoseconds(health.fast_interval);
  fast_timeout_ = absl::ToChronoNanoseconds(health.fast_timeout);
  const Duration ping = health.enabled && health.fast_enabled ? fast_interval_ : Duration::zero();
  ping_interval_.assign(table.slots.size(), ping);
}

void NodeProbes::StartProbe(size_t node, const ProbeSpec& spec, Duration timeout,
                            std::function<void(health::ProbeResult)> done) {
  pool::NodePool* pool = pools_.pool(node);
  if (pool == nullptr || pool->retired()) {
    health::ProbeResult result;
    result.detail = node >= pools_.size() ? "qpoold is stopping" : "not in the node set";
    done(result);
    return;
  }
  auto probe = std::make_unique<HealthProbe>(worker_, *pool, table_->slots[node].name, spec,
                                             timeout, std::move(done));
  HealthProbe* raw = probe.get();
  probes_.emplace(raw, std::move(probe));
  raw->Start();
}

void NodeProbes::OnProbeDone(HealthProbe* probe) {
  auto it = probes_.find(probe);
  if (it == probes_.end()) return;
  if (finished_probes_.empty()) {
    worker_.Post([this] { finished_probes_.clear(); });
  }
  finished_probes_.push_back(std::move(it->second));
  probes_.erase(it);
}

void NodeProbes::Clear() {
  probes_.clear();
  finished_probes_.clear();
}

void NodeProbes::BackOffPings(size_t node) {
  if (node >= ping_interval_.size() || ping_interval_[node] == Duration::zero()) return;
  const Duration ceiling = fast_interval_ * 32;
  const Duration next = std::min(ping_interval_[node] * 2, ceiling);
  if (next != ping_interval_[node]) {
    SPDLOG_WARN("upstream {}: GOAWAY too_many_pings; health PING interval now {}",
                table_->slots[node].name, absl::FormatDuration(absl::FromChrono(next)));
  }
  ping_interval_[node] = next;
}

}  // namespace qpool::server
