// The active health schedule and the router, with a fake clock and pinned randomness: probe
// intervals within the jitter bounds, timeouts, thresholds flipping a node's health and back,
// late results, and NodeRouter's choice excluding unhealthy and ejected nodes (panic mode when
// none is left).
#include "daemon/health/health_scheduler.h"

#include <algorithm>
#include <map>
#include <optional>
#include <vector>

#include "daemon/health/health.h"
#include "gtest/gtest.h"
#include "tests/unit/fake_event_loop.h"

namespace qpool::health {
namespace {

using namespace std::chrono_literals;
using qpool::testing::FakeEventLoop;
using qpool::testing::FakeRandom;
using qpool::testing::SweepRandom;

// Records each probe; the test answers them (or not).
class FakeRunner : public ProbeRunner {
 public:
  struct Probe {
    size_t node;
    Tier tier;
    MonoTime at;
    std::function<void(ProbeResult)> done;
  };
  explicit FakeRunner(FakeEventLoop& loop) : loop_(loop) {}
  void Run(size_t node, Tier tier, Duration, std::function<void(ProbeResult)> done) override {
    probes.push_back({node, tier, loop_.Now(), std::move(done)});
    if (auto_answer) Answer(probes.size() - 1, *auto_answer);
  }
  void Answer(size_t i, bool success) {
    ProbeResult result;
    result.success = success;
    result.version = success ? "1.19.0" : "";
    auto done = std::move(probes[i].done);
    done(result);
  }
  std::vector<Probe> probes;
  std::optional<bool> auto_answer;

 private:
  FakeEventLoop& loop_;
};

class RecordingSink : public HealthSink {
 public:
  void OnCheck(size_t node, Tier tier, const ProbeResult& result, Duration took) override {
    checks.push_back({node, tier, result.success, took});
  }
  void OnHealthChanged(size_t node, bool healthy) override { changes.push_back({node, healthy}); }
  struct Check {
    size_t node;
    Tier tier;
    bool success;
    Duration took;
  };
  std::vector<Check> checks;
  std::vector<std::pair<size_t, bool>> changes;
};

SchedulerOptions MediumOnly(size_t nodes) {
  SchedulerOptions options;
  options.nodes = nodes;
  options.medium = {true, 200ms, 100ms};
  options.deep.enabled = false;
  options.jitter = 0.1;
  options.unhealthy_threshold = 3;
  options.healthy_threshold = 2;
  return options;
}

TEST(HealthSchedulerTest, IntervalsStayWithinTheJitterBounds) {
  FakeEventLoop loop;
  SweepRandom random;
  FakeRunner runner(loop);
  runner.auto_answer = true;
  RecordingSink sink;
  HealthScheduler scheduler(MediumOnly(1), loop, random, runner, sink);
  scheduler.Start();
  loop.Advance(60s);
  ASSERT_GT(runner.probes.size(), 250u);
  EXPECT_LT(runner.probes.front().at - MonoTime{std::chrono::seconds(1000)}, 200ms);
  Duration shortest = Duration::max();
  Duration longest = Duration::zero();
  for (size_t i = 1; i < runner.probes.size(); ++i) {
    const Duration gap = runner.probes[i].at - runner.probes[i - 1].at;
    shortest = std::min(shortest, gap);
    longest = std::max(longest, gap);
  }
  EXPECT_GE(shortest, 180ms);
  EXPECT_LE(longest, 220ms);
  EXPECT_LT(shortest, 185ms) << "jitter should spread the intervals";
  EXPECT_GT(longest, 215ms) << "jitter should spread the intervals";
}

TEST(HealthSchedulerTest, ZeroJitterKeepsTheExactInterval) {
  FakeEventLoop loop;
  FakeRandom random(0.25);
  FakeRunner runner(loop);
  runner.auto_answer = true;
  RecordingSink sink;
  SchedulerOptions options = MediumOnly(1);
  options.jitter = 0;
  HealthScheduler scheduler(options, loop, random, runner, sink);
  scheduler.Start();
  loop.Advance(2s);
  ASSERT_GE(runner.probes.size(), 9u);
  for (size_t i = 1; i < runner.probes.size(); ++i) {
    EXPECT_EQ(runner.probes[i].at - runner.probes[i - 1].at, 200ms);
  }
}

TEST(HealthSchedulerTest, UnansweredProbesMarkTheNodeUnhealthyWithinThresholdTimesInterval) {
  FakeEventLoop loop;
  FakeRandom random(0.5);  // no jitter at 0.5; first probe at 100ms
  FakeRunner runner(loop);
  RecordingSink sink;
  HealthScheduler scheduler(MediumOnly(2), loop, random, runner, sink);
  scheduler.Start();
  // Node 1 answers; node 0 hangs (its probes are never answered).
  for (int step = 0; step < 100 && sink.changes.empty(); ++step) {
    loop.Advance(10ms);
    for (size_t i = 0; i < runner.probes.size(); ++i) {
      if (runner.probes[i].node == 1 && runner.probes[i].done) runner.Answer(i, true);
    }
  }
  ASSERT_EQ(sink.changes.size(), 1u);
  EXPECT_EQ(sink.changes[0], std::make_pair(size_t{0}, false));
  EXPECT_FALSE(scheduler.healthy(0));
  EXPECT_TRUE(scheduler.healthy(1));
  // First probe at 100ms, then 300ms, 500ms; the third times out at 600ms: within 3 x 200ms +
  // 100ms of the start.
  EXPECT_LE(loop.Now() - MonoTime{std::chrono::seconds(1000)}, 3 * 200ms + 100ms + 10ms);
  size_t timeouts = 0;
  for (const auto& check : sink.checks) {
    if (check.node == 0) {
      EXPECT_FALSE(check.success);
      EXPECT_EQ(check.took, 100ms);
      timeouts++;
    }
  }
  EXPECT_EQ(timeouts, 3u);
}

TEST(HealthSchedulerTest, ComesBackAfterHealthyThresholdSuccesses) {
  FakeEventLoop loop;
  FakeRandom random(0.5);
  FakeRunner runner(loop);
  runner.auto_answer = false;
  RecordingSink sink;
  HealthScheduler scheduler(MediumOnly(1), loop, random, runner, sink);
  scheduler.Start();
  loop.Advance(600ms);  // probes at 100, 300, 500 fail
  ASSERT_FALSE(scheduler.healthy(0));
  runner.auto_answer = true;
  loop.Advance(200ms);  // 700: one success
  EXPECT_FALSE(scheduler.healthy(0));
  loop.Advance(200ms);  // 900: two
  EXPECT_TRUE(scheduler.healthy(0));
  ASSERT_EQ(sink.changes.size(), 2u);
  EXPECT_EQ(sink.changes[1], std::make_pair(size_t{0}, true));
}

TEST(HealthSchedulerTest, ALateResultAfterItsTimeoutIsDropped) {
  FakeEventLoop loop;
  FakeRandom random(0.5);
  FakeRunner runner(loop);
  RecordingSink sink;
  HealthScheduler scheduler(MediumOnly(1), loop, random, runner, sink);
  scheduler.Start();
  loop.Advance(250ms);  // probe at 100ms timed out at 200ms
  ASSERT_EQ(runner.probes.size(), 1u);
  ASSERT_EQ(sink.checks.size(), 1u);
  runner.Answer(0, true);  // too late
  EXPECT_EQ(sink.checks.size(), 1u);
  EXPECT_FALSE(sink.checks[0].success);
}

TEST(HealthSchedulerTest, DeepTierRunsOnItsOwnIntervalAndFeedsTheSameThreshold) {
  FakeEventLoop loop;
  FakeRandom random(0.5);
  FakeRunner runner(loop);
  runner.auto_answer = false;
  RecordingSink sink;
  SchedulerOptions options = MediumOnly(1);
  options.medium.enabled = false;
  options.deep = {true, 1s, 500ms};
  options.unhealthy_threshold = 2;
  HealthScheduler scheduler(options, loop, random, runner, sink);
  scheduler.Start();
  loop.Advance(2100ms);  // deep probes at 500ms and 1500ms, both time out
  ASSERT_EQ(runner.probes.size(), 2u);
  EXPECT_EQ(runner.probes[0].tier, Tier::kDeep);
  EXPECT_FALSE(scheduler.healthy(0));
}

TEST(HealthSchedulerTest, APassingMediumTierDoesNotMaskAFailingDeepTier) {
  FakeEventLoop loop;
  FakeRandom random(0.5);
  FakeRunner runner(loop);
  RecordingSink sink;
  SchedulerOptions options = MediumOnly(1);
  options.deep = {true, 200ms, 100ms};
  HealthScheduler scheduler(options, loop, random, runner, sink);
  scheduler.Start();
  for (int step = 0; step < 100; ++step) {
    loop.Advance(10ms);
    for (size_t i = 0; i < runner.probes.size(); ++i) {
      if (runner.probes[i].done) runner.Answer(i, runner.probes[i].tier == Tier::kMedium);
    }
  }
  EXPECT_FALSE(scheduler.healthy(0));
  ASSERT_EQ(sink.changes.size(), 1u);
}

TEST(HealthSchedulerTest, StopCancelsEverything) {
  FakeEventLoop loop;
  FakeRandom random(0.5);
  FakeRunner runner(loop);
  RecordingSink sink;
  HealthScheduler scheduler(MediumOnly(1), loop, random, runner, sink);
  scheduler.Start();
  loop.Advance(150ms);
  ASSERT_EQ(runner.probes.size(), 1u);
  scheduler.Stop();
  runner.Answer(0, true);
  loop.Advance(5s);
  EXPECT_EQ(runner.probes.size(), 1u);
  EXPECT_TRUE(sink.checks.empty());
  EXPECT_EQ(loop.NextTimerIn(), Duration::max());
}

// --- NodeRouter: the Balancer's choice --------------------------------------------

OutlierOptions TwoFailures() {
  OutlierOptions options;
  options.consecutive_failures = 2;
  options.base_ejection_time = 10s;
  options.max_ejection_percent = 50;
  options.jitter = 0;
  return options;
}

void AllLive(NodeRouter& router) {
  for (size_t i = 0; i < router.size(); ++i) router.node(i) = {true, true, true, 0};
}

TEST(NodeRouterTest, NeverPicksAnUnhealthyNode) {
  SweepRandom random;
  NodeRouter router(3, TwoFailures(), true, random);
  AllLive(router);
  router.node(1).healthy = false;
  std::map<size_t, int> picks;
  for (int i = 0; i < 300; ++i) {
    bool panic = true;
    picks[router.Pick(MonoTime{}, &panic)]++;
    EXPECT_FALSE(panic);
  }
  EXPECT_EQ(picks[1], 0);
  EXPECT_GT(picks[0], 50);
  EXPECT_GT(picks[2], 50);
}

TEST(NodeRouterTest, NeverPicksAnEjectedNodeUntilItsEjectionEnds) {
  SweepRandom random;
  NodeRouter router(2, TwoFailures(), true, random);
  AllLive(router);
  const MonoTime t0{std::chrono::seconds(100)};
  EXPECT_FALSE(router.OnAttemptEnd(0, true, t0));
  EXPECT_TRUE(router.OnAttemptEnd(0, true, t0));
  for (int i = 0; i < 50; ++i) {
    bool panic = true;
    EXPECT_EQ(router.Pick(t0 + 9s, &panic), 1u);
    EXPECT_FALSE(panic);
  }
  std::map<size_t, int> picks;
  for (int i = 0; i < 100; ++i) {
    bool panic;
    picks[router.Pick(t0 + 11s, &panic)]++;
  }
  EXPECT_GT(picks[0], 0);
}

// A hedge or a retry wants a real alternative: the least loaded other node that is healthy, not
// ejected and connected, or none at all (no panic fallback).
TEST(NodeRouterTest, PickOtherThanTakesTheLeastLoadedEligibleOtherNodeOrNone) {
  SweepRandom random;
  NodeRouter router(4, TwoFailures(), true, random);
  AllLive(router);
  router.node(1).load = 5;
  router.node(2).load = 2;
  router.node(3).load = 9;
  const MonoTime t0{std::chrono::seconds(100)};
  EXPECT_EQ(router.PickOtherThan(0, t0), std::optional<size_t>(2));
  EXPECT_EQ(router.PickOtherThan(2, t0), std::optional<size_t>(0));  // load 0
  router.node(0).healthy = false;
  EXPECT_EQ(router.PickOtherThan(2, t0), std::optional<size_t>(1));
  router.node(1).live = false;
  EXPECT_EQ(router.PickOtherThan(2, t0), std::optional<size_t>(3));
  router.OnAttemptEnd(3, true, t0);
  router.OnAttemptEnd(3, true, t0);  // ejected
  EXPECT_EQ(router.PickOtherThan(2, t0 + 1s), std::nullopt);
}

TEST(NodeRouterTest, PanicModeRoutesToAllWhenNoNodeIsLeft) {
  SweepRandom random;
  NodeRouter router(2, TwoFailures(), true, random);
  AllLive(router);
  router.node(0).healthy = false;
  router.node(1).healthy = false;
  std::map<size_t, int> picks;
  for (int i = 0; i < 100; ++i) {
    bool panic = false;
    picks[router.Pick(MonoTime{}, &panic)]++;
    EXPECT_TRUE(panic);
  }
  EXPECT_GT(picks[0], 0);
  EXPECT_GT(picks[1], 0);
}

TEST(NodeRouterTest, PrefersTheLessLoadedOfTwo) {
  SweepRandom random;
  NodeRouter router(2, TwoFailures(), true, random);
  AllLive(router);
  router.node(0).load = 10;
  router.node(1).load = 1;
  for (int i = 0; i < 20; ++i) {
    bool panic;
    EXPECT_EQ(router.Pick(MonoTime{}, &panic), 1u);
  }
}

TEST(NodeRouterTest, PrefersANodeWithAConnectionUpThenOneThatMayConnect) {
  SweepRandom random;
  NodeRouter router(3, TwoFailures(), true, random);
  router.node(0) = {true, false, false, 0};  // in connect backoff
  router.node(1) = {true, false, true, 0};   // may connect
  router.node(2) = {true, true, true, 50};   // up, busy
  bool panic;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(router.Pick(MonoTime{}, &panic), 2u);
  router.node(2).live = false;
  router.node(2).usable = false;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(router.Pick(MonoTime{}, &panic), 1u);
}

TEST(NodeRouterTest, PassiveOffNeverEjects) {
  SweepRandom random;
  NodeRouter router(2, TwoFailures(), false, random);
  AllLive(router);
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(router.OnAttemptEnd(0, true, MonoTime{}));
  EXPECT_FALSE(router.IsEjected(0, MonoTime{}));
}

TEST(NodeRouterTest, MaxEjectionPercentKeepsHalfTheNodesIn) {
  SweepRandom random;
  NodeRouter router(2, TwoFailures(), true, random);
  AllLive(router);
  const MonoTime t0{std::chrono::seconds(100)};
  router.OnAttemptEnd(0, true, t0);
  ASSERT_TRUE(router.OnAttemptEnd(0, true, t0));
  router.OnAttemptEnd(1, true, t0);
  EXPECT_FALSE(router.OnAttemptEnd(1, true, t0)) << "50% of 2 nodes: only one may be out";
  bool panic;
  EXPECT_EQ(router.Pick(t0 + 1s, &panic), 1u);
  EXPECT_FALSE(panic);
}

}  // namespace
}  // namespace qpool::health
