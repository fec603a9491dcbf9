// DNS discovery of Qdrant nodes (upstream.dns_refresh, docs/operations.md "DNS discovery"): a node
// given by name (a Kubernetes headless Service: one A/AAAA record per pod) becomes one node per
// address it resolves to, and follows the answer as it changes.
//
//   auto discovery = DnsDiscovery(resolver, [&] { return proxy_config(); },
//                                 [&](DnsAnswers answers) { proxy.ApplyDnsAnswers(answers); });
//   discovery.Start();    // the "qpool-dns" thread: resolves every upstream.dns_refresh
//   discovery.Nudge();    // a connect failed: resolve again soon (at most once a second)
//   discovery.Stop();
//
// Resolution runs on the discovery thread, never on an I/O worker. The pure parts (which names to
// resolve, what node list an answer makes) are free functions, and the resolver is a seam, so
// unit tests need no DNS server.
//
// Thread-safety: Start and Stop from one controlling thread; Nudge from any thread. The callbacks
// run on the discovery thread.
#ifndef QPOOL_DAEMON_SERVER_DNS_DISCOVERY_H_
#define QPOOL_DAEMON_SERVER_DNS_DISCOVERY_H_

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "daemon/config/config.h"

namespace qpool::server {

// Turns a host name into addresses. The seam between discovery and the system's resolver.
class Resolver {
 public:
  virtual ~Resolver() = default;
  // The IPv4 and IPv6 addresses `host` resolves to now, as literals ("10.0.0.5", "::1"), sorted
  // and without duplicates; an error (kNotFound, kUnavailable) names the host and the reason.
  // Blocks: never call it on an I/O worker.
  virtual absl::StatusOr<std::vector<std::string>> Resolve(const std::string& host) = 0;
};

// getaddrinfo(3) (AF_UNSPEC, SOCK_STREAM): /etc/hosts, then DNS, as nsswitch.conf says.
std::unique_ptr<Resolver> SystemResolver();

// True for an IPv4 or IPv6 literal: such a host is never resolved.
bool IsIpLiteral(const std::string& host);

// The last good answer per name.
using DnsAnswers = std::map<std::string, std::vector<std::string>>;

// One node of the node set: what the workers connect to.
struct NodeSpec {
  config::NodeAddress grpc;  // empty host: none (REST-only)
  config::NodeAddress rest;  // empty host: none (rest.listen off)
  std::string name;          // "host:port": logs, metrics, /pool
  size_t config_index = 0;   // the upstream.nodes entry it comes from (TLS settings, SNI)
};

// The names discovery resolves: with upstream.dns_refresh above 0, the hosts of upstream.nodes
// (or, REST-only, of upstream.rest_nodes) that are not IP literals; none otherwise. Sorted, unique.
std::vector<std::string> NamesToResolve(const config::Config& config);

// The node set of `config` given `answers`: each node whose host has an answer becomes one node
// per address (config order, then address order), named "address:port"; its REST endpoint is the
// same address with the REST port when the REST node has the same host (the default, each gRPC
// host on 6333), else the REST node as written. A node without an answer (a literal, discovery
// off, or a name that never resolved) stays as written, resolved at connect time.
std::vector<NodeSpec> ExpandNodes(const config::Config& config, const DnsAnswers& answers);

// The discovery thread.
class DnsDiscovery {
 public:
  // `config()` returns the config in force (its upstream.dns_refresh and names are re-read on
  // each round). `on_change(answers)` runs when an answer differs from the last one given; a
  // name that fails to resolve keeps its last answer (a DNS hiccup never empties the node set).
  // `resolver` must outlive the discovery.
  DnsDiscovery(Resolver& resolver, std::function<std::shared_ptr<const config::Config>()> config,
               std::function<void(const DnsAnswers&)> on_change, DnsAnswers initial);
  ~DnsDiscovery();

  DnsDiscovery(const DnsDiscovery&) = delete;
  DnsDiscovery& operator=(const DnsDiscovery&) = delete;

  void Start();
  void Stop();
  // Resolve again soon: no later than a second after the previous round.
  void Nudge();

  // One round, on the caller's thread: resolves every name and returns the new answers, and
  // whether they differ from `previous`. Failed names keep their previous answer and are logged.
  static DnsAnswers ResolveAll(Resolver& resolver, const std::vector<std::string>& names,
                               const DnsAnswers& previous, bool* changed);

  // The least time between two rounds, whatever nudges them.
  static constexpr absl::Duration kMinInterval = absl::Seconds(1);

 private:
  void Run();

  Resolver& resolver_;
  const std::function<std::shared_ptr<const config::Config>()> config_;
  const std::function<void(const DnsAnswers&)> on_change_;
  DnsAnswers answers_;  // discovery thread only (after Start)
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;    // guarded by mu_
  bool nudged_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_DNS_DISCOVERY_H_
