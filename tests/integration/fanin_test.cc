// Fan-in: many app connections, each with several calls in flight, through qpoold's bounded pool.
// The upstream itself counts the TCP connections the calls arrived on.
#include <grpcpp/grpcpp.h>

#include <iostream>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/integration/route_fixture.h"

namespace qpool::testing {
namespace {

constexpr int kClientConnections = 500;
constexpr int kCallsPerConnection = 4;
constexpr int kUpstreamSleepMs = 5;
constexpr int kMaxUpstreamConnections = 2;

class FanInTest : public RouteTest {};

TEST_P(FanInTest, FiveHundredClientConnectionsShareTwoUpstreamConnections) {
  ASSERT_NO_FATAL_FAILURE(RestartRoute([](config::Config& config) {
    config.upstream.min_connections = 1;
    config.upstream.max_connections = kMaxUpstreamConnections;
    config.upstream.max_pending = 4096;
    config.upstream.acquire_timeout = absl::Seconds(10);
  }));

  struct Call {
    EchoRequest request;
    EchoResponse response;
    grpc::ClientContext ctx;
    grpc::Status status;
  };
  std::vector<std::unique_ptr<TestService::Stub>> stubs;
  for (int i = 0; i < kClientConnections; ++i) {
    stubs.push_back(TestService::NewStub(NewChannel(/*own_connection=*/true)));
  }
  std::vector<std::unique_ptr<Call>> calls;
  absl::Mutex mu;
  int finished = 0;
  const int total = kClientConnections * kCallsPerConnection;
  for (int c = 0; c < kClientConnections; ++c) {
    for (int k = 0; k < kCallsPerConnection; ++k) {
      auto call = std::make_unique<Call>();
      call->request.set_sleep_ms(kUpstreamSleepMs);
      call->request.set_payload(absl::StrCat("connection ", c, " call ", k));
      call->ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
      Call* raw = call.get();
      calls.push_back(std::move(call));
      stubs[c]->async()->Unary(&raw->ctx, &raw->request, &raw->response,
                               [raw, &mu, &finished](grpc::Status status) {
                                 absl::MutexLock lock(&mu);
                                 raw->status = std::move(status);
                                 ++finished;
                               });
    }
  }

  {
    absl::MutexLock lock(&mu);
    auto all_done = [&] { return finished == total; };
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all_done), absl::Seconds(90)))
        << finished << " of " << total << " calls finished";
  }

  int failed = 0;
  for (const auto& call : calls) {
    if (call->status.ok() && call->response.payload() == call->request.payload()) continue;
    if (++failed <= 5) {
      ADD_FAILURE() << "call failed: code " << call->status.error_code() << ": "
                    << call->status.error_message();
    }
  }
  std::cout << "fan-in " << RouteName({route(), 0}) << ": " << total << " calls, " << failed
            << " failed; the upstream saw " << upstream_stats().DistinctPeers()
            << " TCP connections and at most " << upstream_stats().MaxUnanswered()
            << " calls in progress at once\n";
  EXPECT_EQ(failed, 0) << "of " << total << " calls";
  EXPECT_EQ(upstream_stats().CallsStarted(), total);
  if (through_qpoold()) {
    EXPECT_LE(upstream_stats().DistinctPeers(), kMaxUpstreamConnections);
    // upstream.max_streams_per_connection keeps its default of 100.
    EXPECT_LE(upstream_stats().MaxUnanswered(), kMaxUpstreamConnections * 100);
  } else {
    // Validates the test: without qpoold every client channel is its own TCP connection.
    EXPECT_GE(upstream_stats().DistinctPeers(), kClientConnections);
  }
}

INSTANTIATE_TEST_SUITE_P(Routes, FanInTest, AllRoutes(), RouteName);

}  // namespace
}  // namespace qpool::testing
