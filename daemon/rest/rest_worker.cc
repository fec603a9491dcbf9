#include "daemon/rest/rest_worker.h"

#include "absl/strings/str_cat.h"
#include "daemon/rest/session.h"
#include "daemon/rest/upstream.h"
#include "spdlog/spdlog.h"

namespace qpool::rest {

std::vector<config::NodeAddress> RestNodesOf(const config::Config& config) {
  if (!config.upstream.rest_nodes.empty()) return config.upstream.rest_nodes;
  std::vector<config::NodeAddress> nodes;
  for (const config::NodeAddress& node : config.upstream.nodes) {
    nodes.push_back(config::NodeAddress{node.host, 6333});
  }
  return nodes;
}

// A REST pool's observer: the pool metrics of the gRPC pools (connects, connect failures by
// reason, connect durations, disconnects, waits, queue overflows, acquire timeouts) into the
// worker's REST node metrics, each counted once, here; the connection itself adds only its TLS
// counters (handshakes, resumptions, unverified connects). Passive health hears of connect
// failures, as for the gRPC pools.
class RestWorker::PoolObserver : public metrics::PoolMetricsObserver {
 public:
  PoolObserver(pool::Balancer& balancer, size_t node, metrics::NodeMetrics& metrics,
               EventLoop& loop)
      : PoolMetricsObserver(metrics, loop, [] {}), balancer_(balancer), node_(node) {}
  void OnConnectFailed(const absl::Status& reason) override {
    PoolMetricsObserver::OnConnectFailed(reason);
    balancer_.OnAttemptEnd(node_, /*failed=*/true);
  }

 private:
  pool::Balancer& balancer_;
  const size_t node_;
};

// The REST side of pool::SlotPools: a slot's REST endpoint, its pool options under rest.* and
// upstream.*, its factory and observer.
class RestWorker::PoolParts : public pool::SlotPoolParts {
 public:
  explicit PoolParts(RestWorker& worker) : worker_(worker) {}

  const config::NodeAddress& EndpointOf(const config::NodeSlot& slot) const override {
    return slot.rest;
  }

  pool::NodePoolOptions OptionsFor(const config::NodeSlot& slot) const override {
    const config::RestConfig& rest = worker_.config_->rest;
    const config::UpstreamConfig& upstream = worker_.config_->upstream;
    pool::NodePoolOptions options = pool::UpstreamPoolOptions(upstream, slot.rest);
    options.min_connections =
        pool::WorkerShare(rest.min_connections, worker_.index_, worker_.count_);
    options.max_connections =
        pool::WorkerShare(rest.max_connections, worker_.index_, worker_.count_);
    options.max_connections_key = "rest.max_connections";
    options.max_streams_per_connection = 1;  // HTTP/1.1: one request at a time
    options.idle_timeout = absl::ToChronoNanoseconds(rest.idle_timeout);
    return options;
  }

  // Keep-alive HTTP/1.1 connections to the slot's REST endpoint, over TLS when the slot has a
  // REST context store. The slot's counters are read now: a slot given to a new node got fresh
  // ones (WorkerMetrics::ResetNode) before the table naming it was published.
  std::unique_ptr<pool::SlotConnectionFactory> NewFactory(size_t index,
                                                          const config::NodeSlot& slot) override {
    return std::make_unique<RestConnectionFactory>(
        worker_.io_, slot.rest,
        absl::ToChronoNanoseconds(worker_.config_->upstream.connect_timeout), slot.rest_tls.get(),
        slot.tls_index, &worker_.metrics_.rest_node(index));
  }
  std::unique_ptr<pool::PoolObserver> NewObserver(size_t index) override {
    return std::make_unique<PoolObserver>(worker_.balancer_, index,
                                          worker_.metrics_.rest_node(index), worker_.loop_);
  }

 private:
  RestWorker& worker_;
};

RestWorker::RestWorker(const config::Config& config, uint32_t index, uint32_t count,
                       boost::asio::io_context& io, EventLoop& loop, Random& random,
                       pool::PendingBudget& pending_budget, RestHost& host,
                       pool::Balancer& balancer, RestRetryContext retry,
                       metrics::WorkerMetrics& metrics, const config::NodeTable& table)
    : config_(&config),
      index_(index),
      count_(count),
      io_(io),
      loop_(loop),
      host_(host),
      balancer_(balancer),
      retry_(retry),
      metrics_(metrics),
      pools_(std::make_unique<PoolParts>(*this), pending_budget, loop, random),
      context_{io,       loop,
               random,   host,
               balancer, pools_,
               retry_,   limits_,
               metrics,  [this](RestSession* session) { OnSessionClosed(session); }} {
  SetLimits(config.rest);
  pools_.Apply(table);
}

void RestWorker::SetLimits(const config::RestConfig& rest) {
  limits_.max_header_bytes = rest.max_header_bytes;
  limits_.max_headers = rest.max_headers;
  limits_.max_body_bytes = rest.max_body_bytes;
  limits_.header_timeout = absl::ToChronoNanoseconds(rest.header_timeout);
  limits_.keepalive_timeout = absl::ToChronoNanoseconds(rest.keepalive_timeout);
  limits_.request_timeout = absl::ToChronoNanoseconds(rest.request_timeout);
}

void RestWorker::Reconfigure(const config::Config& config, const config::NodeTable* table) {
  if (stopped_ || table == nullptr) return;
  config_ = &config;
  SetLimits(config.rest);
  pools_.Apply(*table);
}

RestWorker::~RestWorker() { Stop(); }

void RestWorker::Start() { pools_.Start(); }

void RestWorker::Adopt(boost::asio::ip::tcp::socket socket, bool refuse) {
  auto session = std::make_shared<RestSession>(context_, std::move(socket));
  sessions_.emplace(session.get(), session);
  if (refuse) {
    session->Refuse(absl::StrCat("qpool: server.max_client_connections (",
                                 config_->server.max_client_connections, ") reached"));
  } else if (draining_ || stopped_) {
    session->Refuse("qpool: shutting down");
  } else {
    session->Start();
  }
}

void RestWorker::BeginDrain() {
  draining_ = true;
  std::vector<std::shared_ptr<RestSession>> sessions;
  for (auto& [ptr, session] : sessions_) sessions.push_back(session);
  for (auto& session : sessions) session->BeginDrain();
  if (sessions_.empty()) host_.OnRestIdle();
}

void RestWorker::Stop() {
  if (stopped_) return;
  stopped_ = true;
  std::vector<std::shared_ptr<RestSession>> sessions;
  for (auto& [ptr, session] : sessions_) sessions.push_back(session);
  for (auto& session : sessions) session->Close();
  pools_.Shutdown();
}

void RestWorker::OnSessionClosed(RestSession* session) {
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return;
  // Keep the session alive until the current event is done with it.
  std::shared_ptr<RestSession> keep = std::move(it->second);
  sessions_.erase(it);
  loop_.Post([keep] {});
  host_.OnRestSessionClosed();
  if (sessions_.empty() && draining_) host_.OnRestIdle();
}

}  // namespace qpool::rest
