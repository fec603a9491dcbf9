// Connection recycling through an in-process qpoold under steady load: with
// upstream.max_connection_age or upstream.max_requests_per_connection set, the connections to the
// test upstream turn over (it sees more TCP connections than the pool's bound), no call fails,
// and qpoold counts the closes as `recycled`.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "daemon/metrics/worker_metrics.h"
#include "gtest/gtest.h"
#include "tests/integration/route_fixture.h"
#include "tests/support/test_util.h"

namespace qpool::testing {
namespace {

class RecycleTest : public RouteTest {
 protected:
  struct LoadResult {
    int ok = 0;
    int failed = 0;
  };

  // `threads` clients, each making unary calls (`sleep_ms` at the upstream) one after another
  // until `calls_per_thread` are done or `duration` has passed, whichever comes first.
  LoadResult RunLoad(int threads, int calls_per_thread, absl::Duration duration, int sleep_ms) {
    std::atomic<int> ok{0};
    std::atomic<int> failed{0};
    std::vector<std::thread> clients;
    const absl::Time until = absl::Now() + duration;
    for (int t = 0; t < threads; ++t) {
      clients.emplace_back([&] {
        for (int i = 0; i < calls_per_thread && absl::Now() < until; ++i) {
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
          EchoRequest request;
          request.set_sleep_ms(sleep_ms);
          request.set_payload("recycle");
          EchoResponse response;
          const grpc::Status status = stub_->Unary(&ctx, request, &response);
          if (status.ok()) {
            ok++;
          } else {
            failed++;
            ADD_FAILURE() << "call failed: " << status.error_code() << " "
                          << status.error_message();
          }
        }
      });
    }
    for (auto& client : clients) client.join();
    return {ok.load(), failed.load()};
  }

  // qpoold's count of upstream connections closed for `reason`, over all workers.
  uint64_t Disconnects(pool::CloseReason reason) {
    const metrics::ScrapeInput input = proxy_->Scrape(absl::Seconds(1));
    uint64_t total = 0;
    for (const metrics::WorkerMetrics* worker : input.workers) {
      total += worker->node(0).disconnects[static_cast<size_t>(reason)].Get();
    }
    return total;
  }
};

TEST_P(RecycleTest, MaxConnectionAgeTurnsConnectionsOverUnderLoadWithoutFailingCalls) {
  auto upstream = TestUpstream::Start();
  ASSERT_TRUE(upstream.ok()) << upstream.status();
  RestartRoute(
      [](config::Config& config) {
        config.upstream.max_connections = 2;
        config.upstream.max_connection_age = absl::Seconds(1);
      },
      (*upstream)->port());

  const LoadResult result = RunLoad(/*threads=*/4, /*calls_per_thread=*/2000,
                                    /*duration=*/absl::Seconds(4), /*sleep_ms=*/10);

  EXPECT_EQ(result.failed, 0);
  EXPECT_GT(result.ok, 100);
  // Each connection lives 0.9-1.1 s: over 4 s the pool (bound 2) goes through several.
  EXPECT_GT((*upstream)->stats().DistinctPeers(), 2) << "the connections never turned over";
  EXPECT_TRUE(
      WaitFor([&] { return Disconnects(pool::CloseReason::kRecycled) >= 2; }, absl::Seconds(5)));
  EXPECT_EQ(Disconnects(pool::CloseReason::kError), 0u);
}

TEST_P(RecycleTest, MaxRequestsPerConnectionOpensAConnectionPerNCallsWithoutFailingCalls) {
  auto upstream = TestUpstream::Start();
  ASSERT_TRUE(upstream.ok()) << upstream.status();
  constexpr int kMaxRequests = 10;
  RestartRoute(
      [](config::Config& config) {
        config.upstream.max_connections = 2;
        config.upstream.max_requests_per_connection = kMaxRequests;
      },
      (*upstream)->port());
  constexpr int kThreads = 4;
  constexpr int kCallsPerThread = 50;

  const LoadResult result = RunLoad(kThreads, kCallsPerThread, /*duration=*/absl::Seconds(30),
                                    /*sleep_ms=*/2);

  EXPECT_EQ(result.failed, 0);
  ASSERT_EQ(result.ok, kThreads * kCallsPerThread);
  EXPECT_GE((*upstream)->stats().DistinctPeers(), kThreads * kCallsPerThread / kMaxRequests);
  EXPECT_TRUE(WaitFor(
      [&] {
        return Disconnects(pool::CloseReason::kRecycled) >=
               static_cast<uint64_t>(kThreads * kCallsPerThread / kMaxRequests);
      },
      absl::Seconds(5)));
  EXPECT_EQ(Disconnects(pool::CloseReason::kError), 0u);
}

INSTANTIATE_TEST_SUITE_P(ThroughQpoold, RecycleTest, ::testing::Values(Route::kThroughQpoold),
                         RouteName);

}  // namespace
}  // namespace qpool::testing
