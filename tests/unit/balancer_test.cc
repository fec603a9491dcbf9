// pool::Balancer, where a node is picked, with fake connections, the fake clock and a sweeping
// random source, no sockets: picks follow the health verdicts and each protocol's own pools,
// inactive slots are never picked, PickOtherThan finds a real alternative or none, passive
// ejection after failures in a row (counted, undone when the ejection ends, never with one node),
// and panic mode counted when no node is left.
#include "daemon/pool/balancer.h"

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/metrics/health_metrics.h"
#include "daemon/metrics/worker_metrics.h"
#include "gtest/gtest.h"
#include "tests/unit/fake_event_loop.h"

namespace qpool::pool {
namespace {

using namespace std::chrono_literals;
using ::qpool::testing::FakeEventLoop;
using ::qpool::testing::SweepRandom;

// No connection is ever made (min_connections 0): a pool that never connected counts as up.
class NoConnections : public SlotConnectionFactory {
 public:
  std::shared_ptr<PoolConnection> Connect(PoolConnectionEvents&) override { return nullptr; }
};

// One protocol's endpoint of each slot (NodeSlot::grpc or ::rest).
class Parts : public SlotPoolParts {
 public:
  explicit Parts(Protocol protocol) : protocol_(protocol) {}
  const config::NodeAddress& EndpointOf(const config::NodeSlot& slot) const override {
    return protocol_ == Protocol::kGrpc ? slot.grpc : slot.rest;
  }
  NodePoolOptions OptionsFor(const config::NodeSlot& slot) const override {
    NodePoolOptions options;
    options.node_name = slot.name;
    options.min_connections = 0;
    return options;
  }
  std::unique_ptr<SlotConnectionFactory> NewFactory(size_t, const config::NodeSlot&) override {
    return std::make_unique<NoConnections>();
  }
  std::unique_ptr<PoolObserver> NewObserver(size_t) override { return nullptr; }

 private:
  const Protocol protocol_;
};

config::NodeSlot Slot(const std::string& host, bool rest = true, bool active = true) {
  config::NodeSlot slot;
  slot.active = active;
  slot.generation = 1;
  slot.grpc = config::NodeAddress{host, 6334};
  if (rest) slot.rest = config::NodeAddress{host, 6333};
  slot.name = slot.grpc.ToString();
  return slot;
}

class BalancerTest : public ::testing::Test {
 protected:
  // `slots` become the node table; health: 2 failures in a row eject for 10 s, no jitter.
  void Build(std::vector<config::NodeSlot> slots) {
    table_.slots = std::move(slots);
    health_config_.consecutive_failures = 2;
    health_config_.base_ejection_time = absl::Seconds(10);
    health_config_.jitter_percent = 0;
    grpc_.Apply(table_);
    rest_.Apply(table_);
    balancer_.SetPools(Protocol::kGrpc, &grpc_);
    balancer_.SetPools(Protocol::kRest, &rest_);
    balancer_.Rebuild(table_, health_config_);
  }
  // How often each slot is picked in `n` picks.
  std::map<size_t, int> Picks(Protocol protocol, int n = 200) {
    std::map<size_t, int> picks;
    for (int i = 0; i < n; ++i) picks[balancer_.Pick(protocol)]++;
    return picks;
  }

  FakeEventLoop loop_;
  SweepRandom random_;
  PendingBudget budget_{100, 0};
  metrics::WorkerMetrics metrics_{4, 4};
  metrics::HealthMetrics health_{4};
  config::NodeTable table_;
  config::HealthConfig health_config_;
  SlotPools grpc_{std::make_unique<Parts>(Protocol::kGrpc), budget_, loop_, random_};
  SlotPools rest_{std::make_unique<Parts>(Protocol::kRest), budget_, loop_, random_};
  Balancer balancer_{loop_, random_, metrics_, &health_};
};

TEST_F(BalancerTest, PicksEveryHealthyActiveSlotAndNeverAnUnhealthyOne) {
  Build({Slot("a"), Slot("b"), Slot("c")});
  EXPECT_EQ(balancer_.active_nodes(), 3u);
  std::map<size_t, int> picks = Picks(Protocol::kGrpc);
  EXPECT_GT(picks[0], 20);
  EXPECT_GT(picks[1], 20);
  EXPECT_GT(picks[2], 20);
  health_.SetHealthy(1, false);
  for (Protocol protocol : {Protocol::kGrpc, Protocol::kRest}) {
    picks = Picks(protocol);
    EXPECT_EQ(picks[1], 0);
    EXPECT_GT(picks[0], 20);
    EXPECT_GT(picks[2], 20);
  }
  EXPECT_EQ(metrics_.panic_routes(), 0u);
  EXPECT_EQ(balancer_.pool(Protocol::kGrpc, 2), grpc_.pool(2));
  EXPECT_EQ(balancer_.pool(Protocol::kRest, 2), rest_.pool(2));
}

TEST_F(BalancerTest, EachProtocolPicksByItsOwnPools) {
  // Slot 0 has no REST endpoint: a REST pick prefers slot 1, which has a pool there; a gRPC pick
  // takes both.
  Build({Slot("a", /*rest=*/false), Slot("b")});
  ASSERT_EQ(rest_.pool(0), nullptr);
  std::map<size_t, int> picks = Picks(Protocol::kRest);
  EXPECT_EQ(picks[0], 0);
  EXPECT_EQ(picks[1], 200);
  picks = Picks(Protocol::kGrpc);
  EXPECT_GT(picks[0], 20);
  EXPECT_GT(picks[1], 20);
  EXPECT_EQ(balancer_.PickOtherThan(Protocol::kRest, 1), std::nullopt);
  EXPECT_EQ(balancer_.PickOtherThan(Protocol::kGrpc, 1), std::optional<size_t>(0));
}

TEST_F(BalancerTest, InactiveSlotsAreNeverPickedAndHaveEveryActiveOneAsAnAlternative) {
  Build({Slot("a"), Slot("b", true, /*active=*/false), Slot("c")});
  EXPECT_EQ(balancer_.active_nodes(), 2u);
  std::map<size_t, int> picks = Picks(Protocol::kGrpc);
  EXPECT_EQ(picks[1], 0);
  EXPECT_GT(picks[0], 20);
  EXPECT_GT(picks[2], 20);
  EXPECT_TRUE(balancer_.PickOtherThan(Protocol::kGrpc, 1).has_value());
  EXPECT_EQ(balancer_.PickOtherThan(Protocol::kGrpc, 0), std::optional<size_t>(2));
  EXPECT_EQ(balancer_.PickOtherThan(Protocol::kGrpc, 7), std::nullopt);  // no such slot
  balancer_.OnAttemptEnd(1, /*failed=*/true);  // removed meanwhile: ignored
  balancer_.OnAttemptEnd(1, /*failed=*/true);
  EXPECT_FALSE(balancer_.IsEjected(1));
}

TEST_F(BalancerTest, FailuresInARowEjectANodeUntilItsEjectionEnds) {
  Build({Slot("a"), Slot("b"), Slot("c"), Slot("d")});
  balancer_.OnAttemptEnd(2, /*failed=*/true);
  balancer_.OnAttemptEnd(2, /*failed=*/false);  // a success breaks the run
  balancer_.OnAttemptEnd(2, /*failed=*/true);
  EXPECT_FALSE(balancer_.IsEjected(2));
  balancer_.OnAttemptEnd(2, /*failed=*/true);
  EXPECT_TRUE(balancer_.IsEjected(2));
  EXPECT_EQ(metrics_.node(2).ejections.Get(), 1u);
  for (Protocol protocol : {Protocol::kGrpc, Protocol::kRest}) {
    EXPECT_EQ(Picks(protocol)[2], 0);
    for (size_t except : {0u, 1u, 3u}) {
      const std::optional<size_t> other = balancer_.PickOtherThan(protocol, except);
      ASSERT_TRUE(other.has_value());
      EXPECT_NE(*other, 2u);
      EXPECT_NE(*other, except);
    }
  }
  loop_.Advance(11s);
  EXPECT_FALSE(balancer_.IsEjected(2));
  EXPECT_GT(Picks(Protocol::kGrpc)[2], 20);
}

TEST_F(BalancerTest, OneActiveNodeIsNeverEjected) {
  Build({Slot("a"), Slot("b", true, /*active=*/false)});
  for (int i = 0; i < 10; ++i) balancer_.OnAttemptEnd(0, /*failed=*/true);
  EXPECT_FALSE(balancer_.IsEjected(0));
  EXPECT_EQ(metrics_.node(0).ejections.Get(), 0u);
  EXPECT_EQ(balancer_.Pick(Protocol::kGrpc), 0u);
  EXPECT_EQ(balancer_.PickOtherThan(Protocol::kGrpc, 0), std::nullopt);
}

TEST_F(BalancerTest, PassiveHealthOffNeverEjects) {
  health_config_.passive_enabled = false;
  Build({Slot("a"), Slot("b")});
  for (int i = 0; i < 10; ++i) balancer_.OnAttemptEnd(0, /*failed=*/true);
  EXPECT_FALSE(balancer_.IsEjected(0));
}

TEST_F(BalancerTest, PanicModeRoutesToAllAndIsCounted) {
  Build({Slot("a"), Slot("b")});
  health_.SetHealthy(0, false);
  health_.SetHealthy(1, false);
  std::map<size_t, int> picks = Picks(Protocol::kGrpc, 100);
  EXPECT_GT(picks[0], 0);
  EXPECT_GT(picks[1], 0);
  EXPECT_EQ(metrics_.panic_routes(), 100u);
  EXPECT_EQ(balancer_.PickOtherThan(Protocol::kGrpc, 0), std::nullopt);  // no panic there
}

TEST_F(BalancerTest, RebuildFollowsTheNodeSetAndForgetsEjections) {
  Build({Slot("a"), Slot("b"), Slot("c")});
  balancer_.OnAttemptEnd(0, /*failed=*/true);
  balancer_.OnAttemptEnd(0, /*failed=*/true);
  ASSERT_TRUE(balancer_.IsEjected(0));
  table_.slots[2].active = false;
  grpc_.Apply(table_);
  rest_.Apply(table_);
  balancer_.Rebuild(table_, health_config_);
  EXPECT_FALSE(balancer_.IsEjected(0));
  EXPECT_EQ(balancer_.active_nodes(), 2u);
  EXPECT_EQ(Picks(Protocol::kGrpc)[2], 0);
}

}  // namespace
}  // namespace qpool::pool
