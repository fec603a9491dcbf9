#include "daemon/pool/slot_pools.h"

#include <utility>

#include "absl/time/time.h"

namespace qpool::pool {

uint32_t WorkerShare(uint32_t total, uint32_t index, uint32_t count) {
  return total / count + (index < total % count ? 1 : 0);
}

NodePoolOptions UpstreamPoolOptions(const config::UpstreamConfig& upstream,
                                    const config::NodeAddress& endpoint) {
  NodePoolOptions options;
  options.node_name = endpoint.ToString();
  options.acquire_timeout = absl::ToChronoNanoseconds(upstream.acquire_timeout);
  options.connect_backoff_base = absl::ToChronoNanoseconds(upstream.connect_backoff_base);
  options.connect_backoff_max = absl::ToChronoNanoseconds(upstream.connect_backoff_max);
  options.max_connection_age = absl::ToChronoNanoseconds(upstream.max_connection_age);
  options.max_requests_per_connection = upstream.max_requests_per_connection;
  return options;
}

SlotPools::SlotPools(std::unique_ptr<SlotPoolParts> parts, PendingBudget& budget, EventLoop& loop,
                     Random& random)
    : parts_(std::move(parts)), budget_(budget), loop_(loop), random_(random) {}

SlotPools::~SlotPools() = default;

void SlotPools::Start() {
  started_ = true;
  for (NodePool* pool : pools_) {
    if (pool != nullptr) pool->Start();
  }
}

void SlotPools::Apply(const config::NodeTable& table) {
  if (shut_down_) return;
  const size_t count = table.slots.size();
  if (slots_.size() < count) {
    slots_.resize(count);
    pools_.resize(count, nullptr);
  }
  for (size_t s = 0; s < count; ++s) {
    const config::NodeSlot& node = table.slots[s];
    NodePool* pool = pools_[s];
    const bool same_node = slots_[s].generation == node.generation;
    if (pool != nullptr && (!node.active || !same_node)) {
      if (!same_node && pool->gone()) {
        Free(s);  // the slot went to another node after this pool drained
      } else {
        pool->Retire();
      }
    } else if (pool != nullptr) {
      pool->UpdateOptions(parts_->OptionsFor(node));
      slots_[s].factory->Update(node);
    }
    if (node.active && !same_node && pools_[s] == nullptr) Create(s, node);
  }
}

void SlotPools::Create(size_t index, const config::NodeSlot& node) {
  Slot& slot = slots_[index];
  slot.generation = node.generation;
  const config::NodeAddress& endpoint = parts_->EndpointOf(node);
  if (endpoint.host.empty()) return;  // no endpoint in this protocol (REST-only, say)
  slot.endpoint_name = endpoint.ToString();
  slot.factory = parts_->NewFactory(index, node);
  slot.observer = parts_->NewObserver(index);
  slot.pool = std::make_unique<NodePool>(parts_->OptionsFor(node), budget_, *slot.factory, loop_,
                                         random_, slot.observer.get());
  pools_[index] = slot.pool.get();
  if (started_) slot.pool->Start();
}

void SlotPools::Free(size_t index) {
  Slot& slot = slots_[index];
  pools_[index] = nullptr;
  slot.pool.reset();
  slot.factory.reset();
  slot.observer.reset();
}

void SlotPools::Shutdown() {
  shut_down_ = true;
  for (NodePool* pool : pools_) {
    if (pool != nullptr) pool->Shutdown();
  }
  for (size_t s = 0; s < slots_.size(); ++s) Free(s);  // aborts what is still open
  pools_.clear();
}

std::vector<bool> SlotPools::DrainedSlots() const {
  std::vector<bool> drained(pools_.size(), true);
  for (size_t i = 0; i < pools_.size(); ++i) {
    if (pools_[i] != nullptr && !pools_[i]->gone()) drained[i] = false;
  }
  return drained;
}

void SlotPools::RecycleAll(size_t index, Duration spread) {
  if (NodePool* p = pool(index)) p->RecycleAll(spread);
}

}  // namespace qpool::pool
