// What an app connection decides about hostile clients without a socket: the header limits of a
// request header block (daemon/server/header_block_guard.h) and the sweep's handshake and idle
// timeouts (daemon/server/connection_timeouts.h). The abuse budgets are in abuse_budget_test.cc;
// the connection acting on these verdicts, in tests/integration/hostile_test.cc.
#include <chrono>
#include <cstdint>

#include "daemon/server/connection_timeouts.h"
#include "daemon/server/header_block_guard.h"
#include "gtest/gtest.h"

namespace qpool::server {
namespace {

using std::chrono::seconds;
using OverLimit = HeaderBlockGuard::OverLimit;
using Action = ConnectionTimeouts::Action;

// A field of `n` octets (name and value together): RFC 9113 counts it as n + 32.
bool AddField(HeaderBlockGuard& guard, size_t n) { return guard.Add(n / 2, n - n / 2); }

TEST(HeaderBlockGuardTest, FieldsWithinBothLimitsPass) {
  HeaderBlockGuard guard(/*max_header_list_size=*/1000, /*max_headers=*/10);
  guard.BeginBlock();
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(AddField(guard, 68)) << i;  // 10 x 100 = 1000 octets
  EXPECT_FALSE(guard.over_limit(1));
}

TEST(HeaderBlockGuardTest, CountsNameAndValueOctetsPlus32) {
  HeaderBlockGuard guard(100, 10);
  guard.BeginBlock();
  EXPECT_TRUE(guard.Add(30, 38));  // 100 octets: at the limit
  guard.BeginBlock();
  EXPECT_FALSE(guard.Add(30, 39));  // 101
}

TEST(HeaderBlockGuardTest, OneFieldTooManyIsOverTheCountLimit) {
  HeaderBlockGuard guard(1 << 20, 3);
  guard.BeginBlock();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(AddField(guard, 1));
  ASSERT_FALSE(AddField(guard, 1));
  EXPECT_EQ(guard.OnOverLimit(1), OverLimit::kFirst);
  EXPECT_TRUE(guard.over_count());
  EXPECT_EQ(guard.message(), "qpool: request headers over server.max_headers (3 fields)");
}

TEST(HeaderBlockGuardTest, TheFirstFieldOverTheLimitRejectsAndTheRestAreSkipped) {
  HeaderBlockGuard guard(200, 100);
  guard.BeginBlock();
  ASSERT_TRUE(AddField(guard, 100));
  ASSERT_FALSE(AddField(guard, 100));  // 264 octets
  EXPECT_EQ(guard.OnOverLimit(5), OverLimit::kFirst);
  EXPECT_FALSE(guard.over_count());
  ASSERT_FALSE(AddField(guard, 100));
  EXPECT_EQ(guard.OnOverLimit(5), OverLimit::kRest);
  EXPECT_TRUE(guard.over_limit(5));
  EXPECT_FALSE(guard.over_limit(7));
  EXPECT_EQ(guard.message(), "qpool: request headers over server.max_header_list_size (200 bytes)");
  guard.EndOverLimit();
  EXPECT_FALSE(guard.over_limit(5));
}

TEST(HeaderBlockGuardTest, ABlockPastFourTimesTheSizeLimitIsAFlood) {
  HeaderBlockGuard guard(1000, 1000);
  guard.BeginBlock();
  ASSERT_FALSE(AddField(guard, 3968));  // 4000 octets: over the limit, not past 4x
  EXPECT_EQ(guard.OnOverLimit(1), OverLimit::kFirst);
  ASSERT_FALSE(AddField(guard, 0));  // 4032
  EXPECT_EQ(guard.OnOverLimit(1), OverLimit::kFlood);
}

TEST(HeaderBlockGuardTest, ABlockPastFourTimesTheCountLimitIsAFlood) {
  HeaderBlockGuard guard(1 << 20, 2);
  guard.BeginBlock();
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(AddField(guard, 0));
  for (int i = 3; i <= 8; ++i) {
    ASSERT_FALSE(AddField(guard, 0));
    EXPECT_NE(guard.OnOverLimit(1), OverLimit::kFlood) << i << " fields";
  }
  ASSERT_FALSE(AddField(guard, 0));  // the 9th: past 4 x 2
  EXPECT_EQ(guard.OnOverLimit(1), OverLimit::kFlood);
}

TEST(HeaderBlockGuardTest, ANewBlockStartsTheCountOver) {
  HeaderBlockGuard guard(200, 2);
  guard.BeginBlock();
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(AddField(guard, 50));
  ASSERT_FALSE(AddField(guard, 50));
  ASSERT_EQ(guard.OnOverLimit(1), OverLimit::kFirst);
  guard.BeginBlock();  // the next stream's block; a rejected block's stream is forgotten too
  EXPECT_FALSE(guard.over_limit(1));
  EXPECT_TRUE(AddField(guard, 50));
  EXPECT_TRUE(AddField(guard, 50));
}

const MonoTime kAccepted = MonoTime{} + std::chrono::hours(1);
constexpr Duration kHandshake = seconds(10);
constexpr Duration kIdle = seconds(60);

TEST(ConnectionTimeoutsTest, NoHandshakeWithinTheTimeoutIsDue) {
  ConnectionTimeouts timeouts(kAccepted);
  EXPECT_EQ(timeouts.Check(kAccepted + seconds(9), false, kHandshake, kIdle), Action::kNone);
  EXPECT_EQ(timeouts.Check(kAccepted + seconds(10), false, kHandshake, kIdle),
            Action::kHandshakeTimeout);
}

TEST(ConnectionTimeoutsTest, ZeroTimeoutsAreOff) {
  ConnectionTimeouts silent(kAccepted);
  EXPECT_EQ(silent.Check(kAccepted + seconds(1000), false, Duration::zero(), kIdle), Action::kNone);
  ConnectionTimeouts idle(kAccepted);
  idle.OnHandshakeDone();
  EXPECT_EQ(idle.Check(kAccepted, false, kHandshake, Duration::zero()), Action::kNone);
  EXPECT_EQ(idle.Check(kAccepted + seconds(1000), false, kHandshake, Duration::zero()),
            Action::kNone);
}

TEST(ConnectionTimeoutsTest, IdleCountsFromTheFirstSweepThatSawNoStream) {
  ConnectionTimeouts timeouts(kAccepted);
  timeouts.OnHandshakeDone();
  const MonoTime first = kAccepted + seconds(100);  // long after the handshake
  EXPECT_EQ(timeouts.Check(first, false, kHandshake, kIdle), Action::kNone);
  EXPECT_EQ(timeouts.Check(first + seconds(59), false, kHandshake, kIdle), Action::kNone);
  EXPECT_EQ(timeouts.Check(first + seconds(60), false, kHandshake, kIdle), Action::kIdleTimeout);
}

TEST(ConnectionTimeoutsTest, AStreamOrBusinessSinceTheLastSweepRestartsTheIdleClock) {
  ConnectionTimeouts timeouts(kAccepted);
  timeouts.OnHandshakeDone();
  EXPECT_EQ(timeouts.Check(kAccepted, false, kHandshake, kIdle), Action::kNone);
  timeouts.OnStreamOpened();  // a call came and went between two sweeps
  EXPECT_EQ(timeouts.Check(kAccepted + seconds(60), false, kHandshake, kIdle), Action::kNone);
  EXPECT_EQ(timeouts.Check(kAccepted + seconds(61), false, kHandshake, kIdle), Action::kNone);
  EXPECT_EQ(timeouts.Check(kAccepted + seconds(120), true, kHandshake, kIdle), Action::kNone);
  EXPECT_EQ(timeouts.Check(kAccepted + seconds(121), false, kHandshake, kIdle), Action::kNone);
  EXPECT_EQ(timeouts.Check(kAccepted + seconds(181), false, kHandshake, kIdle),
            Action::kIdleTimeout);
}

}  // namespace
}  // namespace qpool::server
