// The per-connection abuse budgets' token bucket (daemon/server/abuse_budget.h).
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

}  // namespace
}  // namespace qpool::server
