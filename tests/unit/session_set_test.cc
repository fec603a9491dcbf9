// server::SessionSet's socket-free parts: the sweep period it derives from the connections'
// timeouts, and TrimWatermark, when a worker gives free heap back after a crowd of app
// connections left. (Adopting, sweeping and draining real sessions: the integration tests.)
#include "daemon/server/session_set.h"

#include <chrono>

#include "absl/time/time.h"
#include "daemon/config/config.h"
#include "gtest/gtest.h"

namespace qpool::server {
namespace {

using std::chrono::milliseconds;

config::ServerConfig Timeouts(absl::Duration handshake, absl::Duration idle,
                              absl::Duration stream_idle) {
  config::ServerConfig server;
  server.handshake_timeout = handshake;
  server.idle_timeout = idle;
  server.stream_idle_timeout = stream_idle;
  return server;
}

TEST(SessionSetTest, NoSweepWhenEveryTimeoutIsOff) {
  const absl::Duration off = absl::ZeroDuration();
  EXPECT_EQ(SessionSet::SweepPeriod(Timeouts(off, off, off)), Duration::zero());
}

TEST(SessionSetTest, SweepPeriodIsAQuarterOfTheShortestTimeoutWithin50msAnd1s) {
  const absl::Duration off = absl::ZeroDuration();
  EXPECT_EQ(SessionSet::SweepPeriod(Timeouts(absl::Seconds(2), absl::Seconds(1), off)),
            milliseconds(250));
  EXPECT_EQ(SessionSet::SweepPeriod(Timeouts(off, off, absl::Milliseconds(800))),
            milliseconds(200));
  EXPECT_EQ(SessionSet::SweepPeriod(Timeouts(absl::Minutes(1), absl::Minutes(5), off)),
            milliseconds(1000));
  EXPECT_EQ(SessionSet::SweepPeriod(Timeouts(off, absl::Milliseconds(100), off)), milliseconds(50));
}

TEST(TrimWatermarkTest, NoTrimBelowThePeakThatCounts) {
  TrimWatermark trim;
  for (size_t held = TrimWatermark::kMinPeak - 1; held > 0; --held) {
    EXPECT_FALSE(trim.Closed(held - 1)) << held;
  }
}

TEST(TrimWatermarkTest, TrimsAtHalfThePeakThenCountsFromThere) {
  TrimWatermark trim;
  const size_t peak = 2 * TrimWatermark::kMinPeak;
  EXPECT_FALSE(trim.Closed(peak));
  EXPECT_FALSE(trim.Closed(peak / 2 + 1));
  EXPECT_TRUE(trim.Closed(peak / 2));
  // The peak restarted at peak / 2 (= kMinPeak): half of that next.
  EXPECT_FALSE(trim.Closed(peak / 2 - 1));
  EXPECT_FALSE(trim.Closed(TrimWatermark::kMinPeak / 2 + 1));
  EXPECT_TRUE(trim.Closed(TrimWatermark::kMinPeak / 2));
  // Now below kMinPeak: no more trims however few are left.
  EXPECT_FALSE(trim.Closed(0));
}

}  // namespace
}  // namespace qpool::server
