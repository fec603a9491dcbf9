// pool::SlotPools: one worker's pools by node slot across node table changes, with fake
// connections and the fake clock: which slots get pools, when they start, retiring a removed
// node's pool and freeing it once drained, a slot handed to another node, options and factory
// updates for the nodes that stay, shutdown, and each worker's share of a bound.
#include "daemon/pool/slot_pools.h"

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "tests/unit/fake_event_loop.h"

namespace qpool::pool {
namespace {

using ::qpool::testing::FakeEventLoop;
using ::qpool::testing::FakeRandom;

// A connection the test drives: Connect() and Close() report what a real one would.
class FakeConnection : public PoolConnection {
 public:
  explicit FakeConnection(PoolConnectionEvents& events) : events_(events) {}
  void Drain() override { drains++; }
  void Abort() override { Finish(absl::CancelledError("aborted")); }
  void Connect() {
    up_ = true;
    events_.OnConnected(this, 100);
  }
  void Close() { Finish(absl::OkStatus()); }
  int drains = 0;

 private:
  // Reports the end once: a connection that never came up failed its connect.
  void Finish(const absl::Status& status) {
    if (std::exchange(done_, true)) return;
    up_ ? events_.OnClosed(this, status) : events_.OnConnectFailed(this, status);
  }

  PoolConnectionEvents& events_;
  bool up_ = false;
  bool done_ = false;
};

// What the fakes made and were told, shared by every slot's factory.
struct Record {
  std::vector<std::shared_ptr<FakeConnection>> connections;
  std::vector<std::string> updates;  // "slot name" per factory Update()
};

class FakeFactory : public SlotConnectionFactory {
 public:
  explicit FakeFactory(Record& record) : record_(record) {}
  std::shared_ptr<PoolConnection> Connect(PoolConnectionEvents& events) override {
    record_.connections.push_back(std::make_shared<FakeConnection>(events));
    return record_.connections.back();
  }
  void Update(const config::NodeSlot& slot) override { record_.updates.push_back(slot.name); }

 private:
  Record& record_;
};

// The gRPC endpoint of each slot; min_connections 1, max_connections `max_connections`.
class FakeParts : public SlotPoolParts {
 public:
  FakeParts(Record& record, const uint32_t& max_connections)
      : record_(record), max_connections_(max_connections) {}
  const config::NodeAddress& EndpointOf(const config::NodeSlot& slot) const override {
    return slot.grpc;
  }
  NodePoolOptions OptionsFor(const config::NodeSlot& slot) const override {
    NodePoolOptions options;
    options.node_name = slot.name;
    options.min_connections = 1;
    options.max_connections = max_connections_;
    return options;
  }
  std::unique_ptr<SlotConnectionFactory> NewFactory(size_t, const config::NodeSlot&) override {
    return std::make_unique<FakeFactory>(record_);
  }
  std::unique_ptr<PoolObserver> NewObserver(size_t) override { return nullptr; }

 private:
  Record& record_;
  const uint32_t& max_connections_;
};

config::NodeSlot Slot(const std::string& host, uint64_t generation, bool active = true) {
  config::NodeSlot slot;
  slot.active = active;
  slot.generation = generation;
  slot.grpc = config::NodeAddress{host, 6334};
  slot.name = slot.grpc.ToString();
  return slot;
}

class SlotPoolsTest : public ::testing::Test {
 protected:
  Record record_;
  uint32_t max_connections_ = 4;
  FakeEventLoop loop_;
  FakeRandom random_;
  PendingBudget budget_{100, 0};
  SlotPools pools_{std::make_unique<FakeParts>(record_, max_connections_), budget_, loop_, random_};
};

TEST_F(SlotPoolsTest, ActiveSlotsWithAnEndpointGetPoolsThatOpenOnStart) {
  config::NodeTable table;
  table.slots = {Slot("a", 1), Slot("b", 2, /*active=*/false), Slot("", 3)};
  pools_.Apply(table);
  ASSERT_EQ(pools_.size(), 3u);
  EXPECT_NE(pools_.pool(0), nullptr);
  EXPECT_EQ(pools_.pool(1), nullptr);  // not in the node set
  EXPECT_EQ(pools_.pool(2), nullptr);  // no endpoint in this protocol
  EXPECT_EQ(pools_.pool(7), nullptr);
  EXPECT_EQ(pools_.endpoint_name(0), "a:6334");
  EXPECT_EQ(pools_.pools(), (std::vector<NodePool*>{pools_.pool(0), nullptr, nullptr}));
  EXPECT_TRUE(record_.connections.empty());  // nothing opens before Start()
  pools_.Start();
  EXPECT_EQ(record_.connections.size(), 1u);  // slot 0's min_connections
}

TEST_F(SlotPoolsTest, RemovedNodesPoolRetiresAndIsFreedOnceGoneWhenItsSlotIsReused) {
  config::NodeTable table;
  table.slots = {Slot("a", 1), Slot("b", 2)};
  pools_.Apply(table);
  pools_.Start();
  ASSERT_EQ(record_.connections.size(), 2u);
  record_.connections[0]->Connect();
  NodePool* old = pools_.pool(0);

  // "a" leaves the node set: its pool retires, and holds the slot while a connection is up.
  table.slots[0].active = false;
  pools_.Apply(table);
  ASSERT_EQ(pools_.pool(0), old);
  EXPECT_TRUE(old->retired());
  EXPECT_FALSE(pools_.pool(1)->retired());
  loop_.Advance(std::chrono::seconds(1));
  EXPECT_EQ(pools_.DrainedSlots(), (std::vector<bool>{false, false}));

  // The slot goes to "c" before the old pool drained: nothing new yet.
  table.slots[0] = Slot("c", 3);
  pools_.Apply(table);
  EXPECT_EQ(pools_.pool(0), old);
  EXPECT_EQ(record_.connections.size(), 2u);

  // Drained: the next Apply frees it and makes c's pool, started at once.
  EXPECT_GE(record_.connections[0]->drains, 1);
  record_.connections[0]->Close();
  EXPECT_EQ(pools_.DrainedSlots(), (std::vector<bool>{true, false}));
  pools_.Apply(table);
  ASSERT_NE(pools_.pool(0), nullptr);
  EXPECT_FALSE(pools_.pool(0)->retired());
  EXPECT_EQ(pools_.endpoint_name(0), "c:6334");
  EXPECT_EQ(record_.connections.size(), 3u);
}

TEST_F(SlotPoolsTest, NodesThatStayTakeNewOptionsAndTheirFactoryFollowsTheSlot) {
  config::NodeTable table;
  table.slots = {Slot("a", 1)};
  pools_.Apply(table);
  NodePool* before = pools_.pool(0);
  EXPECT_EQ(before->options().max_connections, 4u);
  max_connections_ = 2;
  table.slots.push_back(Slot("b", 2));  // a new slot beside it
  pools_.Apply(table);
  EXPECT_EQ(pools_.pool(0), before);
  EXPECT_EQ(before->options().max_connections, 2u);
  EXPECT_EQ(record_.updates, (std::vector<std::string>{"a:6334"}));
  EXPECT_NE(pools_.pool(1), nullptr);
}

TEST_F(SlotPoolsTest, ShutdownFreesEveryPoolAndLaterTablesChangeNothing) {
  config::NodeTable table;
  table.slots = {Slot("a", 1), Slot("b", 2)};
  pools_.Apply(table);
  pools_.Start();
  pools_.Shutdown();
  EXPECT_EQ(pools_.size(), 0u);
  EXPECT_EQ(pools_.pool(0), nullptr);
  EXPECT_TRUE(pools_.DrainedSlots().empty());
  EXPECT_EQ(pools_.endpoint_name(1), "b:6334");
  table.slots.push_back(Slot("c", 3));
  pools_.Apply(table);
  EXPECT_EQ(pools_.pool(2), nullptr);
}

TEST(WorkerShareTest, SplitsABoundOverTheWorkersRemaindersFirst) {
  EXPECT_EQ(WorkerShare(5, 0, 2), 3u);
  EXPECT_EQ(WorkerShare(5, 1, 2), 2u);
  EXPECT_EQ(WorkerShare(1, 1, 2), 0u);
  EXPECT_EQ(WorkerShare(4, 3, 4), 1u);
}

}  // namespace
}  // namespace qpool::pool
