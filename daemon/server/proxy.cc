#include "daemon/server/proxy.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <condition_variable>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/auth/api_keys.h"
#include "daemon/config/loader.h"
#include "daemon/config/node_table.h"
#include "daemon/metrics/health_metrics.h"
#include "daemon/metrics/scrape.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/rest/rest_worker.h"
#include "daemon/server/dns_discovery.h"
#include "daemon/server/health_checker.h"
#include "daemon/server/proxy_counters.h"
#include "daemon/server/worker.h"
#include "daemon/server/worker_pools.h"
#include "daemon/tls/context_store.h"
#include "spdlog/spdlog.h"

namespace qpool::server {
namespace {

using boost::asio::ip::tcp;

// Opens `acceptor` on `endpoint` (SO_REUSEADDR) and starts listening.
boost::system::error_code Listen(tcp::acceptor& acceptor, const tcp::endpoint& endpoint) {
  boost::system::error_code ec;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(boost::asio::socket_base::max_listen_connections, ec);
  return ec;
}

// The REST endpoints' TLS contexts (ALPN http/1.1); null when REST is off.
absl::StatusOr<std::unique_ptr<tls::ContextStore>> RestTlsStore(const config::Config& config) {
  if (config.rest.listen.host.empty()) return std::unique_ptr<tls::ContextStore>();
  return tls::ContextStore::Create(config.upstream, "http/1.1", rest::RestNodesOf(config));
}

// Where a worker's answer to the admin thread lands. Shared with the posted handler, so an answer
// that comes after the admin thread gave up touches nothing freed.
struct Rendezvous {
  std::mutex mu;
  std::condition_variable cv;
  size_t answered = 0;                                                          // guarded by mu
  std::vector<std::optional<std::vector<metrics::NodePoolGauges>>> pools;       // guarded by mu
  std::vector<std::optional<std::vector<metrics::NodePoolGauges>>> rest_pools;  // guarded by mu
  std::vector<std::optional<std::vector<bool>>> drained;                        // guarded by mu
};

class ProxyImpl : public Proxy {
 public:
  ProxyImpl(std::shared_ptr<const config::Config> config,
            std::unique_ptr<tls::ContextStore> tls_store,
            std::unique_ptr<auth::ApiKeyStore> key_store,
            std::unique_ptr<tls::ContextStore> rest_tls_store, std::shared_ptr<Resolver> resolver,
            DnsAnswers answers)
      : config_(std::move(config)),
        live_config_(config_),
        tls_store_(std::move(tls_store)),
        key_store_(std::move(key_store)),
        rest_tls_store_(std::move(rest_tls_store)),
        resolver_(std::move(resolver)),
        answers_(std::move(answers)),
        health_metrics_(0),
        readiness_includes_upstream_(config_->admin.readiness_includes_upstream),
        max_client_connections_(config_->server.max_client_connections),
        drain_timeout_(absl::ToInt64Nanoseconds(config_->server.drain_timeout)) {
    // Node slots get their counters (gRPC and REST) as nodes take them (NextTable).
    for (uint32_t i = 0; i < config_->server.workers; ++i) {
      worker_metrics_.push_back(std::make_unique<metrics::WorkerMetrics>(0));
    }
    // The first node table: one slot per node (per address, for names DNS discovery resolved).
    table_ = std::make_shared<NodeTable>();
    absl::StatusOr<std::shared_ptr<const NodeTable>> first =
        NextTable(ExpandNodes(*config_, answers_), {}, tls_store_, rest_tls_store_);
    if (first.ok()) {
      table_ = *std::move(first);
    } else {
      // More than kMaxNodeSlots addresses: the first kMaxNodeSlots nodes serve.
      SPDLOG_ERROR("{}", first.status().ToString());
      std::vector<NodeSpec> specs = ExpandNodes(*config_, answers_);
      specs.resize(metrics::kMaxNodeSlots);
      table_ = *NextTable(specs, {}, tls_store_, rest_tls_store_);
    }
  }
  ~ProxyImpl() override { ShutdownNow(); }

  absl::Status Start() override;
  uint16_t port() const override { return port_.load(); }
  uint16_t rest_port() const override { return rest_port_.load(); }
  ProxyStats stats() const override {
    auto load = [](const auto& counter) { return counter.load(std::memory_order_relaxed); };
    ProxyStats stats;
    stats.accepted = load(counters_.downstream_accepted);
    stats.refused = load(counters_.downstream_refused);
    stats.protocol_errors = load(counters_.downstream_protocol_errors);
    stats.open = load(counters_.downstream_open);
    stats.calls_started = load(counters_.calls_started);
    stats.local_replies = load(counters_.local_replies);
    stats.transparent_retries = load(counters_.transparent_retries);
    stats.replay_bytes = load(counters_.replay_bytes);
    stats.buffered_bytes = load(counters_.buffered_bytes);
    for (size_t i = 0; i < kAbuseReasonCount; ++i) {
      stats.abuse.emplace_back(std::string(AbuseReasonName(static_cast<AbuseReason>(i))),
                               load(counters_.downstream_abuse[i]));
    }
    stats.header_list_size_rejections = load(counters_.downstream_header_limit_rejections[0]);
    stats.header_count_rejections = load(counters_.downstream_header_limit_rejections[1]);
    stats.handshake_timeouts = load(counters_.downstream_handshake_timeouts);
    stats.idle_timeouts = load(counters_.downstream_idle_timeouts);
    for (size_t i = 0; i < kStreamResetReasonCount; ++i) {
      stats.stream_resets.emplace_back(
          std::string(StreamResetReasonName(static_cast<StreamResetReason>(i))),
          load(counters_.downstream_stream_resets[i]));
    }
    return stats;
  }
  absl::Status Shutdown() override;
  void ShutdownNow() override;
  void MarkDraining() override { draining_.store(true, std::memory_order_relaxed); }
  void SetReadinessIncludesUpstream(bool include) override {
    readiness_includes_upstream_.store(include, std::memory_order_relaxed);
  }
  absl::Status Reconfigure(std::shared_ptr<const config::Config> config) override;
  // DNS discovery's answers changed (on the discovery thread): the node set follows.
  void ApplyDnsAnswers(const DnsAnswers& answers);

  // metrics::AdminBackend.
  bool Started() const override { return running_.load(std::memory_order_acquire); }
  std::string NotReadyReason() const override;
  bool Live(absl::Duration timeout) override;
  metrics::ScrapeInput Scrape(absl::Duration timeout) override;

 private:
  // Runs `fn(worker index, worker)` on every worker's thread and waits up to `timeout` for all to
  // answer; returns the rendezvous (answers so far). `fn` fills rendezvous->pools[i] under mu.
  std::shared_ptr<Rendezvous> AskWorkers(absl::Duration timeout,
                                         std::function<void(Rendezvous&, size_t, Worker&)> fn);

  // A listening socket (server.listen, or rest.listen) on workers_[0]'s thread. Accepted
  // connections go round robin to the workers, and count against server.max_client_connections
  // whichever protocol they speak.
  struct Listener {
    std::unique_ptr<tcp::acceptor> acceptor;  // null: off
    size_t next_worker = 0;
    bool rest = false;  // hands connections to Worker::Adopt as REST ones
  };
  void Accept(Listener& listener);
  void OnAccepted(Listener& listener, Worker& target, const boost::system::error_code& ec,
                  tcp::socket socket);
  // Closes both listeners; on workers_[0]'s thread.
  void CloseListeners();

  // The secrets thread: every upstream.secrets_poll_interval, re-reads the key and certificate
  // files that changed. Workers pick new keys up themselves; when a node's TLS material changed,
  // each worker is asked to recycle that node's connections (WorkerPools::RecycleTlsNodes).
  void StartSecretsThread();
  void StopSecretsThread();
  void RecycleTlsNodes(const tls::ContextStore* store, const std::vector<size_t>& nodes, bool rest);

  // upstream.rest_nodes (or each gRPC node's host on 6333) when rest.listen is on; else none.
  static std::vector<config::NodeAddress> RestNodes(const config::Config& config) {
    if (config.rest.listen.host.empty()) return {};
    return rest::RestNodesOf(config);
  }
  // The node table for `config`'s node list, from the current one: nodes still listed keep their
  // slot; new ones take a slot every worker has drained (or a new one), with fresh counters;
  // nodes no longer listed stay in their slot, inactive, until they drained. `drained`: per slot,
  // drained in every worker. kResourceExhausted past metrics::kMaxNodeSlots.
  // `tls_store` and `rest_tls_store` (null: REST off): the TLS contexts the new slots use.
  absl::StatusOr<std::shared_ptr<const NodeTable>> NextTable(
      const std::vector<NodeSpec>& specs, const std::vector<bool>& drained,
      const std::shared_ptr<tls::ContextStore>& tls_store,
      const std::shared_ptr<tls::ContextStore>& rest_tls_store);
  // Whether `specs` describe the active slots of `table` exactly.
  static bool SameNodes(const NodeTable& table, const std::vector<NodeSpec>& specs);
  // Hands `config`, `next` and the secrets to every worker (waits up to 5 s for all), and
  // restarts the health checks when `restart_health`. reconfigure_mu_ held.
  void PostToWorkers(const std::shared_ptr<const config::Config>& config,
                     const std::shared_ptr<const NodeTable>& next, UpstreamSecrets secrets,
                     bool restart_health);
  // Resolves the names of `config` that answers_ lacks (on the calling thread, never a worker).
  void ResolveMissing(const config::Config& config);
  // Per slot: true when every worker answered that it holds nothing for the slot any more.
  std::vector<bool> DrainedEverywhere(size_t slots);
  // Starts a health checker over the active gRPC slots of `table` (the old one, if any, stops
  // and is kept: workers may still post probe results to its io_context).
  void RestartHealthChecker(const config::Config& config, const NodeTable& table);
  std::shared_ptr<const NodeTable> table() const {
    std::lock_guard<std::mutex> lock(table_mu_);
    return table_;
  }
  // The config in force and the secrets loaded for it, taken together under table_mu_: where a
  // reload or a DNS answer starts from.
  struct InForce {
    std::shared_ptr<const config::Config> config;
    std::shared_ptr<tls::ContextStore> tls_store;
    std::shared_ptr<tls::ContextStore> rest_tls_store;
    std::shared_ptr<auth::ApiKeyStore> key_store;
  };
  InForce in_force() const {
    std::lock_guard<std::mutex> lock(table_mu_);
    return InForce{live_config_, tls_store_, rest_tls_store_, key_store_};
  }

  // The start-up config: what cannot change live (listen addresses, workers).
  const std::shared_ptr<const config::Config> config_;
  // Reconfigure() calls, one at a time (the main thread's reload, DNS discovery).
  std::mutex reconfigure_mu_;
  // The config and node table in force, and the secrets the workers use; replaced by
  // Reconfigure(). Stores a reload replaced are kept (graveyard): a worker may still point at
  // them until it took the new ones, and a removed node's pool still connects with its store.
  mutable std::mutex table_mu_;
  std::shared_ptr<const config::Config> live_config_;  // guarded by table_mu_
  std::shared_ptr<const NodeTable> table_;             // guarded by table_mu_
  std::shared_ptr<tls::ContextStore> tls_store_;       // guarded by table_mu_ after Start()
  std::shared_ptr<auth::ApiKeyStore> key_store_;       // guarded by table_mu_ after Start()
  // The REST endpoints' TLS contexts (ALPN http/1.1); null: REST off. Guarded by table_mu_
  // after Start().
  std::shared_ptr<tls::ContextStore> rest_tls_store_;
  std::vector<std::shared_ptr<void>> retired_secrets_;  // guarded by table_mu_
  uint64_t generations_ = 0;                            // reconfigure_mu_ (or constructor)
  // DNS discovery (upstream.dns_refresh): the resolver seam, the answers the node table was built
  // from (reconfigure_mu_), and the discovery thread (made at Start, its thread started while
  // discovery is on).
  const std::shared_ptr<Resolver> resolver_;
  DnsAnswers answers_;
  std::unique_ptr<DnsDiscovery> dns_;
  std::atomic<DnsDiscovery*> dns_ptr_{nullptr};  // dns_, for the workers' connect-failure hook
  std::thread secrets_thread_;
  std::mutex secrets_mu_;
  std::condition_variable secrets_cv_;
  bool secrets_stop_ = false;  // guarded by secrets_mu_
  ProxyCounters counters_;
  // One per worker, written only by its worker; they outlive the workers (admin reads them).
  std::vector<std::unique_ptr<metrics::WorkerMetrics>> worker_metrics_;
  // Written by the health thread; read by the workers and the admin thread. Outlives both.
  metrics::HealthMetrics health_metrics_;
  std::atomic<bool> running_{false};   // workers started, not yet stopped
  std::atomic<bool> draining_{false};  // MarkDraining() or Shutdown() began
  std::atomic<bool> readiness_includes_upstream_;
  std::atomic<uint32_t> max_client_connections_;  // server.max_client_connections, live
  std::atomic<int64_t> drain_timeout_;            // server.drain_timeout, live (absl int64 ns)
  // Guards workers_ against the admin thread while Start() fills it and ShutdownNow() clears it;
  // held only to post, never while waiting.
  mutable std::mutex workers_mu_;
  std::vector<std::unique_ptr<Worker>> workers_;
  // Stopped before the workers stop and freed after them (ShutdownNow): workers post probe
  // results to its io_context.
  std::unique_ptr<HealthChecker> health_checker_;
  // Checkers a node set change replaced, stopped; freed after the workers (see above).
  std::vector<std::unique_ptr<HealthChecker>> retired_checkers_;
  Listener listener_;  // gRPC; its acceptor is not open when REST-only
  std::atomic<uint16_t> port_{0};
  Listener rest_listener_{nullptr, 0, true};
  std::atomic<uint16_t> rest_port_{0};
  bool started_ = false;
  bool stopped_ = false;

  std::mutex mu_;
  std::condition_variable drained_cv_;
  uint32_t workers_drained_ = 0;  // guarded by mu_
};

absl::Status ProxyImpl::Start() {
  if (started_) return absl::FailedPreconditionError("Start() called twice");
  started_ = true;
  const uint32_t count = config_->server.workers;
  {
    std::lock_guard<std::mutex> lock(workers_mu_);
    for (uint32_t i = 0; i < count; ++i) {
      workers_.push_back(std::make_unique<Worker>(
          config_, i, count, counters_, *worker_metrics_[i], &health_metrics_,
          UpstreamSecrets{tls_store_.get(), key_store_.get(), rest_tls_store_.get()}, table_));
      // A node that refuses connections may have moved: DNS discovery looks again soon.
      workers_.back()->pools().SetConnectFailureHook([this] {
        if (DnsDiscovery* dns = dns_ptr_.load(std::memory_order_acquire)) dns->Nudge();
      });
    }
  }
  const config::NodeAddress& listen = config_->server.listen;
  boost::system::error_code ec;
  // REST-only (no gRPC node): no gRPC listener, port() stays 0.
  const bool grpc = !config_->upstream.nodes.empty();
  const auto address = boost::asio::ip::make_address(listen.host, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("server.listen: ", listen.host, " is not an IP address: ", ec.message()));
  }
  auto acceptor = std::make_unique<tcp::acceptor>(workers_[0]->io());
  if (grpc) {
    if (ec = Listen(*acceptor, tcp::endpoint(address, listen.port)); ec) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", listen.ToString(), ": ", ec.message()));
    }
    port_ = acceptor->local_endpoint().port();
  }
  listener_.acceptor = std::move(acceptor);
  if (const config::NodeAddress& rest = config_->rest.listen; !rest.host.empty()) {
    const auto rest_address = boost::asio::ip::make_address(rest.host, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("rest.listen: ", rest.host, " is not an IP address: ", ec.message()));
    }
    auto rest_acceptor = std::make_unique<tcp::acceptor>(workers_[0]->io());
    if (ec = Listen(*rest_acceptor, tcp::endpoint(rest_address, rest.port)); ec) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", rest.ToString(), " (rest.listen): ", ec.message()));
    }
    rest_port_ = rest_acceptor->local_endpoint().port();
    rest_listener_.acceptor = std::move(rest_acceptor);
  }
  for (auto& worker : workers_) worker->Start();
  std::vector<Worker*> workers;
  for (auto& worker : workers_) workers.push_back(worker.get());
  {
    std::lock_guard<std::mutex> lock(workers_mu_);
    RestartHealthChecker(*config_, *table_);
  }
  if (grpc) workers_[0]->Post([this] { Accept(listener_); });
  if (rest_listener_.acceptor != nullptr) workers_[0]->Post([this] { Accept(rest_listener_); });
  StartSecretsThread();
  running_.store(true, std::memory_order_release);
  // DNS discovery: its thread runs while upstream.dns_refresh is above 0 (a reload may turn it
  // on later); connect failures nudge it.
  dns_ = std::make_unique<DnsDiscovery>(
      *resolver_,
      [this] {
        std::lock_guard<std::mutex> lock(table_mu_);
        return live_config_;
      },
      [this](const DnsAnswers& answers) { ApplyDnsAnswers(answers); }, answers_);
  dns_ptr_.store(dns_.get(), std::memory_order_release);
  if (config_->upstream.dns_refresh > absl::ZeroDuration()) dns_->Start();
  return absl::OkStatus();
}

void ProxyImpl::StartSecretsThread() {
  if (secrets_thread_.joinable()) return;
  std::shared_ptr<const config::Config> config;
  bool any_tls = false;
  {
    std::lock_guard<std::mutex> lock(table_mu_);
    config = live_config_;
    any_tls =
        tls_store_->any_enabled() || (rest_tls_store_ != nullptr && rest_tls_store_->any_enabled());
  }
  const bool files = !config->upstream.api_key_file.empty() ||
                     !config->upstream.read_only_api_key_file.empty() || any_tls;
  if (!files) return;
  secrets_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "qpool-secrets");
    std::unique_lock<std::mutex> lock(secrets_mu_);
    for (;;) {
      std::shared_ptr<tls::ContextStore> tls_store;
      std::shared_ptr<tls::ContextStore> rest_tls_store;
      std::shared_ptr<auth::ApiKeyStore> key_store;
      absl::Duration interval;
      {
        // The stores in force now (a reload may have replaced them), and the poll interval.
        std::lock_guard<std::mutex> table_lock(table_mu_);
        tls_store = tls_store_;
        rest_tls_store = rest_tls_store_;
        key_store = key_store_;
        interval = live_config_->upstream.secrets_poll_interval;
      }
      if (secrets_cv_.wait_for(lock, absl::ToChronoNanoseconds(interval),
                               [this] { return secrets_stop_; })) {
        return;
      }
      lock.unlock();
      key_store->Reload();
      std::vector<size_t> replaced;
      if (tls_store->Reload(&replaced) > 0) {
        RecycleTlsNodes(tls_store.get(), replaced, /*rest=*/false);
      }
      replaced.clear();
      if (rest_tls_store != nullptr && rest_tls_store->Reload(&replaced) > 0) {
        RecycleTlsNodes(rest_tls_store.get(), replaced, /*rest=*/true);
      }
      lock.lock();
    }
  });
}

void ProxyImpl::RecycleTlsNodes(const tls::ContextStore* store, const std::vector<size_t>& nodes,
                                bool rest) {
  std::lock_guard<std::mutex> lock(workers_mu_);
  for (auto& worker : workers_) {
    Worker* target = worker.get();
    // `store` is only compared: a store a reload replaced is kept (retired_secrets_) anyway.
    target->Post(
        [target, store, nodes, rest] { target->pools().RecycleTlsNodes(store, nodes, rest); });
  }
}

void ProxyImpl::StopSecretsThread() {
  {
    std::lock_guard<std::mutex> lock(secrets_mu_);
    secrets_stop_ = true;
  }
  secrets_cv_.notify_all();
  if (secrets_thread_.joinable()) secrets_thread_.join();
}

void ProxyImpl::Accept(Listener& listener) {
  Worker& target = *workers_[listener.next_worker];
  listener.next_worker = (listener.next_worker + 1) % workers_.size();
  listener.acceptor->async_accept(
      target.io(),
      [this, &listener, &target](const boost::system::error_code& ec, tcp::socket socket) {
        OnAccepted(listener, target, ec, std::move(socket));
      });
}

void ProxyImpl::OnAccepted(Listener& listener, Worker& target, const boost::system::error_code& ec,
                           tcp::socket socket) {
  if (ec == boost::asio::error::operation_aborted || !listener.acceptor->is_open()) return;
  if (ec) {
    // EMFILE and friends: log, and keep accepting; the kernel keeps the connection queued.
    SPDLOG_WARN("{}accept failed: {}", listener.rest ? "REST " : "", ec.message());
  } else {
    // One bound on app connections, whichever protocol they speak.
    const bool refuse =
        counters_.downstream_open.load(std::memory_order_relaxed) >=
        static_cast<int64_t>(max_client_connections_.load(std::memory_order_relaxed));
    if (refuse) {
      counters_.downstream_refused.fetch_add(1, std::memory_order_relaxed);
      SPDLOG_DEBUG("refusing a client connection: server.max_client_connections reached");
    } else {
      counters_.downstream_accepted.fetch_add(1, std::memory_order_relaxed);
    }
    // The socket belongs to the target worker's io_context; hand it over on that thread.
    auto shared_socket = std::make_shared<tcp::socket>(std::move(socket));
    target.Post([&target, shared_socket, refuse, rest = listener.rest] {
      target.Adopt(std::move(*shared_socket), refuse, rest);
    });
  }
  Accept(listener);
}

void ProxyImpl::CloseListeners() {
  boost::system::error_code ignored;
  for (Listener* listener : {&listener_, &rest_listener_}) {
    if (listener->acceptor != nullptr) listener->acceptor->close(ignored);
  }
}

absl::Status ProxyImpl::Shutdown() {
  if (!started_ || stopped_) return absl::OkStatus();
  draining_.store(true, std::memory_order_relaxed);
  const absl::Duration drain_timeout = absl::Nanoseconds(drain_timeout_.load());
  SPDLOG_INFO("draining: no new connections; waiting up to {} for calls in flight",
              absl::FormatDuration(drain_timeout));
  workers_[0]->Post([this] { CloseListeners(); });
  for (auto& worker : workers_) {
    Worker* w = worker.get();
    w->Post([this, w] {
      w->BeginDrain([this] {
        std::lock_guard<std::mutex> lock(mu_);
        workers_drained_++;
        drained_cv_.notify_all();
      });
    });
  }
  bool drained;
  {
    std::unique_lock<std::mutex> lock(mu_);
    drained = drained_cv_.wait_for(lock, absl::ToChronoNanoseconds(drain_timeout),
                                   [this] { return workers_drained_ == workers_.size(); });
  }
  ShutdownNow();
  if (!drained) {
    return absl::DeadlineExceededError(
        "some calls were still in flight at server.drain_timeout and were cut off");
  }
  return absl::OkStatus();
}

void ProxyImpl::ShutdownNow() {
  if (!started_ || stopped_) return;
  stopped_ = true;
  running_.store(false, std::memory_order_release);
  if (!workers_.empty()) {
    workers_[0]->Post([this] { CloseListeners(); });
  }
  // The health thread stops first (it posts probes to the workers); it is freed only after the
  // workers are gone, since they may still post results to its io_context.
  StopSecretsThread();
  // Before the workers: it posts node set changes to them. Stop() joins; dns_ itself is freed
  // with the proxy, after the workers, whose hook may still point at it.
  if (dns_ != nullptr) dns_->Stop();
  {
    // Not while a Reconfigure() runs: it may be replacing the checker.
    std::lock_guard<std::mutex> lock(workers_mu_);
    if (health_checker_ != nullptr) health_checker_->Stop();
  }
  for (auto& worker : workers_) worker->Stop();
  listener_.acceptor.reset();
  rest_listener_.acceptor.reset();
  {
    std::lock_guard<std::mutex> lock(workers_mu_);
    workers_.clear();
  }
  health_checker_.reset();
  retired_checkers_.clear();
}

std::string ProxyImpl::NotReadyReason() const {
  if (!running_.load(std::memory_order_acquire)) return draining_ ? "stopped" : "starting";
  if (draining_.load(std::memory_order_relaxed)) return "draining";
  // By default readiness means "qpoold can serve": a Qdrant outage must not take every app pod
  // behind qpool out of its Service at once (docs/operations.md, "Readiness").
  if (!readiness_includes_upstream_.load(std::memory_order_relaxed)) return "";
  std::vector<const metrics::WorkerMetrics*> workers;
  for (const auto& worker : worker_metrics_) workers.push_back(worker.get());
  const std::shared_ptr<const NodeTable> nodes = table();
  std::vector<std::string> names;
  for (size_t n = 0; n < nodes->slots.size(); ++n) {
    const NodeSlot& slot = nodes->slots[n];
    if (!slot.active || slot.grpc.host.empty()) continue;
    if (metrics::NodeUsable(workers, n) && health_metrics_.healthy(n)) return "";
    names.push_back(slot.name);
  }
  // REST-only (no gRPC node): no probes run and readiness follows the listener alone.
  if (names.empty()) return "";
  return absl::StrCat("no usable upstream node: none of ", absl::StrJoin(names, ", "),
                      " is both healthy (health checks) and reachable (a connection up, or the "
                      "last connect did not fail)");
}

std::shared_ptr<Rendezvous> ProxyImpl::AskWorkers(
    absl::Duration timeout, std::function<void(Rendezvous&, size_t, Worker&)> fn) {
  auto rendezvous = std::make_shared<Rendezvous>();
  size_t asked = 0;
  {
    std::lock_guard<std::mutex> lock(workers_mu_);
    rendezvous->pools.resize(workers_.size());
    rendezvous->rest_pools.resize(workers_.size());
    rendezvous->drained.resize(workers_.size());
    for (size_t i = 0; i < workers_.size(); ++i) {
      Worker* worker = workers_[i].get();
      worker->Post([rendezvous, fn, i, worker] {
        std::lock_guard<std::mutex> lock(rendezvous->mu);
        fn(*rendezvous, i, *worker);
        rendezvous->answered++;
        rendezvous->cv.notify_all();
      });
      asked++;
    }
  }
  std::unique_lock<std::mutex> lock(rendezvous->mu);
  rendezvous->cv.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                          [&] { return rendezvous->answered == asked; });
  return rendezvous;
}

bool ProxyImpl::Live(absl::Duration timeout) {
  if (!running_.load(std::memory_order_acquire)) return true;  // the admin thread answers
  auto rendezvous = AskWorkers(timeout, [](Rendezvous&, size_t, Worker&) {});
  std::lock_guard<std::mutex> lock(rendezvous->mu);
  return rendezvous->answered == rendezvous->pools.size();
}

metrics::ScrapeInput ProxyImpl::Scrape(absl::Duration timeout) {
  metrics::ScrapeInput input;
  const std::shared_ptr<const NodeTable> nodes = table();
  for (const auto& worker : worker_metrics_) input.workers.push_back(worker.get());
  input.health = &health_metrics_;
  input.downstream = stats();
  input.started = running_.load(std::memory_order_acquire);
  input.draining = draining_.load(std::memory_order_relaxed);
  input.ready = NotReadyReason().empty();
  metrics::ScrapeInput::WorkerPools raw_pools;
  metrics::ScrapeInput::WorkerPools raw_rest_pools;
  if (input.started) {
    // Gauges are read where they live, on each worker's thread; the counters above need no
    // worker.
    auto rendezvous = AskWorkers(timeout, [](Rendezvous& r, size_t i, Worker& worker) {
      r.pools[i] = worker.pools().PoolGauges();
      if (worker.rest() != nullptr) r.rest_pools[i] = worker.pools().RestPoolGauges();
    });
    std::lock_guard<std::mutex> lock(rendezvous->mu);
    raw_pools = rendezvous->pools;
    raw_rest_pools = rendezvous->rest_pools;
  }
  // The nodes shown: those in the node set, and removed ones some worker still drains. The
  // workers answer by slot; the scrape wants one dense list.
  const bool grpc = !config_->upstream.nodes.empty();
  const bool rest = !config_->rest.listen.host.empty();
  auto shown = [&](size_t s, const metrics::ScrapeInput::WorkerPools& pools) {
    if (nodes->slots[s].active) return true;
    for (const auto& worker : pools) {
      if (worker && s < worker->size() && (*worker)[s].present) return true;
    }
    return false;
  };
  input.pools.resize(raw_pools.size());
  input.rest_pools.resize(raw_rest_pools.size());
  for (size_t w = 0; w < raw_pools.size(); ++w) {
    if (raw_pools[w]) input.pools[w].emplace();
  }
  for (size_t w = 0; w < raw_rest_pools.size(); ++w) {
    if (raw_rest_pools[w]) input.rest_pools[w].emplace();
  }
  for (size_t s = 0; s < nodes->slots.size(); ++s) {
    const NodeSlot& slot = nodes->slots[s];
    if (grpc && !slot.grpc.host.empty() && shown(s, raw_pools)) {
      input.node_names.push_back(slot.name);
      input.node_slots.push_back(s);
      for (size_t w = 0; w < raw_pools.size(); ++w) {
        if (!raw_pools[w]) continue;
        input.pools[w]->push_back(s < raw_pools[w]->size() ? (*raw_pools[w])[s]
                                                           : metrics::NodePoolGauges{});
      }
    }
    if (rest && !slot.rest.host.empty() && shown(s, raw_rest_pools)) {
      input.rest_node_names.push_back(slot.rest.ToString());
      input.rest_node_slots.push_back(s);
      for (size_t w = 0; w < raw_rest_pools.size(); ++w) {
        if (!raw_rest_pools[w]) continue;
        input.rest_pools[w]->push_back(s < raw_rest_pools[w]->size() ? (*raw_rest_pools[w])[s]
                                                                     : metrics::NodePoolGauges{});
      }
    }
  }
  if (input.rest_node_names.empty()) input.rest_pools.clear();
  return input;
}

void ProxyImpl::RestartHealthChecker(const config::Config& config, const NodeTable& table) {
  std::vector<HealthChecker::ProbedNode> probed;
  for (size_t s = 0; s < table.slots.size(); ++s) {
    const NodeSlot& slot = table.slots[s];
    if (slot.active && !slot.grpc.host.empty()) probed.push_back({s, slot.name});
  }
  std::vector<Worker*> workers;
  for (auto& worker : workers_) workers.push_back(worker.get());
  if (health_checker_ != nullptr) {
    health_checker_->Stop();
    retired_checkers_.push_back(std::move(health_checker_));
  }
  health_checker_ = std::make_unique<HealthChecker>(config, health_metrics_, std::move(workers),
                                                    std::move(probed));
  health_checker_->Start();
}

std::vector<bool> ProxyImpl::DrainedEverywhere(size_t slots) {
  auto rendezvous = AskWorkers(absl::Seconds(2), [](Rendezvous& r, size_t i, Worker& worker) {
    r.drained[i] = worker.pools().DrainedSlots();
  });
  std::lock_guard<std::mutex> lock(rendezvous->mu);
  std::vector<bool> drained(slots, true);
  for (const auto& answer : rendezvous->drained) {
    for (size_t s = 0; s < slots; ++s) {
      // A worker that did not answer in time may still drain anything.
      if (!answer || s >= answer->size() || !(*answer)[s]) drained[s] = false;
    }
  }
  return drained;
}

bool ProxyImpl::SameNodes(const NodeTable& table, const std::vector<NodeSpec>& specs) {
  size_t active = 0;
  for (const NodeSlot& slot : table.slots) {
    if (!slot.active) continue;
    if (active >= specs.size()) return false;
    const NodeSpec& spec = specs[active++];
    if (slot.grpc.ToString() != spec.grpc.ToString() ||
        slot.rest.ToString() != spec.rest.ToString() || slot.tls_index != spec.config_index) {
      return false;
    }
  }
  return active == specs.size();
}

absl::StatusOr<std::shared_ptr<const NodeTable>> ProxyImpl::NextTable(
    const std::vector<NodeSpec>& specs, const std::vector<bool>& drained,
    const std::shared_ptr<tls::ContextStore>& tls_store,
    const std::shared_ptr<tls::ContextStore>& rest_tls_store) {
  const std::shared_ptr<const NodeTable> current = table_;  // the caller serializes writers
  auto next = std::make_shared<NodeTable>(*current);
  for (NodeSlot& slot : next->slots) slot.active = false;
  std::vector<size_t> fresh;  // slots given to a new node: their counters start over
  for (const NodeSpec& spec : specs) {
    NodeSlot wanted;
    wanted.grpc = spec.grpc;
    wanted.rest = spec.rest;
    wanted.name = spec.name;
    wanted.tls_index = spec.config_index;
    if (tls_store->any_enabled() && !wanted.grpc.host.empty()) wanted.tls = tls_store;
    if (rest_tls_store != nullptr && rest_tls_store->any_enabled() && !wanted.rest.host.empty()) {
      wanted.rest_tls = rest_tls_store;
    }
    auto same = [&](const NodeSlot& slot) {
      return slot.grpc.ToString() == wanted.grpc.ToString() &&
             slot.rest.ToString() == wanted.rest.ToString();
    };
    // The same node, still in the set: keeps its slot, connections and counters.
    size_t found = next->slots.size();
    for (size_t s = 0; s < current->slots.size(); ++s) {
      if (current->slots[s].active && !next->slots[s].active && same(current->slots[s])) {
        found = s;
        break;
      }
    }
    if (found == next->slots.size()) {
      // A new node: a slot nobody uses any more (not active before or now, drained everywhere),
      // else a new one.
      for (size_t s = 0; s < current->slots.size(); ++s) {
        const bool free = !current->slots[s].active && !next->slots[s].active &&
                          s < drained.size() && drained[s] &&
                          std::find(fresh.begin(), fresh.end(), s) == fresh.end();
        if (free) {
          found = s;
          break;
        }
      }
      if (found == next->slots.size()) {
        if (next->slots.size() >= metrics::kMaxNodeSlots) {
          return absl::ResourceExhaustedError(
              absl::StrCat("more than ", metrics::kMaxNodeSlots,
                           " upstream nodes, counting removed ones still draining: ", wanted.name,
                           " was not added"));
        }
        next->slots.emplace_back();
      }
      wanted.generation = ++generations_;
      fresh.push_back(found);
    } else {
      wanted.generation = current->slots[found].generation;
    }
    wanted.active = true;
    next->slots[found] = std::move(wanted);
  }
  // Fresh counters and a healthy verdict for the new nodes; nobody writes those slots now (free,
  // or new). Slots past the counters' end (the first table) get theirs too.
  for (size_t s : fresh) {
    for (auto& metrics : worker_metrics_) metrics->ResetNode(s);
    health_metrics_.ResetNode(s);
  }
  return std::shared_ptr<const NodeTable>(std::move(next));
}

void ProxyImpl::PostToWorkers(const std::shared_ptr<const config::Config>& config,
                              const std::shared_ptr<const NodeTable>& next, UpstreamSecrets secrets,
                              bool restart_health) {
  // Every worker takes the new snapshot on its own thread; wait for all, so that the reload's
  // log line comes after the change is in force everywhere.
  auto rendezvous =
      AskWorkers(absl::Seconds(5), [config, next, secrets](Rendezvous&, size_t, Worker& worker) {
        worker.Reconfigure(config, next, secrets);
      });
  {
    std::lock_guard<std::mutex> lock(rendezvous->mu);
    if (rendezvous->answered < rendezvous->pools.size()) {
      SPDLOG_WARN(
          "node set change: {} of {} workers took it within 5s; the others take it when they "
          "get to it",
          rendezvous->answered, rendezvous->pools.size());
    }
  }
  if (restart_health) {
    std::lock_guard<std::mutex> lock(workers_mu_);
    if (!workers_.empty() && running_.load(std::memory_order_acquire)) {
      RestartHealthChecker(*config, *next);
    }
  }
}

void ProxyImpl::ResolveMissing(const config::Config& config) {
  std::vector<std::string> missing;
  for (const std::string& name : NamesToResolve(config)) {
    if (answers_.count(name) == 0) missing.push_back(name);
  }
  if (missing.empty()) return;
  bool changed = false;
  DnsAnswers resolved = DnsDiscovery::ResolveAll(*resolver_, missing, {}, &changed);
  for (auto& [name, addresses] : resolved) answers_[name] = std::move(addresses);
}

void ProxyImpl::ApplyDnsAnswers(const DnsAnswers& answers) {
  std::lock_guard<std::mutex> reconfigure_lock(reconfigure_mu_);
  if (answers == answers_ || !running_.load(std::memory_order_acquire)) return;
  answers_ = answers;
  const auto [config, tls_store, rest_tls_store, key_store] = in_force();
  const std::vector<NodeSpec> specs = ExpandNodes(*config, answers_);
  std::shared_ptr<const NodeTable> current = table();
  if (SameNodes(*current, specs)) return;
  absl::StatusOr<std::shared_ptr<const NodeTable>> next =
      NextTable(specs, DrainedEverywhere(current->slots.size()), tls_store, rest_tls_store);
  if (!next.ok()) {
    SPDLOG_ERROR("DNS discovery: the node set stays as it is: {}", next.status().ToString());
    return;
  }
  std::vector<std::string> names;
  for (const NodeSpec& spec : specs) names.push_back(spec.name);
  SPDLOG_INFO("DNS discovery: node set now {}", absl::StrJoin(names, ", "));
  {
    std::lock_guard<std::mutex> lock(table_mu_);
    table_ = *next;
  }
  PostToWorkers(config, *next,
                UpstreamSecrets{tls_store.get(), key_store.get(), rest_tls_store.get()},
                /*restart_health=*/true);
}

absl::Status ProxyImpl::Reconfigure(std::shared_ptr<const config::Config> config) {
  if (config == nullptr) return absl::InvalidArgumentError("no config");
  std::lock_guard<std::mutex> reconfigure_lock(reconfigure_mu_);
  if (absl::Status status = config::Validate(*config); !status.ok()) return status;
  // What the listeners need: a gRPC listener needs gRPC nodes, and none opens later.
  if (config->upstream.nodes.empty() != config_->upstream.nodes.empty()) {
    return absl::FailedPreconditionError(
        config_->upstream.nodes.empty()
            ? "upstream.nodes cannot be set while qpoold runs REST-only (no gRPC listener is "
              "open; needs a restart)"
            : "upstream.nodes cannot become empty while qpoold runs (its gRPC listener is open; "
              "needs a restart)");
  }
  // Stores the new config does not replace stay as they are.
  auto [before, tls_store, rest_tls_store, key_store] = in_force();
  const std::shared_ptr<tls::ContextStore> tls_before = tls_store, rest_tls_before = rest_tls_store;
  const std::vector<std::string> changed = config::ChangedKeys(*before, *config);
  auto changed_any = [&changed](std::initializer_list<std::string_view> keys) {
    for (const std::string& key : changed) {
      for (std::string_view k : keys) {
        if (key == k) return true;
      }
    }
    return false;
  };
  // Load what the new config names before anything changes: a file that does not load keeps
  // the old config as a whole.
  if (changed_any({"upstream.nodes", "upstream.tls"})) {
    absl::StatusOr<std::unique_ptr<tls::ContextStore>> store =
        tls::ContextStore::Create(config->upstream, "h2");
    if (!store.ok()) return store.status();
    tls_store = std::move(*store);
  }
  // The REST endpoints' store (rest.listen stays as it started): by REST endpoint, so a change
  // of upstream.rest_nodes makes a new one too.
  if (changed_any({"upstream.nodes", "upstream.rest_nodes", "upstream.tls"})) {
    absl::StatusOr<std::unique_ptr<tls::ContextStore>> store = RestTlsStore(*config);
    if (!store.ok()) return store.status();
    rest_tls_store = std::move(*store);
  }
  if (changed_any({"upstream.api_key_file", "upstream.api_key_env", "upstream.api_key_mode",
                   "upstream.read_only_api_key_file", "upstream.read_only_api_key_env",
                   "health.api_key_env"})) {
    absl::StatusOr<std::unique_ptr<auth::ApiKeyStore>> store = auth::ApiKeyStore::Create(*config);
    if (!store.ok()) return store.status();
    key_store = std::move(*store);
  }
  // The node set: the new list, names expanded by DNS discovery (a name new to it is resolved
  // now, on this thread).
  ResolveMissing(*config);
  const std::vector<NodeSpec> specs = ExpandNodes(*config, answers_);
  std::shared_ptr<const NodeTable> next = table();
  const std::shared_ptr<const NodeTable> previous = next;
  const bool nodes_changed =
      tls_store != tls_store_ || rest_tls_store != rest_tls_store_ || !SameNodes(*next, specs);
  if (nodes_changed) {
    const std::vector<bool> drained = running_.load(std::memory_order_acquire)
                                          ? DrainedEverywhere(next->slots.size())
                                          : std::vector<bool>(next->slots.size(), false);
    absl::StatusOr<std::shared_ptr<const NodeTable>> built =
        NextTable(specs, drained, tls_store, rest_tls_store);
    if (!built.ok()) return built.status();
    next = *std::move(built);
  }
  // Publish: the admin thread and the secrets thread see the new state from now on; the
  // workers take it on their own threads.
  {
    std::lock_guard<std::mutex> lock(table_mu_);
    if (tls_store != tls_store_) retired_secrets_.push_back(tls_store_);
    if (rest_tls_store != rest_tls_store_) retired_secrets_.push_back(rest_tls_store_);
    if (key_store != key_store_) retired_secrets_.push_back(key_store_);
    live_config_ = config;
    table_ = next;
    tls_store_ = tls_store;
    rest_tls_store_ = rest_tls_store;
    key_store_ = key_store;
  }
  max_client_connections_.store(config->server.max_client_connections, std::memory_order_relaxed);
  drain_timeout_.store(absl::ToInt64Nanoseconds(config->server.drain_timeout));
  readiness_includes_upstream_.store(config->admin.readiness_includes_upstream,
                                     std::memory_order_relaxed);
  if (!running_.load(std::memory_order_acquire)) return absl::OkStatus();
  bool health_changed = nodes_changed;
  for (const std::string& key : changed) {
    if (key.rfind("health.", 0) == 0) health_changed = true;
  }
  PostToWorkers(config, next,
                UpstreamSecrets{tls_store.get(), key_store.get(), rest_tls_store.get()},
                health_changed);
  // Nodes whose TLS settings changed recycle their open connections, as for a file change.
  for (const bool rest : {false, true}) {
    for (size_t s :
         tls::SlotsWithNewTlsSettings(*previous, *next, (rest ? rest_tls_before : tls_before).get(),
                                      (rest ? rest_tls_store : tls_store).get(), rest)) {
      const NodeSlot& slot = next->slots[s];
      RecycleTlsNodes(rest ? slot.rest_tls.get() : slot.tls.get(), {slot.tls_index}, rest);
    }
  }
  if (config->upstream.dns_refresh > absl::ZeroDuration() && dns_ != nullptr) dns_->Start();
  StartSecretsThread();
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckUpstreamSecrets(const config::Config& config) {
  absl::StatusOr<std::unique_ptr<tls::ContextStore>> tls_store =
      tls::ContextStore::Create(config.upstream, "h2");
  if (!tls_store.ok()) return tls_store.status();
  absl::StatusOr<std::unique_ptr<tls::ContextStore>> rest_tls_store = RestTlsStore(config);
  if (!rest_tls_store.ok()) return rest_tls_store.status();
  return auth::ApiKeyStore::Create(config).status();
}

absl::StatusOr<std::unique_ptr<Proxy>> Proxy::Create(std::shared_ptr<const config::Config> config,
                                                     std::shared_ptr<Resolver> resolver) {
  if (config == nullptr) return absl::InvalidArgumentError("no config");
  if (absl::Status status = config::Validate(*config); !status.ok()) return status;
  absl::StatusOr<std::unique_ptr<tls::ContextStore>> tls_store =
      tls::ContextStore::Create(config->upstream, "h2");
  if (!tls_store.ok()) return tls_store.status();
  absl::StatusOr<std::unique_ptr<auth::ApiKeyStore>> key_store = auth::ApiKeyStore::Create(*config);
  if (!key_store.ok()) return key_store.status();
  absl::StatusOr<std::unique_ptr<tls::ContextStore>> rest_tls_store = RestTlsStore(*config);
  if (!rest_tls_store.ok()) return rest_tls_store.status();
  if (resolver == nullptr) resolver = SystemResolver();
  // DNS discovery's first answers, on this (the controlling) thread: the first node set already
  // has one node per address. A name that does not resolve stays as written for now.
  bool changed = false;
  DnsAnswers answers =
      DnsDiscovery::ResolveAll(*resolver, NamesToResolve(*config), DnsAnswers{}, &changed);
  return std::unique_ptr<Proxy>(new ProxyImpl(std::move(config), *std::move(tls_store),
                                              *std::move(key_store), *std::move(rest_tls_store),
                                              std::move(resolver), std::move(answers)));
}

}  // namespace qpool::server
