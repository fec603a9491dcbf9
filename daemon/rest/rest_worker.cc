#include "daemon/rest/rest_worker.h"

#include "absl/strings/str_cat.h"
#include "daemon/rest/session.h"
#include "daemon/rest/upstream.h"
#include "spdlog/spdlog.h"

namespace qpool::rest {
namespace {

// A worker's share of a per-node bound: `total` split over `count` workers, remainders first.
uint32_t ShareOf(uint32_t total, uint32_t index, uint32_t count) {
  return total / count + (index < total % count ? 1 : 0);
}

}  // namespace

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
  PoolObserver(RestHost& host, size_t node, metrics::NodeMetrics& metrics, EventLoop& loop)
      : PoolMetricsObserver(metrics, loop, [] {}), host_(host), node_(node) {}
  void OnConnectFailed(const absl::Status& reason) override {
    PoolMetricsObserver::OnConnectFailed(reason);
    host_.OnRestAttemptEnd(node_, true);
  }

 private:
  RestHost& host_;
  const size_t node_;
};

RestWorker::RestWorker(const config::Config& config, uint32_t index, uint32_t count,
                       boost::asio::io_context& io, EventLoop& loop, Random& random,
                       pool::PendingBudget& pending_budget, RestHost& host, RestRetryContext retry,
                       metrics::WorkerMetrics& metrics, const config::NodeTable& table)
    : config_(&config),
      index_(index),
      count_(count),
      pending_budget_(pending_budget),
      io_(io),
      loop_(loop),
      random_(random),
      host_(host),
      retry_(retry),
      metrics_(metrics) {
  SetLimits(config.rest);
  for (const config::NodeSlot& slot : table.slots) nodes_.push_back(slot.rest);
  const size_t slots = nodes_.size();
  node_names_.resize(slots);
  factories_.resize(slots);
  observers_.resize(slots);
  pools_.resize(slots);
  pool_ptrs_.resize(slots, nullptr);
  generation_.resize(slots, 0);
  for (size_t i = 0; i < slots; ++i) {
    if (!table.slots[i].active) continue;
    generation_[i] = table.slots[i].generation;
    CreatePool(i, table.slots[i]);
  }
}

void RestWorker::SetLimits(const config::RestConfig& rest) {
  limits_.max_header_bytes = rest.max_header_bytes;
  limits_.max_headers = rest.max_headers;
  limits_.max_body_bytes = rest.max_body_bytes;
  limits_.header_timeout = absl::ToChronoNanoseconds(rest.header_timeout);
  limits_.keepalive_timeout = absl::ToChronoNanoseconds(rest.keepalive_timeout);
  limits_.request_timeout = absl::ToChronoNanoseconds(rest.request_timeout);
}

pool::NodePoolOptions RestWorker::PoolOptionsFor(size_t slot) const {
  const config::RestConfig& rest = config_->rest;
  const config::UpstreamConfig& upstream = config_->upstream;
  pool::NodePoolOptions options;
  options.node_name = nodes_[slot].ToString();
  options.min_connections = ShareOf(rest.min_connections, index_, count_);
  options.max_connections = ShareOf(rest.max_connections, index_, count_);
  options.max_connections_key = "rest.max_connections";
  options.max_streams_per_connection = 1;  // HTTP/1.1: one request at a time
  options.acquire_timeout = absl::ToChronoNanoseconds(upstream.acquire_timeout);
  options.connect_backoff_base = absl::ToChronoNanoseconds(upstream.connect_backoff_base);
  options.connect_backoff_max = absl::ToChronoNanoseconds(upstream.connect_backoff_max);
  options.max_connection_age = absl::ToChronoNanoseconds(upstream.max_connection_age);
  options.max_requests_per_connection = upstream.max_requests_per_connection;
  options.idle_timeout = absl::ToChronoNanoseconds(rest.idle_timeout);
  return options;
}

void RestWorker::CreatePool(size_t i, const config::NodeSlot& node) {
  if (nodes_[i].host.empty()) return;
  node_names_[i] = nodes_[i].ToString();
  // The slot's counters now: a slot given to a new node got fresh ones (WorkerMetrics::ResetNode)
  // before the table naming it was published.
  metrics::NodeMetrics& node_metrics = metrics_.rest_node(i);
  factories_[i] = std::make_unique<RestConnectionFactory>(
      io_, nodes_[i], absl::ToChronoNanoseconds(config_->upstream.connect_timeout),
      node.rest_tls.get(), node.tls_index, &node_metrics);
  observers_[i] = std::make_unique<PoolObserver>(host_, i, node_metrics, loop_);
  pools_[i] = std::make_unique<pool::NodePool>(PoolOptionsFor(i), pending_budget_, *factories_[i],
                                               loop_, random_, observers_[i].get());
  pool_ptrs_[i] = pools_[i].get();
}

void RestWorker::Reconfigure(const config::Config& config, const config::NodeTable* table) {
  if (stopped_ || table == nullptr) return;
  config_ = &config;
  SetLimits(config.rest);
  const size_t slots = table->slots.size();
  if (nodes_.size() < slots) {
    nodes_.resize(slots);
    node_names_.resize(slots);
    factories_.resize(slots);
    observers_.resize(slots);
    pools_.resize(slots);
    pool_ptrs_.resize(slots, nullptr);
    generation_.resize(slots, 0);
  }
  for (size_t i = 0; i < slots; ++i) {
    const config::NodeSlot& slot = table->slots[i];
    pool::NodePool* pool = pools_[i].get();
    const bool same = generation_[i] == slot.generation;
    if (pool != nullptr && (!slot.active || !same)) {
      if (!same && pool->gone()) {
        pool_ptrs_[i] = nullptr;
        pools_[i].reset();
        factories_[i].reset();
        observers_[i].reset();
        pool = nullptr;
      } else {
        pool->Retire();
      }
    } else if (pool != nullptr) {
      pool->UpdateOptions(PoolOptionsFor(i));
      // The same node; a reload may have brought new TLS settings (a new store): connections
      // opened from now on use them.
      factories_[i]->SetTls(slot.rest_tls.get(), slot.tls_index);
    }
    if (slot.active && !same && pools_[i] == nullptr) {
      nodes_[i] = slot.rest;
      generation_[i] = slot.generation;
      CreatePool(i, slot);
      if (pools_[i] != nullptr) pools_[i]->Start();
    }
  }
}

std::vector<bool> RestWorker::DrainedSlots() const {
  std::vector<bool> drained(pools_.size(), true);
  for (size_t i = 0; i < pools_.size(); ++i) {
    if (pools_[i] != nullptr && !pools_[i]->gone()) drained[i] = false;
  }
  return drained;
}

RestWorker::~RestWorker() { Stop(); }

void RestWorker::Start() {
  for (auto& pool : pools_) {
    if (pool != nullptr) pool->Start();
  }
}

void RestWorker::Adopt(boost::asio::ip::tcp::socket socket, bool refuse) {
  auto session = std::make_shared<RestSession>(*this, std::move(socket));
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
  for (auto& session : sessions) session->Abort();
  for (auto& pool : pools_) {
    if (pool != nullptr) pool->Shutdown();
  }
  pool_ptrs_.clear();
  pools_.clear();
}

void RestWorker::RecycleNode(size_t node, Duration spread) {
  if (node < pools_.size() && pools_[node] != nullptr) pools_[node]->RecycleAll(spread);
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

std::vector<metrics::NodePoolGauges> RestWorker::PoolGauges() const {
  std::vector<metrics::NodePoolGauges> gauges;
  for (const auto& pool : pools_) {
    metrics::NodePoolGauges g;
    if (pool == nullptr || pool->gone()) {
      g.present = false;
      gauges.push_back(g);
      continue;
    }
    g.removed = pool->retired();
    const pool::NodePoolStats stats = pool->stats();
    g.connecting = stats.connecting;
    g.ready = stats.ready;
    g.busy = stats.busy;
    g.draining = stats.draining;
    g.streams_in_flight = stats.streams_in_flight;
    g.waiting = stats.waiting;
    g.consecutive_connect_failures = stats.consecutive_connect_failures;
    g.usable = pool->usable();
    g.longest_wait_seconds = std::chrono::duration<double>(pool->LongestWait()).count();
    for (const pool::NodePool::ConnectionInfo& c : pool->Connections()) {
      g.connections.push_back({pool::ConnectionStateName(c.state), c.streams, c.stream_cap});
    }
    gauges.push_back(g);
  }
  return gauges;
}

}  // namespace qpool::rest
