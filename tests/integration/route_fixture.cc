#include "tests/integration/route_fixture.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"

namespace qpool::testing {

std::string RouteName(const ::testing::TestParamInfo<Route>& info) {
  return info.param == Route::kDirect ? "Direct" : "ThroughQpoold";
}

void RouteTest::SetUp() {
  auto upstream = TestUpstream::Start();
  ASSERT_TRUE(upstream.ok()) << upstream.status();
  upstream_ = std::move(*upstream);
  RestartRoute(nullptr);
}

void RouteTest::TearDown() {
  stub_.reset();
  StopProxy();
  if (upstream_ != nullptr) upstream_->Shutdown(absl::ZeroDuration());
}

config::Config RouteTest::DefaultProxyConfig() const {
  config::Config config;
  config.server.listen = {"127.0.0.1", 0};
  config.rest.listen = {};  // REST off: the REST tests bind their own port (rest_forwarding_test)
  config.server.drain_timeout = absl::Seconds(2);
  config.upstream.nodes = {{"127.0.0.1", upstream_ != nullptr ? upstream_->port() : uint16_t{0}}};
  config.upstream.min_connections = 1;
  config.upstream.max_connections = 2;
  config.upstream.max_pending = 1024;
  config.upstream.acquire_timeout = absl::Seconds(5);
  config.log.level = "warn";
  // The test upstream serves the test service, not Qdrant's health methods: active probes would
  // only fail and add calls the tests do not count. Health has its own tests (health_e2e_test).
  config.health.medium_enabled = false;
  config.health.deep_enabled = false;
  return config;
}

void RouteTest::RestartRoute(const std::function<void(config::Config&)>& edit,
                             uint16_t upstream_port) {
  stub_.reset();
  StopProxy();
  if (upstream_port == 0) upstream_port = upstream_->port();
  if (route() == Route::kDirect) {
    target_ = absl::StrCat("127.0.0.1:", upstream_port);
  } else {
    config::Config config = DefaultProxyConfig();
    config.upstream.nodes = {{"127.0.0.1", upstream_port}};
    if (edit) edit(config);
    auto proxy = server::Proxy::Create(std::make_shared<const config::Config>(std::move(config)));
    ASSERT_TRUE(proxy.ok()) << proxy.status();
    proxy_ = std::move(*proxy);
    absl::Status started = proxy_->Start();
    ASSERT_TRUE(started.ok()) << started;
    ASSERT_NE(proxy_->port(), 0);
    target_ = absl::StrCat("127.0.0.1:", proxy_->port());
  }
  stub_ = TestService::NewStub(NewChannel(/*own_connection=*/true));
}

std::shared_ptr<grpc::Channel> RouteTest::NewChannel(bool own_connection) const {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  args.SetUserAgentPrefix(kUserAgentPrefix);
  if (own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target_, grpc::InsecureChannelCredentials(), args);
}

void RouteTest::StopProxy() {
  if (proxy_ == nullptr) return;
  proxy_->ShutdownNow();
  proxy_.reset();
}

}  // namespace qpool::testing
