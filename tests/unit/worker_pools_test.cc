// server::WorkerPools: a worker's upstream pools and their bookkeeping, with connections the test
// makes through the owner's callback and the fake clock: this worker's share of the pending
// budget, connect failures reaching the owner, the hook and the readiness mirror, the gauges of
// the slots that have a pool, drained slots after a node left, and which slots a TLS change
// recycles.
#include "daemon/server/worker_pools.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "daemon/config/config.h"
#include "daemon/metrics/scrape.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/tls/context_store.h"
#include "gtest/gtest.h"
#include "tests/unit/fake_event_loop.h"

namespace qpool::server {
namespace {

using ::qpool::testing::FakeEventLoop;
using ::qpool::testing::FakeRandom;

// A connection that stays as the test leaves it: it reports only what the test tells it to.
class TestConnection : public pool::PoolConnection {
 public:
  TestConnection(pool::PoolConnectionEvents& events, size_t slot) : events(events), slot(slot) {}
  void Drain() override { drained = true; }
  void Abort() override {}

  pool::PoolConnectionEvents& events;
  const size_t slot;
  bool drained = false;
};

config::NodeSlot SlotOf(const std::string& host, uint64_t generation, bool active = true) {
  config::NodeSlot slot;
  slot.active = active;
  slot.generation = generation;
  slot.grpc = config::NodeAddress{host, 6334};
  slot.name = host;
  return slot;
}

class WorkerPoolsTest : public ::testing::Test {
 protected:
  WorkerPoolsTest() {
    auto config = std::make_shared<config::Config>();
    config->upstream.min_connections = 1;
    config->upstream.max_connections = 2;
    config->upstream.max_pending = 5;
    config_ = std::move(config);
  }

  // Worker `index` of 2.
  std::unique_ptr<WorkerPools> Make(uint32_t index = 0) {
    return std::make_unique<WorkerPools>(
        index, 2, loop_, random_, metrics_,
        [this](const config::NodeAddress& node, size_t slot, pool::PoolConnectionEvents& events) {
          endpoints_.push_back(node.host);
          connections_.push_back(std::make_shared<TestConnection>(events, slot));
          return connections_.back();
        },
        [this](size_t slot) { failed_slots_.push_back(slot); });
  }

  static std::shared_ptr<const config::NodeTable> Table(std::vector<config::NodeSlot> slots) {
    auto table = std::make_shared<config::NodeTable>();
    table->slots = std::move(slots);
    return table;
  }

  FakeEventLoop loop_;
  FakeRandom random_;
  metrics::WorkerMetrics metrics_{4};
  std::shared_ptr<const config::Config> config_;
  std::vector<std::string> endpoints_;
  std::vector<std::shared_ptr<TestConnection>> connections_;
  std::vector<size_t> failed_slots_;
};

TEST_F(WorkerPoolsTest, ApplyGivesThisWorkerItsShareOfThePendingBudget) {
  auto first = Make(0);
  auto second = Make(1);
  first->Apply(config_, Table({SlotOf("a", 1)}));
  second->Apply(config_, Table({SlotOf("a", 1)}));
  EXPECT_EQ(first->budget().limit, 3u);  // 5 over 2 workers, the remainder to the first
  EXPECT_EQ(second->budget().limit, 2u);
}

TEST_F(WorkerPoolsTest, ConnectsThroughTheOwnerAndReportsConnectFailures) {
  auto pools = Make();
  int hook_calls = 0;
  pools->SetConnectFailureHook([&hook_calls] { hook_calls++; });
  pools->Apply(config_, Table({SlotOf("a", 1), SlotOf("b", 2)}));
  pools->Start();
  ASSERT_EQ(endpoints_, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(metrics_.node(1).UsableHere());

  TestConnection& b = *connections_[1];
  ASSERT_EQ(b.slot, 1u);
  b.events.OnConnectFailed(&b, absl::UnavailableError("refused"));
  EXPECT_EQ(failed_slots_, (std::vector<size_t>{1}));
  EXPECT_EQ(hook_calls, 1);
  // The readiness mirror follows on a later turn of the loop.
  loop_.RunPosted();
  EXPECT_FALSE(metrics_.node(1).UsableHere());
  EXPECT_TRUE(metrics_.node(0).UsableHere());
  pools->Shutdown();
}

TEST_F(WorkerPoolsTest, GaugesShowTheSlotsThatHaveAPool) {
  auto pools = Make();
  pools->Apply(config_, Table({SlotOf("a", 1), SlotOf("b", 2, /*active=*/false)}));
  pools->Start();
  const std::vector<metrics::NodePoolGauges> gauges = pools->PoolGauges();
  ASSERT_EQ(gauges.size(), 2u);
  EXPECT_TRUE(gauges[0].present);
  EXPECT_FALSE(gauges[0].removed);
  EXPECT_EQ(gauges[0].connections.size(), 1u);  // min_connections, connecting
  EXPECT_FALSE(gauges[1].present);
  EXPECT_TRUE(pools->RestPoolGauges().empty());  // REST off
  pools->Shutdown();
}

TEST_F(WorkerPoolsTest, ASlotIsDrainedOnceItsRetiredPoolHoldsNothing) {
  auto pools = Make();
  pools->Apply(config_, Table({SlotOf("a", 1), SlotOf("b", 2)}));
  pools->Start();
  EXPECT_EQ(pools->DrainedSlots(), (std::vector<bool>{false, false}));
  // Node b leaves: its pool retires, and is drained once its connection is gone.
  pools->Apply(config_, Table({SlotOf("a", 1), SlotOf("b", 2, /*active=*/false)}));
  EXPECT_EQ(pools->DrainedSlots(), (std::vector<bool>{false, false}));
  TestConnection& b = *connections_[1];
  b.events.OnConnectFailed(&b, absl::UnavailableError("gone"));
  EXPECT_EQ(pools->DrainedSlots(), (std::vector<bool>{false, true}));
  pools->Shutdown();
}

TEST_F(WorkerPoolsTest, TlsChangeRecyclesTheSlotsOfThoseNodesInThatStore) {
  std::shared_ptr<const tls::ContextStore> store =
      tls::ContextStore::Create(config_->upstream, "h2").value();
  std::shared_ptr<const tls::ContextStore> other =
      tls::ContextStore::Create(config_->upstream, "h2").value();
  // Slots 0 and 2 are addresses of upstream.nodes[0] (DNS discovery); slot 1 is node 1; slot 3
  // takes node 0 from another store.
  std::vector<config::NodeSlot> slots = {SlotOf("a1", 1), SlotOf("b", 2), SlotOf("a2", 3),
                                         SlotOf("c", 4)};
  const size_t tls_index[] = {0, 1, 0, 0};
  for (size_t s = 0; s < slots.size(); ++s) {
    slots[s].tls = s == 3 ? other : store;
    slots[s].tls_index = tls_index[s];
  }
  const std::shared_ptr<const config::NodeTable> table = Table(slots);
  EXPECT_EQ(SlotsUsingTls(*table, store.get(), {0}, /*rest=*/false), (std::vector<size_t>{0, 2}));
  EXPECT_EQ(SlotsUsingTls(*table, store.get(), {0}, /*rest=*/true), (std::vector<size_t>{}));
  EXPECT_EQ(SlotsUsingTls(*table, other.get(), {0, 1}, /*rest=*/false), (std::vector<size_t>{3}));

  auto pools = Make();
  pools->Apply(config_, table);
  pools->Start();
  ASSERT_EQ(connections_.size(), 4u);
  for (auto& conn : connections_) conn->events.OnConnected(conn.get(), 100);
  pools->RecycleTlsNodes(store.get(), {0}, /*rest=*/false);
  loop_.Advance(kTlsRecycleSpread);
  EXPECT_TRUE(connections_[0]->drained);
  EXPECT_FALSE(connections_[1]->drained);
  EXPECT_TRUE(connections_[2]->drained);
  EXPECT_FALSE(connections_[3]->drained);
  pools->Shutdown();
}

}  // namespace
}  // namespace qpool::server
