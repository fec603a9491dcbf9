#include "daemon/server/proxy.h"

#include <pthread.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/auth/api_keys.h"
#include "daemon/config/loader.h"
#include "daemon/metrics/health_metrics.h"
#include "daemon/server/health_checker.h"
#include "daemon/server/worker.h"
#include "daemon/tls/context_store.h"
#include "spdlog/spdlog.h"

namespace qpool::server {
namespace {

using boost::asio::ip::tcp;

// Where a worker's answer to the admin thread lands. Shared with the posted handler, so an answer
// that comes after the admin thread gave up touches nothing freed.
struct Rendezvous {
  std::mutex mu;
  std::condition_variable cv;
  size_t answered = 0;                                                          // guarded by mu
  std::vector<std::optional<std::vector<metrics::NodePoolGauges>>> pools;       // guarded by mu
  std::vector<std::optional<std::vector<metrics::NodePoolGauges>>> rest_pools;  // guarded by mu
};

class ProxyImpl : public Proxy {
 public:
  ProxyImpl(std::shared_ptr<const config::Config> config,
            std::unique_ptr<tls::ContextStore> tls_store,
            std::unique_ptr<auth::ApiKeyStore> key_store)
      : config_(std::move(config)),
        tls_store_(std::move(tls_store)),
        key_store_(std::move(key_store)),
        health_metrics_(config::NodeCount(*config_)),
        readiness_includes_upstream_(config_->admin.readiness_includes_upstream) {
    const size_t rest_nodes =
        config_->rest.listen.host.empty() ? 0 : rest::RestNodesOf(*config_).size();
    for (uint32_t i = 0; i < config_->server.workers; ++i) {
      worker_metrics_.push_back(
          std::make_unique<metrics::WorkerMetrics>(config::NodeCount(*config_), rest_nodes));
    }
    for (const config::NodeAddress& node : config_->upstream.nodes) {
      node_names_.push_back(node.ToString());
    }
    if (!config_->rest.listen.host.empty()) {
      for (const config::NodeAddress& node : rest::RestNodesOf(*config_)) {
        rest_node_names_.push_back(node.ToString());
      }
    }
  }
  ~ProxyImpl() override { ShutdownNow(); }

  absl::Status Start() override;
  uint16_t port() const override { return port_.load(); }
  uint16_t rest_port() const override { return rest_port_.load(); }
  ProxyStats stats() const override {
    ProxyStats stats;
    stats.downstream_accepted = counters_.downstream_accepted.load(std::memory_order_relaxed);
    stats.downstream_refused = counters_.downstream_refused.load(std::memory_order_relaxed);
    stats.downstream_protocol_errors =
        counters_.downstream_protocol_errors.load(std::memory_order_relaxed);
    stats.downstream_open = counters_.downstream_open.load(std::memory_order_relaxed);
    stats.calls_started = counters_.calls_started.load(std::memory_order_relaxed);
    stats.local_replies = counters_.local_replies.load(std::memory_order_relaxed);
    stats.transparent_retries = counters_.transparent_retries.load(std::memory_order_relaxed);
    stats.replay_bytes = counters_.replay_bytes.load(std::memory_order_relaxed);
    stats.buffered_bytes = counters_.buffered_bytes.load(std::memory_order_relaxed);
    static_assert(std::tuple_size_v<decltype(stats.downstream_abuse)> == kAbuseReasonCount);
    for (size_t i = 0; i < kAbuseReasonCount; ++i) {
      stats.downstream_abuse[i] = counters_.downstream_abuse[i].load(std::memory_order_relaxed);
    }
    stats.header_list_size_rejections =
        counters_.downstream_header_limit_rejections[0].load(std::memory_order_relaxed);
    stats.header_count_rejections =
        counters_.downstream_header_limit_rejections[1].load(std::memory_order_relaxed);
    stats.handshake_timeouts =
        counters_.downstream_handshake_timeouts.load(std::memory_order_relaxed);
    stats.idle_timeouts = counters_.downstream_idle_timeouts.load(std::memory_order_relaxed);
    static_assert(std::tuple_size_v<decltype(stats.stream_resets)> == kStreamResetReasonCount);
    for (size_t i = 0; i < kStreamResetReasonCount; ++i) {
      stats.stream_resets[i] =
          counters_.downstream_stream_resets[i].load(std::memory_order_relaxed);
    }
    return stats;
  }
  absl::Status Shutdown() override;
  void ShutdownNow() override;
  void MarkDraining() override { draining_.store(true, std::memory_order_relaxed); }
  void SetReadinessIncludesUpstream(bool include) override {
    readiness_includes_upstream_.store(include, std::memory_order_relaxed);
  }

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

  void Accept();
  void OnAccepted(Worker& target, const boost::system::error_code& ec, tcp::socket socket);
  // REST (rest.listen): the same round robin over the same workers.
  void AcceptRest();
  void OnRestAccepted(Worker& target, const boost::system::error_code& ec, tcp::socket socket);

  // The secrets thread: every upstream.secrets_poll_interval, re-reads the key and certificate
  // files that changed. Never touches a worker: workers pick the new snapshots up themselves.
  void StartSecretsThread();
  void StopSecretsThread();

  const std::shared_ptr<const config::Config> config_;
  const std::unique_ptr<tls::ContextStore> tls_store_;
  const std::unique_ptr<auth::ApiKeyStore> key_store_;
  std::thread secrets_thread_;
  std::mutex secrets_mu_;
  std::condition_variable secrets_cv_;
  bool secrets_stop_ = false;  // guarded by secrets_mu_
  ProxyCounters counters_;
  // One per worker, written only by its worker; they outlive the workers (admin reads them).
  std::vector<std::unique_ptr<metrics::WorkerMetrics>> worker_metrics_;
  // Written by the health thread; read by the workers and the admin thread. Outlives both.
  metrics::HealthMetrics health_metrics_;
  std::vector<std::string> node_names_;
  std::vector<std::string> rest_node_names_;  // empty when rest.listen is off
  std::atomic<bool> running_{false};          // workers started, not yet stopped
  std::atomic<bool> draining_{false};         // MarkDraining() or Shutdown() began
  std::atomic<bool> readiness_includes_upstream_;
  // Guards workers_ against the admin thread while Start() fills it and ShutdownNow() clears it;
  // held only to post, never while waiting.
  mutable std::mutex workers_mu_;
  std::vector<std::unique_ptr<Worker>> workers_;
  // Stopped before the workers stop and freed after them (ShutdownNow): workers post probe
  // results to its io_context.
  std::unique_ptr<HealthChecker> health_checker_;
  std::unique_ptr<tcp::acceptor> acceptor_;  // lives on workers_[0]'s thread
  size_t next_worker_ = 0;
  std::atomic<uint16_t> port_{0};
  std::unique_ptr<tcp::acceptor> rest_acceptor_;  // lives on workers_[0]'s thread; null: off
  size_t next_rest_worker_ = 0;
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
          UpstreamSecrets{tls_store_.get(), key_store_.get()}));
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
    const tcp::endpoint endpoint(address, listen.port);
    acceptor->open(endpoint.protocol(), ec);
    if (!ec) acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor->bind(endpoint, ec);
    if (!ec) acceptor->listen(boost::asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", listen.ToString(), ": ", ec.message()));
    }
    port_ = acceptor->local_endpoint().port();
  }
  acceptor_ = std::move(acceptor);
  if (const config::NodeAddress& rest = config_->rest.listen; !rest.host.empty()) {
    const auto rest_address = boost::asio::ip::make_address(rest.host, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("rest.listen: ", rest.host, " is not an IP address: ", ec.message()));
    }
    auto rest_acceptor = std::make_unique<tcp::acceptor>(workers_[0]->io());
    const tcp::endpoint rest_endpoint(rest_address, rest.port);
    rest_acceptor->open(rest_endpoint.protocol(), ec);
    if (!ec) rest_acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) rest_acceptor->bind(rest_endpoint, ec);
    if (!ec) rest_acceptor->listen(boost::asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", rest.ToString(), " (rest.listen): ", ec.message()));
    }
    rest_port_ = rest_acceptor->local_endpoint().port();
    rest_acceptor_ = std::move(rest_acceptor);
  }
  for (auto& worker : workers_) worker->Start();
  std::vector<Worker*> workers;
  for (auto& worker : workers_) workers.push_back(worker.get());
  health_checker_ = std::make_unique<HealthChecker>(*config_, health_metrics_, std::move(workers));
  health_checker_->Start();
  if (grpc) workers_[0]->Post([this] { Accept(); });
  if (rest_acceptor_ != nullptr) workers_[0]->Post([this] { AcceptRest(); });
  StartSecretsThread();
  running_.store(true, std::memory_order_release);
  return absl::OkStatus();
}

void ProxyImpl::StartSecretsThread() {
  const bool files = !config_->upstream.api_key_file.empty() ||
                     !config_->upstream.read_only_api_key_file.empty() || tls_store_->any_enabled();
  if (!files) return;
  const auto interval = absl::ToChronoNanoseconds(config_->upstream.secrets_poll_interval);
  secrets_thread_ = std::thread([this, interval] {
    pthread_setname_np(pthread_self(), "qpool-secrets");
    std::unique_lock<std::mutex> lock(secrets_mu_);
    while (!secrets_cv_.wait_for(lock, interval, [this] { return secrets_stop_; })) {
      lock.unlock();
      key_store_->Reload();
      tls_store_->Reload();
      lock.lock();
    }
  });
}

void ProxyImpl::StopSecretsThread() {
  {
    std::lock_guard<std::mutex> lock(secrets_mu_);
    secrets_stop_ = true;
  }
  secrets_cv_.notify_all();
  if (secrets_thread_.joinable()) secrets_thread_.join();
}

void ProxyImpl::Accept() {
  Worker& target = *workers_[next_worker_];
  next_worker_ = (next_worker_ + 1) % workers_.size();
  acceptor_->async_accept(target.io(),
                          [this, &target](const boost::system::error_code& ec, tcp::socket socket) {
                            OnAccepted(target, ec, std::move(socket));
                          });
}

void ProxyImpl::OnAccepted(Worker& target, const boost::system::error_code& ec,
                           tcp::socket socket) {
  if (ec == boost::asio::error::operation_aborted || !acceptor_->is_open()) return;
  if (ec) {
    // EMFILE and friends: log, and keep accepting; the kernel keeps the connection queued.
    SPDLOG_WARN("accept failed: {}", ec.message());
  } else {
    const bool refuse = counters_.downstream_open.load(std::memory_order_relaxed) >=
                        static_cast<int64_t>(config_->server.max_client_connections);
    if (refuse) {
      counters_.downstream_refused.fetch_add(1, std::memory_order_relaxed);
      SPDLOG_DEBUG("refusing a client connection: server.max_client_connections reached");
    } else {
      counters_.downstream_accepted.fetch_add(1, std::memory_order_relaxed);
    }
    // The socket belongs to the target worker's io_context; hand it over on that thread.
    auto shared_socket = std::make_shared<tcp::socket>(std::move(socket));
    target.Post(
        [&target, shared_socket, refuse] { target.Adopt(std::move(*shared_socket), refuse); });
  }
  Accept();
}

void ProxyImpl::AcceptRest() {
  Worker& target = *workers_[next_rest_worker_];
  next_rest_worker_ = (next_rest_worker_ + 1) % workers_.size();
  rest_acceptor_->async_accept(
      target.io(), [this, &target](const boost::system::error_code& ec, tcp::socket socket) {
        OnRestAccepted(target, ec, std::move(socket));
      });
}

void ProxyImpl::OnRestAccepted(Worker& target, const boost::system::error_code& ec,
                               tcp::socket socket) {
  if (ec == boost::asio::error::operation_aborted || !rest_acceptor_->is_open()) return;
  if (ec) {
    SPDLOG_WARN("REST accept failed: {}", ec.message());
  } else {
    // One bound on app connections, whichever protocol they speak.
    const bool refuse = counters_.downstream_open.load(std::memory_order_relaxed) >=
                        static_cast<int64_t>(config_->server.max_client_connections);
    if (refuse) {
      counters_.downstream_refused.fetch_add(1, std::memory_order_relaxed);
    } else {
      counters_.downstream_accepted.fetch_add(1, std::memory_order_relaxed);
    }
    auto shared_socket = std::make_shared<tcp::socket>(std::move(socket));
    target.Post(
        [&target, shared_socket, refuse] { target.AdoptRest(std::move(*shared_socket), refuse); });
  }
  AcceptRest();
}

absl::Status ProxyImpl::Shutdown() {
  if (!started_ || stopped_) return absl::OkStatus();
  draining_.store(true, std::memory_order_relaxed);
  SPDLOG_INFO("draining: no new connections; waiting up to {} for calls in flight",
              absl::FormatDuration(config_->server.drain_timeout));
  workers_[0]->Post([this] {
    boost::system::error_code ignored;
    acceptor_->close(ignored);
    if (rest_acceptor_ != nullptr) rest_acceptor_->close(ignored);
  });
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
    drained = drained_cv_.wait_for(lock, absl::ToChronoNanoseconds(config_->server.drain_timeout),
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
    workers_[0]->Post([this] {
      boost::system::error_code ignored;
      acceptor_->close(ignored);
      if (rest_acceptor_ != nullptr) rest_acceptor_->close(ignored);
    });
  }
  // The health thread stops first (it posts probes to the workers); it is freed only after the
  // workers are gone, since they may still post results to its io_context.
  StopSecretsThread();
  if (health_checker_ != nullptr) health_checker_->Stop();
  for (auto& worker : workers_) worker->Stop();
  acceptor_.reset();
  rest_acceptor_.reset();
  {
    std::lock_guard<std::mutex> lock(workers_mu_);
    workers_.clear();
  }
  health_checker_.reset();
}

std::string ProxyImpl::NotReadyReason() const {
  if (!running_.load(std::memory_order_acquire)) return draining_ ? "stopped" : "starting";
  if (draining_.load(std::memory_order_relaxed)) return "draining";
  // By default readiness means "qpoold can serve": a Qdrant outage must not take every app pod
  // behind qpool out of its Service at once (docs/operations.md, "Readiness").
  if (!readiness_includes_upstream_.load(std::memory_order_relaxed)) return "";
  std::vector<const metrics::WorkerMetrics*> workers;
  for (const auto& worker : worker_metrics_) workers.push_back(worker.get());
  // REST-only (no gRPC node): no probes run and readiness follows the listener alone.
  if (node_names_.empty()) return "";
  for (size_t n = 0; n < node_names_.size(); ++n) {
    if (metrics::NodeUsable(workers, n) && health_metrics_.healthy(n)) return "";
  }
  return absl::StrCat("no usable upstream node: none of ", absl::StrJoin(node_names_, ", "),
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
  input.node_names = node_names_;
  input.rest_node_names = rest_node_names_;
  for (const auto& worker : worker_metrics_) input.workers.push_back(worker.get());
  input.health = &health_metrics_;
  const ProxyStats s = stats();
  input.downstream.accepted = s.downstream_accepted;
  input.downstream.refused = s.downstream_refused;
  input.downstream.protocol_errors = s.downstream_protocol_errors;
  input.downstream.open = s.downstream_open;
  input.downstream.calls_started = s.calls_started;
  input.downstream.local_replies = s.local_replies;
  input.downstream.buffered_bytes = s.buffered_bytes;
  input.downstream.transparent_retries = s.transparent_retries;
  input.downstream.replay_bytes = s.replay_bytes;
  for (size_t i = 0; i < kAbuseReasonCount; ++i) {
    input.downstream.abuse.emplace_back(std::string(AbuseReasonName(static_cast<AbuseReason>(i))),
                                        s.downstream_abuse[i]);
  }
  input.downstream.header_list_size_rejections = s.header_list_size_rejections;
  input.downstream.header_count_rejections = s.header_count_rejections;
  input.downstream.handshake_timeouts = s.handshake_timeouts;
  input.downstream.idle_timeouts = s.idle_timeouts;
  for (size_t i = 0; i < kStreamResetReasonCount; ++i) {
    input.downstream.stream_resets.emplace_back(
        std::string(StreamResetReasonName(static_cast<StreamResetReason>(i))), s.stream_resets[i]);
  }
  input.started = running_.load(std::memory_order_acquire);
  input.draining = draining_.load(std::memory_order_relaxed);
  input.ready = NotReadyReason().empty();
  if (input.started) {
    // Gauges are read where they live, on each worker's thread; the counters above need no
    // worker.
    auto rendezvous = AskWorkers(timeout, [](Rendezvous& r, size_t i, Worker& worker) {
      r.pools[i] = worker.PoolGauges();
      if (worker.rest() != nullptr) r.rest_pools[i] = worker.RestPoolGauges();
    });
    std::lock_guard<std::mutex> lock(rendezvous->mu);
    input.pools = rendezvous->pools;
    if (!input.rest_node_names.empty()) input.rest_pools = rendezvous->rest_pools;
  }
  return input;
}

}  // namespace

absl::Status CheckUpstreamSecrets(const config::Config& config) {
  absl::StatusOr<std::unique_ptr<tls::ContextStore>> tls_store =
      tls::ContextStore::Create(config.upstream, "h2");
  if (!tls_store.ok()) return tls_store.status();
  return auth::ApiKeyStore::Create(config).status();
}

absl::StatusOr<std::unique_ptr<Proxy>> Proxy::Create(std::shared_ptr<const config::Config> config) {
  if (config == nullptr) return absl::InvalidArgumentError("no config");
  if (absl::Status status = config::Validate(*config); !status.ok()) return status;
  absl::StatusOr<std::unique_ptr<tls::ContextStore>> tls_store =
      tls::ContextStore::Create(config->upstream, "h2");
  if (!tls_store.ok()) return tls_store.status();
  absl::StatusOr<std::unique_ptr<auth::ApiKeyStore>> key_store = auth::ApiKeyStore::Create(*config);
  if (!key_store.ok()) return key_store.status();
  return std::unique_ptr<Proxy>(
      new ProxyImpl(std::move(config), *std::move(tls_store), *std::move(key_store)));
}

}  // namespace qpool::server
