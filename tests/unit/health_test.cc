// Health decisions with a fake clock and pinned randomness: probe thresholds, passive ejection
// (backoff, cap, jitter, max ejection percent, panic mode), power of two choices, jitter bounds.
#include "daemon/health/health.h"

#include <map>

#include "gtest/gtest.h"
#include "tests/unit/fake_event_loop.h"

namespace qpool::health {
namespace {

using namespace std::chrono_literals;

TEST(ProbeTrackerTest, TurnsUnhealthyAfterThresholdFailuresInARow) {
  ProbeTracker tracker(3, 2);
  EXPECT_FALSE(tracker.OnProbeResult(false));
  EXPECT_FALSE(tracker.OnProbeResult(false));
  EXPECT_TRUE(tracker.healthy());
  EXPECT_TRUE(tracker.OnProbeResult(false));
  EXPECT_FALSE(tracker.healthy());
}

TEST(ProbeTrackerTest, ASuccessResetsTheFailureCount) {
  ProbeTracker tracker(3, 2);
  tracker.OnProbeResult(false);
  tracker.OnProbeResult(false);
  tracker.OnProbeResult(true);
  tracker.OnProbeResult(false);
  tracker.OnProbeResult(false);
  EXPECT_TRUE(tracker.healthy());
}

TEST(ProbeTrackerTest, ComesBackAfterHealthyThresholdSuccessesInARow) {
  ProbeTracker tracker(1, 2);
  ASSERT_TRUE(tracker.OnProbeResult(false));
  EXPECT_FALSE(tracker.OnProbeResult(true));
  EXPECT_FALSE(tracker.healthy());
  EXPECT_TRUE(tracker.OnProbeResult(true));
  EXPECT_TRUE(tracker.healthy());
}

class OutlierDetectorTest : public ::testing::Test {
 protected:
  OutlierDetector Make(size_t nodes, uint32_t max_percent = 50) {
    OutlierOptions options;
    options.max_ejection_percent = max_percent;
    return OutlierDetector(nodes, options, random_);
  }
  void FailTimes(OutlierDetector& detector, size_t node, int times) {
    for (int i = 0; i < times; ++i) detector.OnFailure(node, now_);
  }
  testing::FakeRandom random_{0.5};  // no jitter
  MonoTime now_{std::chrono::seconds(1000)};
};

TEST_F(OutlierDetectorTest, EjectsAfterConsecutiveFailuresForTheBaseTime) {
  OutlierDetector detector = Make(2);
  FailTimes(detector, 0, 4);
  EXPECT_FALSE(detector.IsEjected(0, now_));
  EXPECT_TRUE(detector.OnFailure(0, now_));
  EXPECT_TRUE(detector.IsEjected(0, now_ + 9999ms));
  EXPECT_FALSE(detector.IsEjected(0, now_ + 10s));
}

TEST_F(OutlierDetectorTest, ASuccessResetsTheCount) {
  OutlierDetector detector = Make(2);
  FailTimes(detector, 0, 4);
  detector.OnSuccess(0);
  FailTimes(detector, 0, 4);
  EXPECT_FALSE(detector.IsEjected(0, now_));
}

TEST_F(OutlierDetectorTest, EjectionTimeGrowsWithEachEjectionUpToTheMax) {
  OutlierDetector detector = Make(2);
  for (int n = 1; n <= 40; ++n) {
    FailTimes(detector, 0, 5);
    ASSERT_TRUE(detector.IsEjected(0, now_)) << n;
    const Duration expected = std::min<Duration>(10s * n, 300s);
    EXPECT_EQ(detector.EjectedUntil(0) - now_, expected) << n;
    now_ = detector.EjectedUntil(0);  // the ejection ends
  }
}

TEST_F(OutlierDetectorTest, EjectionTimeIsJitteredByTenPercent) {
  OutlierDetector detector = Make(2);
  random_.set(0.0);
  FailTimes(detector, 0, 5);
  EXPECT_EQ(detector.EjectedUntil(0) - now_, Duration(9s));
  now_ = detector.EjectedUntil(0);
  random_.set(0.999999);
  FailTimes(detector, 0, 5);
  EXPECT_NEAR(std::chrono::duration<double>(detector.EjectedUntil(0) - now_).count(), 22.0, 0.001);
}

TEST_F(OutlierDetectorTest, MaxEjectionPercentKeepsNodesIn) {
  OutlierDetector detector = Make(4, 50);  // at most 2 of 4 out
  for (size_t node = 0; node < 4; ++node) FailTimes(detector, node, 5);
  int ejected = 0;
  for (size_t node = 0; node < 4; ++node) ejected += detector.IsEjected(node, now_) ? 1 : 0;
  EXPECT_EQ(ejected, 2);
}

TEST_F(OutlierDetectorTest, AtLeastOneNodeMayBeEjectedWhateverThePercent) {
  OutlierDetector detector = Make(2, 10);  // 10% of 2 rounds to 0
  FailTimes(detector, 0, 5);
  EXPECT_TRUE(detector.IsEjected(0, now_));
  FailTimes(detector, 1, 5);
  EXPECT_FALSE(detector.IsEjected(1, now_));
}

TEST_F(OutlierDetectorTest, EligibleSkipsEjectedAndUnhealthyNodes) {
  OutlierDetector detector = Make(3, 100);
  FailTimes(detector, 1, 5);
  const std::vector<bool> usable = {true, true, false};
  bool panic = true;
  EXPECT_EQ(detector.Eligible(now_, &usable, &panic), std::vector<size_t>({0}));
  EXPECT_FALSE(panic);
}

TEST_F(OutlierDetectorTest, PanicModeRoutesToAllWhenNoneIsLeft) {
  OutlierDetector detector = Make(2, 100);
  FailTimes(detector, 0, 5);
  const std::vector<bool> usable = {true, false};
  bool panic = false;
  EXPECT_EQ(detector.Eligible(now_, &usable, &panic), std::vector<size_t>({0, 1}));
  EXPECT_TRUE(panic);
}

// Returns the values it is given, in turn.
class SequenceRandom : public Random {
 public:
  explicit SequenceRandom(std::vector<double> values) : values_(std::move(values)) {}
  double Uniform01() override { return values_[next_++ % values_.size()]; }

 private:
  std::vector<double> values_;
  size_t next_ = 0;
};

TEST(PowerOfTwoTest, PicksTheLessLoadedOfTwoDistinctNodes) {
  const std::vector<size_t> eligible = {0, 1, 2, 3};
  const std::vector<double> load = {5, 1, 9, 0};
  auto load_of = [&](size_t node) { return load[node]; };
  // Draws 0.0 -> index 0, then 0.0 of the other three -> index 1: nodes 0 and 1, 1 wins.
  SequenceRandom random({0.0, 0.0});
  EXPECT_EQ(PickPowerOfTwo(eligible, load_of, random), 1u);
  // Draws 0.99 -> index 3, then 0.99 of the other three -> index 2: nodes 3 and 2, 3 wins.
  SequenceRandom random2({0.99, 0.99});
  EXPECT_EQ(PickPowerOfTwo(eligible, load_of, random2), 3u);
}

TEST(PowerOfTwoTest, EqualLoadsSpreadOverBothNodes) {
  const std::vector<size_t> eligible = {0, 1};
  std::map<size_t, int> picks;
  SequenceRandom random({0.1, 0.7, 0.9, 0.2, 0.5, 0.5});
  // Equal loads: the first draw wins the tie, so picks follow the first draws.
  for (int i = 0; i < 6; ++i)
    picks[PickPowerOfTwo(
        eligible, [](size_t) { return 1.0; }, random)]++;
  EXPECT_EQ(picks[0] + picks[1], 6);
  EXPECT_GT(picks[0], 0);
  EXPECT_GT(picks[1], 0);
}

TEST(PowerOfTwoTest, OneEligibleNodeIsPicked) {
  testing::FakeRandom random(0.3);
  EXPECT_EQ(PickPowerOfTwo(
                {7}, [](size_t) { return 0.0; }, random),
            7u);
}

TEST(JitterTest, StaysWithinTheBounds) {
  testing::FakeRandom random(0.0);
  EXPECT_EQ(Jittered(10s, 0.1, random), Duration(9s));
  random.set(0.5);
  EXPECT_EQ(Jittered(10s, 0.1, random), Duration(10s));
  random.set(0.999999);
  EXPECT_LT(Jittered(10s, 0.1, random), Duration(11s));
  EXPECT_GT(Jittered(10s, 0.1, random), Duration(10900ms));
}

}  // namespace
}  // namespace qpool::health
