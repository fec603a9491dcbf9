#include "daemon/server/proxy.h"

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <condition_variable>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/config/loader.h"
#include "daemon/server/worker.h"
#include "spdlog/spdlog.h"

namespace qpool::server {
namespace {

using boost::asio::ip::tcp;

class ProxyImpl : public Proxy {
 public:
  explicit ProxyImpl(std::shared_ptr<const config::Config> config) : config_(std::move(config)) {}
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
    stats.buffered_bytes = counters_.buffered_bytes.load(std::memory_order_relaxed);
    return stats;
  }
  absl::Status Shutdown() override;
  void ShutdownNow() override;

 private:
  void Accept();
  void OnAccepted(Worker& target, const boost::system::error_code& ec, tcp::socket socket);

  const std::shared_ptr<const config::Config> config_;
  ProxyCounters counters_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<tcp::acceptor> acceptor_;  // lives on workers_[0]'s thread
  size_t next_worker_ = 0;
  std::atomic<uint16_t> port_{0};
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
  for (uint32_t i = 0; i < count; ++i) {
    workers_.push_back(std::make_unique<Worker>(config_, i, count, counters_));
  }
  const config::NodeAddress& listen = config_->server.listen;
  boost::system::error_code ec;
  const auto address = boost::asio::ip::make_address(listen.host, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("server.listen: ", listen.host, " is not an IP address: ", ec.message()));
  }
  auto acceptor = std::make_unique<tcp::acceptor>(workers_[0]->io());
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
  for (auto& worker : workers_) worker->Start();
  workers_[0]->Post([this] { Accept(); });
  return absl::OkStatus();
}

void ProxyImpl::Accept() {
  Worker& target = *workers_[next_worker_];
  next_worker_ = (next_worker_ + 1) % workers_.size();
  acceptor_->async_accept(target.io(), [this, &target](const boost::system::error_code& ec,
                                                       tcp::socket socket) {
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
    target.Post([&target, shared_socket, refuse] {
      target.Adopt(std::move(*shared_socket), refuse);
    });
  }
  Accept();
}

absl::Status ProxyImpl::Shutdown() {
  if (!started_ || stopped_) return absl::OkStatus();
  SPDLOG_INFO("draining: no new connections; waiting up to {} for calls in flight",
              absl::FormatDuration(config_->server.drain_timeout));
  workers_[0]->Post([this] {
    boost::system::error_code ignored;
    acceptor_->close(ignored);
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
  if (!workers_.empty()) {
    workers_[0]->Post([this] {
      boost::system::error_code ignored;
      acceptor_->close(ignored);
    });
  }
  for (auto& worker : workers_) worker->Stop();
  acceptor_.reset();
  workers_.clear();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Proxy>> Proxy::Create(
    std::shared_ptr<const config::Config> config) {
  if (config == nullptr) return absl::InvalidArgumentError("no config");
  if (absl::Status status = config::Validate(*config); !status.ok()) return status;
  return std::unique_ptr<Proxy>(new ProxyImpl(std::move(config)));
}

}  // namespace qpool::server
