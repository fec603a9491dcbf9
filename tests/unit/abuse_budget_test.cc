// The per-connection abuse budgets (daemon/server/abuse_budget.h): the token bucket, and the
// AbuseGuard that holds one connection's budgets.
#include "daemon/server/abuse_budget.h"

#include <chrono>

#include "gtest/gtest.h"

namespace qpool::server {
namespace {

using std::chrono::milliseconds;

const MonoTime kStart = MonoTime{} + std::chrono::hours(1);

TEST(TokenBucketTest, AllowsTheBurstThenRefuses) {
  TokenBucket bucket({5, 1});
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(bucket.Take(kStart)) << i;
  EXPECT_FALSE(bucket.Take(kStart));
  EXPECT_FALSE(bucket.Take(kStart + milliseconds(999)));
}

TEST(TokenBucketTest, RegainsTokensAtTheRate) {
  TokenBucket bucket({10, 10});  // one token per 100 ms
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(bucket.Take(kStart));
  EXPECT_FALSE(bucket.Take(kStart + milliseconds(99)));
  EXPECT_TRUE(bucket.Take(kStart + milliseconds(100)));
  EXPECT_FALSE(bucket.Take(kStart + milliseconds(150)));
  // 4 more: 450 ms since the last regain at 100 ms.
  const MonoTime later = kStart + milliseconds(550);  // 450 ms after the last regain
  EXPECT_TRUE(bucket.Take(later));
  EXPECT_TRUE(bucket.Take(later));
  EXPECT_TRUE(bucket.Take(later));
  EXPECT_TRUE(bucket.Take(later));
  EXPECT_FALSE(bucket.Take(later));
}

TEST(TokenBucketTest, NeverHoldsMoreThanTheBurst) {
  TokenBucket bucket({3, 100});
  ASSERT_TRUE(bucket.Take(kStart));
  const MonoTime much_later = kStart + std::chrono::hours(1);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(bucket.Take(much_later)) << i;
  EXPECT_FALSE(bucket.Take(much_later));
}

TEST(TokenBucketTest, SteadyRateBelowTheBudgetNeverRunsDry) {
  TokenBucket bucket(kPingBudget);
  // One PING a second (far more than gRPC keepalive) for a day.
  for (int i = 0; i < 86400; ++i) {
    ASSERT_TRUE(bucket.Take(kStart + std::chrono::seconds(i))) << i;
  }
}

TEST(TokenBucketTest, ReasonNamesAreTheMetricLabels) {
  EXPECT_EQ(AbuseReasonName(AbuseReason::kRapidReset), "rapid_reset");
  EXPECT_EQ(AbuseReasonName(AbuseReason::kHeaderBlockFlood), "header_block_flood");
}

TEST(AbuseGuardTest, EachReasonSpendsItsOwnBudget) {
  AbuseGuard guard;
  for (uint32_t i = 0; i < kSettingsBudget.burst; ++i) {
    ASSERT_TRUE(guard.Spend(AbuseReason::kSettingsFlood, kStart)) << i;
  }
  EXPECT_FALSE(guard.Spend(AbuseReason::kSettingsFlood, kStart));
  // The others are untouched: a full burst each.
  for (uint32_t i = 0; i < kHeaderLimitBudget.burst; ++i) {
    ASSERT_TRUE(guard.Spend(AbuseReason::kHeaderLimit, kStart)) << i;
  }
  EXPECT_FALSE(guard.Spend(AbuseReason::kHeaderLimit, kStart));
  for (uint32_t i = 0; i < kResetBudget.burst; ++i) {
    ASSERT_TRUE(guard.Spend(AbuseReason::kRapidReset, kStart)) << i;
  }
  EXPECT_FALSE(guard.Spend(AbuseReason::kRapidReset, kStart));
  EXPECT_TRUE(guard.Spend(AbuseReason::kPriorityFlood, kStart));
  EXPECT_TRUE(guard.Spend(AbuseReason::kEmptyFrames, kStart));
  EXPECT_TRUE(guard.Spend(AbuseReason::kPingFlood, kStart));
}

TEST(AbuseGuardTest, APingAfterResponseFramesIsFreeOnce) {
  AbuseGuard guard;
  EXPECT_FALSE(guard.TakeFreePing());  // nothing sent yet: a keepalive pays
  guard.OnResponseFrameSent();
  guard.OnResponseFrameSent();
  EXPECT_TRUE(guard.TakeFreePing());   // a BDP probe after data
  EXPECT_FALSE(guard.TakeFreePing());  // the next one pays again
}

TEST(AbuseGuardTest, MarkAbusiveIsTrueOnlyTheFirstTime) {
  AbuseGuard guard;
  EXPECT_FALSE(guard.abusive());
  EXPECT_TRUE(guard.MarkAbusive());
  EXPECT_TRUE(guard.abusive());
  EXPECT_FALSE(guard.MarkAbusive());
}

}  // namespace
}  // namespace qpool::server
