#include "daemon/server/proxy.h"

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "daemon/config/loader.h"
#include "daemon/metrics/health_metrics.h"
#include "daemon/server/health_checker.h"
#include "daemon/server/worker.h"
#include "spdlog/spdlog.h"

namespace qpool::server {
namespace {

using boost::asio::ip::tcp;

// Where a worker's answer to the admin thread lands. Shared with the posted handler, so an answer
// that comes after the admin thread gave up touches nothing freed.
struct Rendezvous {
  absl::Mutex mu;
  absl::CondVar answered_cv;  // signalled on every answer
  size_t answered ABSL_GUARDED_BY(mu) = 0;
  std::vector<std::optional<std::vector<metrics::NodePoolGauges>>> pools ABSL_GUARDED_BY(mu);
};

class ProxyImpl : public Proxy {
 public:
  explicit ProxyImpl(std::shared_ptr<const config::Config> config)
      : config_(std::move(config)), health_metrics_(config_->upstream.nodes.size()) {
    for (uint32_t i = 0; i < config_->server.workers; ++i) {
      worker_metrics_.push_back(
          std::make_unique<metrics::WorkerMetrics>(config_->upstream.nodes.size()));
    }
    for (const config::NodeAddress& node : config_->upstream.nodes) {
      node_names_.push_back(node.ToString());
    }
  }
  ~ProxyImpl() override { ShutdownNow(); }

  absl::Status Start() override;
  uint16_t port() const override { return port_.load(); }
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
    return stats;
  }
  absl::Status Shutdown() override;
  void ShutdownNow() override;

  // metrics::AdminBackend.
  bool Started() const override { return running_.load(std::memory_order_acquire); }
  std::string NotReadyReason() const override;
  bool Live(absl::Duration timeout) override;
  metrics::ScrapeInput Scrape(absl::Duration timeout) override;

 private:
  // Runs `fn(worker)` on every worker's thread and waits up to `timeout` for all to answer;
  // returns the rendezvous: worker i's answer in pools[i], nullopt if it did not answer in time.
  std::shared_ptr<Rendezvous> AskWorkers(
      absl::Duration timeout, std::function<std::vector<metrics::NodePoolGauges>(Worker&)> fn)
      ABSL_LOCKS_EXCLUDED(workers_mu_);

  // The workers now (none before Start() and after ShutdownNow()); they live until ShutdownNow().
  std::vector<Worker*> Workers() const ABSL_LOCKS_EXCLUDED(workers_mu_);

  void Accept() ABSL_LOCKS_EXCLUDED(workers_mu_);
  void OnAccepted(Worker& target, const boost::system::error_code& ec, tcp::socket socket);

  const std::shared_ptr<const config::Config> config_;
  ProxyCounters counters_;
  // One per worker, written only by its worker; they outlive the workers (admin reads them).
  std::vector<std::unique_ptr<metrics::WorkerMetrics>> worker_metrics_;
  // Written by the health thread; read by the workers and the admin thread. Outlives both.
  metrics::HealthMetrics health_metrics_;
  std::vector<std::string> node_names_;
  std::atomic<bool> running_{false};   // workers started, not yet stopped
  std::atomic<bool> draining_{false};  // Shutdown() began
  // Guards workers_ against the admin thread and the acceptor while Start() fills it and
  // ShutdownNow() clears it; held only to read the list or post, never while waiting or joining.
  mutable absl::Mutex workers_mu_;
  std::vector<std::unique_ptr<Worker>> workers_ ABSL_GUARDED_BY(workers_mu_);
  // Stopped before the workers stop and freed after them (ShutdownNow): workers post probe
  // results to its io_context.
  std::unique_ptr<HealthChecker> health_checker_;
  std::unique_ptr<tcp::acceptor> acceptor_;  // lives on workers_[0]'s thread
  size_t next_worker_ ABSL_GUARDED_BY(workers_mu_) = 0;
  std::atomic<uint16_t> port_{0};
  bool started_ = false;
  bool stopped_ = false;

  absl::Mutex mu_;
  absl::CondVar drained_cv_;  // signalled as each worker finishes draining
  size_t workers_drained_ ABSL_GUARDED_BY(mu_) = 0;
};

absl::Status ProxyImpl::Start() {
  if (started_) return absl::FailedPreconditionError("Start() called twice");
  started_ = true;
  const uint32_t count = config_->server.workers;
  {
    absl::MutexLock lock(&workers_mu_);
    for (uint32_t i = 0; i < count; ++i) {
      workers_.push_back(std::make_unique<Worker>(config_, i, count, counters_, *worker_metrics_[i],
                                                  &health_metrics_));
    }
  }
  const std::vector<Worker*> workers = Workers();
  const config::NodeAddress& listen = config_->server.listen;
  boost::system::error_code ec;
  const auto address = boost::asio::ip::make_address(listen.host, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("server.listen: ", listen.host, " is not an IP address: ", ec.message()));
  }
  auto acceptor = std::make_unique<tcp::acceptor>(workers[0]->io());
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
  acceptor_ = std::move(acceptor);
  for (Worker* worker : workers) worker->Start();
  health_checker_ = std::make_unique<HealthChecker>(*config_, health_metrics_, workers);
  health_checker_->Start();
  workers[0]->Post([this] { Accept(); });
  running_.store(true, std::memory_order_release);
  return absl::OkStatus();
}

std::vector<Worker*> ProxyImpl::Workers() const {
  absl::MutexLock lock(&workers_mu_);
  std::vector<Worker*> workers;
  for (const auto& worker : workers_) workers.push_back(worker.get());
  return workers;
}

void ProxyImpl::Accept() {
  Worker* next;
  {
    absl::MutexLock lock(&workers_mu_);
    if (workers_.empty()) return;
    next = workers_[next_worker_].get();
    next_worker_ = (next_worker_ + 1) % workers_.size();
  }
  Worker& target = *next;
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

absl::Status ProxyImpl::Shutdown() {
  if (!started_ || stopped_) return absl::OkStatus();
  draining_.store(true, std::memory_order_relaxed);
  SPDLOG_INFO("draining: no new connections; waiting up to {} for calls in flight",
              absl::FormatDuration(config_->server.drain_timeout));
  const std::vector<Worker*> workers = Workers();
  workers[0]->Post([this] {
    boost::system::error_code ignored;
    acceptor_->close(ignored);
  });
  for (Worker* w : workers) {
    w->Post([this, w] {
      w->BeginDrain([this] {
        absl::MutexLock lock(&mu_);
        workers_drained_++;
        drained_cv_.SignalAll();
      });
    });
  }
  bool drained = true;
  {
    const absl::Time deadline = absl::Now() + config_->server.drain_timeout;
    absl::MutexLock lock(&mu_);
    while (workers_drained_ < workers.size()) {
      if (drained_cv_.WaitWithDeadline(&mu_, deadline)) {  // true: the deadline passed
        drained = workers_drained_ >= workers.size();
        break;
      }
    }
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
  const std::vector<Worker*> workers = Workers();
  if (!workers.empty()) {
    workers[0]->Post([this] {
      boost::system::error_code ignored;
      acceptor_->close(ignored);
    });
  }
  // The health thread stops first (it posts probes to the workers); it is freed only after the
  // workers are gone, since they may still post results to its io_context. The workers are joined
  // without workers_mu_ held: Accept() on worker 0 takes it.
  if (health_checker_ != nullptr) health_checker_->Stop();
  for (Worker* worker : workers) worker->Stop();
  acceptor_.reset();
  {
    absl::MutexLock lock(&workers_mu_);
    workers_.clear();
  }
  health_checker_.reset();
}

std::string ProxyImpl::NotReadyReason() const {
  if (!running_.load(std::memory_order_acquire)) return draining_ ? "stopped" : "starting";
  if (draining_.load(std::memory_order_relaxed)) return "draining";
  std::vector<const metrics::WorkerMetrics*> workers;
  for (const auto& worker : worker_metrics_) workers.push_back(worker.get());
  for (size_t n = 0; n < node_names_.size(); ++n) {
    if (metrics::NodeUsable(workers, n) && health_metrics_.healthy(n)) return "";
  }
  return absl::StrCat("no usable upstream node: none of ", absl::StrJoin(node_names_, ", "),
                      " is both healthy (health checks) and reachable (a connection up, or the "
                      "last connect did not fail)");
}

std::shared_ptr<Rendezvous> ProxyImpl::AskWorkers(
    absl::Duration timeout, std::function<std::vector<metrics::NodePoolGauges>(Worker&)> fn) {
  auto rendezvous = std::make_shared<Rendezvous>();
  const absl::Time deadline = absl::Now() + timeout;
  size_t asked = 0;
  {
    absl::MutexLock workers_lock(&workers_mu_);
    {
      absl::MutexLock lock(&rendezvous->mu);
      rendezvous->pools.resize(workers_.size());
    }
    for (size_t i = 0; i < workers_.size(); ++i) {
      Worker* worker = workers_[i].get();
      worker->Post([rendezvous, fn, i, worker] {
        std::vector<metrics::NodePoolGauges> answer = fn(*worker);
        absl::MutexLock lock(&rendezvous->mu);
        rendezvous->pools[i] = std::move(answer);
        rendezvous->answered++;
        rendezvous->answered_cv.SignalAll();
      });
      asked++;
    }
  }
  absl::MutexLock lock(&rendezvous->mu);
  while (rendezvous->answered < asked) {
    if (rendezvous->answered_cv.WaitWithDeadline(&rendezvous->mu, deadline)) break;  // timed out
  }
  return rendezvous;
}

bool ProxyImpl::Live(absl::Duration timeout) {
  if (!running_.load(std::memory_order_acquire)) return true;  // the admin thread answers
  auto rendezvous =
      AskWorkers(timeout, [](Worker&) { return std::vector<metrics::NodePoolGauges>(); });
  absl::MutexLock lock(&rendezvous->mu);
  return rendezvous->answered == rendezvous->pools.size();
}

metrics::ScrapeInput ProxyImpl::Scrape(absl::Duration timeout) {
  metrics::ScrapeInput input;
  input.node_names = node_names_;
  for (const auto& worker : worker_metrics_) input.workers.push_back(worker.get());
  input.health = &health_metrics_;
  const ProxyStats s = stats();
  input.downstream = {s.downstream_accepted, s.downstream_refused,  s.downstream_protocol_errors,
                      s.downstream_open,     s.calls_started,       s.local_replies,
                      s.buffered_bytes,      s.transparent_retries, s.replay_bytes};
  input.started = running_.load(std::memory_order_acquire);
  input.draining = draining_.load(std::memory_order_relaxed);
  input.ready = NotReadyReason().empty();
  if (input.started) {
    // Gauges are read where they live, on each worker's thread; the counters above need no
    // worker.
    auto rendezvous = AskWorkers(timeout, [](Worker& worker) { return worker.PoolGauges(); });
    absl::MutexLock lock(&rendezvous->mu);
    input.pools = rendezvous->pools;
  }
  return input;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Proxy>> Proxy::Create(std::shared_ptr<const config::Config> config) {
  if (config == nullptr) return absl::InvalidArgumentError("no config");
  if (absl::Status status = config::Validate(*config); !status.ok()) return status;
  return std::unique_ptr<Proxy>(new ProxyImpl(std::move(config)));
}

}  // namespace qpool::server
