// The fast health tier against a server that limits pings: the in-process test upstream is a gRPC
// C++ server with default settings, which answers a third PING without data within 5 minutes with
// GOAWAY ENHANCE_YOUR_CALM "too_many_pings" (gRPC's keepalive policy). qpoold must back off
// (double the node's PING interval each time) rather than lose a connection every few PINGs.
#include <gtest/gtest.h>

#include "absl/time/clock.h"
#include "daemon/metrics/scrape.h"
#include "tests/integration/route_fixture.h"

namespace qpool::testing {
namespace {

class HealthPingTest : public RouteTest {};

TEST_P(HealthPingTest, BacksOffOnTooManyPings) {
  RestartRoute([](config::Config& config) {
    config.health.fast_interval = absl::Milliseconds(50);
    config.health.fast_timeout = absl::Seconds(1);
  });
  absl::SleepFor(absl::Seconds(4));
  metrics::ScrapeInput input = proxy_->Scrape(absl::Seconds(1));
  ASSERT_EQ(input.workers.size(), 1u);
  const metrics::NodeMetrics& node = input.workers[0]->node(0);
  const uint64_t goaways = node.disconnects[static_cast<size_t>(pool::CloseReason::kGoAway)].Get();
  const uint64_t pings = node.pings_ok.Get();
  // Without back-off a connection lasts about 3 PINGs (150 ms): some 25 GOAWAYs in 4 s. Doubling
  // from 50 ms, the connections last about 150, 300, 600, 1200, 2400 ms: at most 5.
  EXPECT_GE(goaways, 1u) << "the upstream never complained: the test proves nothing";
  EXPECT_LE(goaways, 6u);
  EXPECT_GE(pings, 3u);
  EXPECT_EQ(node.pings_failed.Get(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Routes, HealthPingTest, ::testing::Values(Route::kThroughQpoold),
                         RouteName);

}  // namespace
}  // namespace qpool::testing
