// DNS discovery's pure parts (daemon/server/dns_discovery.h): which names are resolved, the node
// list an answer makes, and a round that keeps the last good answer when a name fails. A fake
// resolver stands in for DNS.
#include "daemon/server/dns_discovery.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qpool::server {
namespace {

using ::testing::ElementsAre;

class FakeResolver : public Resolver {
 public:
  absl::StatusOr<std::vector<std::string>> Resolve(const std::string& host) override {
    calls++;
    auto it = answers.find(host);
    if (it == answers.end()) return absl::NotFoundError("resolve " + host + ": no such name");
    return it->second;
  }
  DnsAnswers answers;
  int calls = 0;
};

config::Config DiscoveryConfig() {
  config::Config config;
  config.rest.listen = {};
  config.upstream.nodes = {{"qdrant.headless", 6334}, {"10.0.0.9", 6334}, {"::1", 6334}};
  config.upstream.dns_refresh = absl::Seconds(5);
  return config;
}

std::vector<std::string> Names(const std::vector<NodeSpec>& specs) {
  std::vector<std::string> names;
  for (const NodeSpec& spec : specs) names.push_back(spec.name);
  return names;
}

TEST(DnsDiscoveryTest, IpLiteralsAreNeverResolved) {
  EXPECT_TRUE(IsIpLiteral("127.0.0.1"));
  EXPECT_TRUE(IsIpLiteral("::1"));
  EXPECT_TRUE(IsIpLiteral("fd00::5"));
  EXPECT_FALSE(IsIpLiteral("localhost"));
  EXPECT_FALSE(IsIpLiteral("qdrant-0.qdrant.svc"));
  EXPECT_THAT(NamesToResolve(DiscoveryConfig()), ElementsAre("qdrant.headless"));
}

TEST(DnsDiscoveryTest, NothingIsResolvedWhileDiscoveryIsOff) {
  config::Config config = DiscoveryConfig();
  config.upstream.dns_refresh = absl::ZeroDuration();
  EXPECT_TRUE(NamesToResolve(config).empty());
  const DnsAnswers answers = {{"qdrant.headless", {"10.0.0.1", "10.0.0.2"}}};
  EXPECT_THAT(Names(ExpandNodes(config, answers)),
              ElementsAre("qdrant.headless:6334", "10.0.0.9:6334", "[::1]:6334"));
}

TEST(DnsDiscoveryTest, ANameBecomesOneNodePerAddress) {
  const DnsAnswers answers = {{"qdrant.headless", {"10.0.0.1", "10.0.0.2", "fd00::3"}}};
  const std::vector<NodeSpec> specs = ExpandNodes(DiscoveryConfig(), answers);
  EXPECT_THAT(Names(specs), ElementsAre("10.0.0.1:6334", "10.0.0.2:6334", "[fd00::3]:6334",
                                        "10.0.0.9:6334", "[::1]:6334"));
  // The expanded nodes keep their config entry: its TLS settings and server name apply.
  EXPECT_EQ(specs[0].config_index, 0u);
  EXPECT_EQ(specs[2].config_index, 0u);
  EXPECT_EQ(specs[3].config_index, 1u);
}

TEST(DnsDiscoveryTest, ANameWithoutAnAnswerStaysAsWritten) {
  EXPECT_THAT(Names(ExpandNodes(DiscoveryConfig(), {})),
              ElementsAre("qdrant.headless:6334", "10.0.0.9:6334", "[::1]:6334"));
}

TEST(DnsDiscoveryTest, TheRestEndpointFollowsTheAddress) {
  config::Config config = DiscoveryConfig();
  config.rest.listen = {"127.0.0.1", 0};
  config.upstream.nodes = {{"qdrant.headless", 6334}};
  const DnsAnswers answers = {{"qdrant.headless", {"10.0.0.1", "10.0.0.2"}}};
  const std::vector<NodeSpec> specs = ExpandNodes(config, answers);
  ASSERT_EQ(specs.size(), 2u);
  EXPECT_EQ(specs[1].grpc.ToString(), "10.0.0.2:6334");
  EXPECT_EQ(specs[1].rest.ToString(), "10.0.0.2:6333");
}

TEST(DnsDiscoveryTest, ARoundReportsAChangedAnswer) {
  FakeResolver resolver;
  resolver.answers = {{"qdrant.headless", {"10.0.0.1"}}};
  bool changed = false;
  DnsAnswers first = DnsDiscovery::ResolveAll(resolver, {"qdrant.headless"}, {}, &changed);
  EXPECT_TRUE(changed);
  DnsDiscovery::ResolveAll(resolver, {"qdrant.headless"}, first, &changed);
  EXPECT_FALSE(changed);
  resolver.answers["qdrant.headless"] = {"10.0.0.1", "10.0.0.2"};
  DnsAnswers second = DnsDiscovery::ResolveAll(resolver, {"qdrant.headless"}, first, &changed);
  EXPECT_TRUE(changed);
  EXPECT_THAT(second["qdrant.headless"], ElementsAre("10.0.0.1", "10.0.0.2"));
}

TEST(DnsDiscoveryTest, AFailedResolutionKeepsTheLastGoodAnswer) {
  FakeResolver resolver;
  const DnsAnswers previous = {{"qdrant.headless", {"10.0.0.1", "10.0.0.2"}}};
  bool changed = true;
  DnsAnswers next = DnsDiscovery::ResolveAll(resolver, {"qdrant.headless"}, previous, &changed);
  EXPECT_FALSE(changed);
  EXPECT_EQ(next, previous);
  EXPECT_EQ(resolver.calls, 1);
}

TEST(DnsDiscoveryTest, TheSystemResolverFindsLocalhostOnLoopback) {
  absl::StatusOr<std::vector<std::string>> addresses = SystemResolver()->Resolve("localhost");
  ASSERT_TRUE(addresses.ok()) << addresses.status();
  ASSERT_FALSE(addresses->empty());
  for (const std::string& address : *addresses) {
    EXPECT_TRUE(address == "127.0.0.1" || address == "::1") << address;
  }
}

}  // namespace
}  // namespace qpool::server
