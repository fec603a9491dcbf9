// The fixture every integration test uses: a real gRPC test upstream on 127.0.0.1:0 (it counts what
// reaches it), and a route to it that is either direct or through an in-process qpoold
// (qpool::server::Proxy on 127.0.0.1:0). The Direct route checks the test itself; the
// ThroughQpoold route is the real test.
//
//   class MyTest : public RouteTest {};
//   TEST_P(MyTest, UnaryRoundTrip) { ... stub_->Unary(&ctx, request, &response) ... }
//   INSTANTIATE_TEST_SUITE_P(Routes, MyTest, AllRoutes(), RouteName);
//
// Thread-safety: fixture methods are called from the test's thread.
#ifndef QPOOL_TESTS_INTEGRATION_ROUTE_FIXTURE_H_
#define QPOOL_TESTS_INTEGRATION_ROUTE_FIXTURE_H_

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>

#include "daemon/config/config.h"
#include "daemon/server/proxy.h"
#include "testing/test_service.grpc.pb.h"
#include "tests/support/test_upstream.h"

namespace qpool::testing {

enum class Route { kDirect, kThroughQpoold };

inline auto AllRoutes() { return ::testing::Values(Route::kDirect, Route::kThroughQpoold); }
std::string RouteName(const ::testing::TestParamInfo<Route>& info);

// The user-agent prefix the fixture's channels send.
inline constexpr char kUserAgentPrefix[] = "qpool-it/1.0";

class RouteTest : public ::testing::TestWithParam<Route> {
 protected:
  // Starts the upstream and the route with the default proxy config (see DefaultProxyConfig()).
  void SetUp() override;
  // Stops the proxy (at once) and the upstream.
  void TearDown() override;

  // qpoold's config in these tests: listen 127.0.0.1:0, the test upstream as the one node,
  // max_connections 2, max_pending 1024, acquire_timeout 5s, drain_timeout 2s.
  config::Config DefaultProxyConfig() const;

  // Replaces the route: a new proxy whose DefaultProxyConfig() was changed by `edit`, pointing at
  // the upstream on `upstream_port` (0: the test upstream). stub_ is rebuilt. Fatal failures
  // (ASSERT) when the proxy does not start.
  void RestartRoute(const std::function<void(config::Config&)>& edit, uint16_t upstream_port = 0);

  // A channel to the route's entry point with unlimited message sizes and kUserAgentPrefix. With
  // `own_connection` it does not share a subchannel (TCP connection) with any other channel.
  std::shared_ptr<grpc::Channel> NewChannel(bool own_connection = false) const;

  Route route() const { return GetParam(); }
  bool through_qpoold() const { return GetParam() == Route::kThroughQpoold; }
  UpstreamStats& upstream_stats() { return upstream_->stats(); }

  std::unique_ptr<TestUpstream> upstream_;
  std::unique_ptr<server::Proxy> proxy_;  // null on the Direct route
  std::string target_;                    // "127.0.0.1:PORT" the clients dial
  std::unique_ptr<TestService::Stub> stub_;

 private:
  void StopProxy();
};

}  // namespace qpool::testing

#endif  // QPOOL_TESTS_INTEGRATION_ROUTE_FIXTURE_H_
