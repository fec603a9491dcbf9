#include "daemon/server/dns_discovery.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace qpool::server {
namespace {

class GetaddrinfoResolver : public Resolver {
 public:
  absl::StatusOr<std::vector<std::string>> Resolve(const std::string& host) override {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* result = nullptr;
    const int error = getaddrinfo(host.c_str(), nullptr, &hints, &result);
    if (error != 0) {
      const std::string why = error == EAI_SYSTEM ? std::strerror(errno) : gai_strerror(error);
      if (error == EAI_NONAME || error == EAI_NODATA) {
        return absl::NotFoundError(absl::StrCat("resolve ", host, ": ", why));
      }
      return absl::UnavailableError(absl::StrCat("resolve ", host, ": ", why));
    }
    std::set<std::string> addresses;
    for (const addrinfo* info = result; info != nullptr; info = info->ai_next) {
      char text[INET6_ADDRSTRLEN] = {};
      const void* address = nullptr;
      if (info->ai_family == AF_INET) {
        address = &reinterpret_cast<const sockaddr_in*>(info->ai_addr)->sin_addr;
      } else if (info->ai_family == AF_INET6) {
        address = &reinterpret_cast<const sockaddr_in6*>(info->ai_addr)->sin6_addr;
      }
      if (address != nullptr && inet_ntop(info->ai_family, address, text, sizeof(text))) {
        addresses.insert(text);
      }
    }
    freeaddrinfo(result);
    if (addresses.empty()) {
      return absl::NotFoundError(absl::StrCat("resolve ", host, ": no IPv4 or IPv6 address"));
    }
    return std::vector<std::string>(addresses.begin(), addresses.end());
  }
};

// The host discovery resolves for node entry `i`: its gRPC host, or REST-only its REST host.
const config::NodeAddress& PrimaryOf(const config::Config& config, size_t i) {
  return i < config.upstream.nodes.size() ? config.upstream.nodes[i]
                                          : config.upstream.rest_nodes[i];
}

}  // namespace

std::unique_ptr<Resolver> SystemResolver() { return std::make_unique<GetaddrinfoResolver>(); }

bool IsIpLiteral(const std::string& host) {
  in_addr v4;
  in6_addr v6;
  return inet_pton(AF_INET, host.c_str(), &v4) == 1 || inet_pton(AF_INET6, host.c_str(), &v6) == 1;
}

std::vector<std::string> NamesToResolve(const config::Config& config) {
  std::set<std::string> names;
  if (config.upstream.dns_refresh <= absl::ZeroDuration()) return {};
  const size_t count = config.upstream.nodes.empty() ? config.upstream.rest_nodes.size()
                                                     : config.upstream.nodes.size();
  for (size_t i = 0; i < count; ++i) {
    const std::string& host = PrimaryOf(config, i).host;
    if (!host.empty() && !IsIpLiteral(host)) names.insert(host);
  }
  return std::vector<std::string>(names.begin(), names.end());
}

std::vector<NodeSpec> ExpandNodes(const config::Config& config, const DnsAnswers& answers) {
  const bool rest_on = !config.rest.listen.host.empty();
  const bool rest_only = config.upstream.nodes.empty();
  const size_t count = rest_only ? config.upstream.rest_nodes.size() : config.upstream.nodes.size();
  const bool discovery = config.upstream.dns_refresh > absl::ZeroDuration();
  std::vector<NodeSpec> specs;
  for (size_t i = 0; i < count; ++i) {
    NodeSpec written;
    written.config_index = i;
    if (!rest_only) written.grpc = config.upstream.nodes[i];
    if (rest_on) {
      if (!config.upstream.rest_nodes.empty()) {
        written.rest = config.upstream.rest_nodes[i];
      } else {
        written.rest = config::NodeAddress{config.upstream.nodes[i].host, 6333};
      }
    }
    const config::NodeAddress& primary = rest_only ? written.rest : written.grpc;
    auto answer = answers.find(primary.host);
    if (!discovery || primary.host.empty() || IsIpLiteral(primary.host) ||
        answer == answers.end() || answer->second.empty()) {
      written.name = rest_only ? written.rest.ToString() : written.grpc.ToString();
      specs.push_back(std::move(written));
      continue;
    }
    for (const std::string& address : answer->second) {
      NodeSpec spec;
      spec.config_index = i;
      if (!rest_only) spec.grpc = config::NodeAddress{address, written.grpc.port};
      if (rest_on) {
        // The REST endpoint follows the address when it is on the same host (the default).
        spec.rest = written.rest.host == primary.host
                        ? config::NodeAddress{address, written.rest.port}
                        : written.rest;
      }
      spec.name = rest_only ? spec.rest.ToString() : spec.grpc.ToString();
      specs.push_back(std::move(spec));
    }
  }
  return specs;
}

DnsDiscovery::DnsDiscovery(Resolver& resolver,
                           std::function<std::shared_ptr<const config::Config>()> config,
                           std::function<void(const DnsAnswers&)> on_change, DnsAnswers initial)
    : resolver_(resolver),
      config_(std::move(config)),
      on_change_(std::move(on_change)),
      answers_(std::move(initial)) {}

DnsDiscovery::~DnsDiscovery() { Stop(); }

void DnsDiscovery::Start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "qpool-dns");
    Run();
  });
}

void DnsDiscovery::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void DnsDiscovery::Nudge() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    nudged_ = true;
  }
  cv_.notify_all();
}

DnsAnswers DnsDiscovery::ResolveAll(Resolver& resolver, const std::vector<std::string>& names,
                                    const DnsAnswers& previous, bool* changed) {
  DnsAnswers next;
  for (const std::string& name : names) {
    absl::StatusOr<std::vector<std::string>> addresses = resolver.Resolve(name);
    auto before = previous.find(name);
    if (!addresses.ok() || addresses->empty()) {
      // Keep the last good answer: a DNS hiccup must not take nodes out of the set.
      SPDLOG_WARN("DNS discovery: {}; {}",
                  addresses.ok() ? absl::StrCat("resolve ", name, ": no address")
                                 : std::string(addresses.status().message()),
                  before != previous.end()
                      ? absl::StrCat("keeping ", absl::StrJoin(before->second, ", "))
                      : std::string("the node stays as written, resolved at connect time"));
      if (before != previous.end()) next[name] = before->second;
      continue;
    }
    if (before == previous.end() || before->second != *addresses) {
      SPDLOG_INFO("DNS discovery: {} -> {}", name, absl::StrJoin(*addresses, ", "));
    }
    next[name] = *std::move(addresses);
  }
  *changed = next != previous;
  return next;
}

void DnsDiscovery::Run() {
  auto last_round = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    const std::shared_ptr<const config::Config> config = config_();
    const absl::Duration refresh = config->upstream.dns_refresh;
    // Discovery off (a reload set dns_refresh to 0): look again every second for a reload that
    // turns it on.
    const auto period =
        absl::ToChronoNanoseconds(refresh > absl::ZeroDuration() ? refresh : kMinInterval);
    const auto min_next = last_round + absl::ToChronoNanoseconds(kMinInterval);
    const auto deadline = last_round + period;
    while (!stop_) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline || (nudged_ && now >= min_next)) break;
      cv_.wait_until(lock, nudged_ ? std::min(deadline, min_next) : deadline);
    }
    if (stop_) return;
    nudged_ = false;
    lock.unlock();
    const std::shared_ptr<const config::Config> now = config_();
    bool changed = false;
    if (now->upstream.dns_refresh > absl::ZeroDuration()) {
      DnsAnswers next = ResolveAll(resolver_, NamesToResolve(*now), answers_, &changed);
      if (changed) {
        answers_ = std::move(next);
        on_change_(answers_);
      }
    }
    last_round = std::chrono::steady_clock::now();
    lock.lock();
  }
}

}  // namespace qpool::server
