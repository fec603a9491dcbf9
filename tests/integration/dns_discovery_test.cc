// DNS discovery end to end in process: a Proxy whose one node is a name, a fake resolver (the seam)
// whose answer the test changes, and two test upstreams on the same port of 127.0.0.1 and
// 127.0.0.2. Nodes join and drain as the answer changes, under a bounded load that sees no failed
// call; a failed resolution keeps the node set.
#include "daemon/server/dns_discovery.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "daemon/metrics/scrape.h"
#include "daemon/server/proxy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_service.grpc.pb.h"
#include "tests/support/echo_client.h"
#include "tests/support/test_upstream.h"
#include "tests/support/test_util.h"

namespace qpool::testing {
namespace {

using ::testing::ElementsAre;

class FakeResolver : public server::Resolver {
 public:
  absl::StatusOr<std::vector<std::string>> Resolve(const std::string& host) override {
    absl::MutexLock lock(&mu_);
    calls_++;
    if (host != "qdrant.test" || answer_.empty()) {
      return absl::NotFoundError(absl::StrCat("resolve ", host, ": no such name (fake)"));
    }
    return answer_;
  }
  void Set(std::vector<std::string> answer) {
    absl::MutexLock lock(&mu_);
    answer_ = std::move(answer);
  }
  int calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> answer_;
  int calls_ = 0;
};

std::vector<std::string> NodeNames(server::Proxy& proxy) {
  return proxy.Scrape(absl::Seconds(2)).node_names;
}

TEST(DnsDiscoveryIntegrationTest, NodesJoinAndDrainAsTheAnswerChangesWithoutAFailedCall) {
  auto first = TestUpstream::Start(0, absl::InfiniteDuration(), "127.0.0.1");
  ASSERT_TRUE(first.ok()) << first.status();
  const uint16_t port = (*first)->port();
  auto second = TestUpstream::Start(port, absl::InfiniteDuration(), "127.0.0.2");
  ASSERT_TRUE(second.ok()) << second.status();
  const std::string a = absl::StrCat("127.0.0.1:", port);
  const std::string b = absl::StrCat("127.0.0.2:", port);

  auto resolver = std::make_shared<FakeResolver>();
  resolver->Set({"127.0.0.1"});
  config::Config config;
  config.server.listen = {"127.0.0.1", 0};
  config.server.workers = 2;
  config.rest.listen = {};
  config.upstream.nodes = {{"qdrant.test", port}};
  config.upstream.max_connections = 2;
  config.upstream.dns_refresh = absl::Milliseconds(100);
  config.health.medium_enabled = false;  // the test upstream serves no Qdrant health method
  config.health.deep_enabled = false;
  config.log.level = "warn";
  auto proxy = server::Proxy::Create(std::make_shared<const config::Config>(config), resolver);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  ASSERT_TRUE((*proxy)->Start().ok());
  EXPECT_THAT(NodeNames(**proxy), ElementsAre(a)) << "the name is resolved before the start";

  EchoLoad load((*proxy)->port(), 4, 100000);
  ASSERT_TRUE(WaitFor([&] { return load.ok() >= 100; }, absl::Seconds(20)));
  EXPECT_EQ((*second)->stats().CallsStarted(), 0);

  // The answer grows: the new address joins and takes calls.
  resolver->Set({"127.0.0.1", "127.0.0.2"});
  ASSERT_TRUE(WaitFor([&] { return NodeNames(**proxy).size() == 2; }, absl::Seconds(10)));
  EXPECT_THAT(NodeNames(**proxy), ElementsAre(a, b));
  ASSERT_TRUE(WaitFor([&] { return (*second)->stats().CallsStarted() >= 100; }, absl::Seconds(10)));

  // The first address leaves the answer: its node drains, then leaves the node set.
  resolver->Set({"127.0.0.2"});
  ASSERT_TRUE(WaitFor([&] { return NodeNames(**proxy) == std::vector<std::string>{b}; },
                      absl::Seconds(10)));
  const int64_t calls_a = (*first)->stats().CallsStarted();
  const int64_t calls_b = (*second)->stats().CallsStarted();
  ASSERT_TRUE(WaitFor([&] { return (*second)->stats().CallsStarted() >= calls_b + 200; },
                      absl::Seconds(10)));
  EXPECT_EQ((*first)->stats().CallsStarted(), calls_a) << "a drained node got new calls";

  // The name stops resolving: the node set stays as it was.
  resolver->Set({});
  const int calls = resolver->calls();
  ASSERT_TRUE(WaitFor([&] { return resolver->calls() >= calls + 3; }, absl::Seconds(10)));
  EXPECT_THAT(NodeNames(**proxy), ElementsAre(b));

  load.Stop();
  EXPECT_EQ(load.failed(), 0) << load.first_failure();
  EXPECT_TRUE((*proxy)->Shutdown().ok());
}

}  // namespace
}  // namespace qpool::testing
