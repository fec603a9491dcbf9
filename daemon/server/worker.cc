#include "daemon/server/worker.h"

#include <malloc.h>
#include <pthread.h>

#include <algorithm>
#include <boost/asio/post.hpp>

#include "absl/strings/str_cat.h"
#include "daemon/auth/api_keys.h"
#include "daemon/config/loader.h"
#include "daemon/config/node_table.h"
#include "daemon/metrics/health_metrics.h"
#include "daemon/metrics/scrape.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/pool/balancer.h"
#include "daemon/pool/slot_pools.h"
#include "daemon/rest/rest_worker.h"
#include "daemon/retry/retry_context.h"
#include "daemon/server/downstream_session.h"
#include "daemon/server/health_probe.h"
#include "daemon/server/node_probes.h"
#include "daemon/server/proxy_counters.h"
#include "daemon/server/small_alloc.h"
#include "daemon/server/upstream_connection.h"
#include "daemon/tls/context_store.h"
#include "spdlog/spdlog.h"

namespace qpool::server {
// Makes UpstreamConnections to one node for one worker's pool.
class Worker::UpstreamFactory : public pool::SlotConnectionFactory {
 public:
  UpstreamFactory(Worker& worker, config::NodeAddress node, size_t node_index)
      : worker_(worker), node_(std::move(node)), node_index_(node_index) {}

  std::shared_ptr<pool::PoolConnection> Connect(pool::PoolConnectionEvents& events) override {
    auto conn = std::make_shared<UpstreamConnection>(worker_.connection_context_, node_,
                                                     node_index_, events);
    conn->Connect();
    return conn;
  }

 private:
  Worker& worker_;
  const config::NodeAddress node_;
  const size_t node_index_;
};

// The pool's metrics observer, which also tells passive health about connect failures.
class Worker::NodeObserver : public metrics::PoolMetricsObserver {
 public:
  NodeObserver(Worker& worker, size_t node, std::function<void()> on_change)
      : PoolMetricsObserver(worker.metrics_.node(node), worker.loop_, std::move(on_change)),
        worker_(worker),
        node_(node) {}
  void OnConnectFailed(const absl::Status& reason) override {
    PoolMetricsObserver::OnConnectFailed(reason);
    worker_.balancer_->OnAttemptEnd(node_, /*failed=*/true);
    if (worker_.connect_failure_hook_) worker_.connect_failure_hook_();
  }

 private:
  Worker& worker_;
  const size_t node_;
};

// The gRPC side of pool::SlotPools: a slot's gRPC endpoint, its pool options under upstream.*,
// HTTP/2 connections to it (UpstreamConnection, TLS from the slot's store at connect time) and
// an observer that keeps the node's readiness mirror and tells passive health of connect failures.
class Worker::PoolParts : public pool::SlotPoolParts {
 public:
  explicit PoolParts(Worker& worker) : worker_(worker) {}

  const config::NodeAddress& EndpointOf(const NodeSlot& slot) const override { return slot.grpc; }

  pool::NodePoolOptions OptionsFor(const NodeSlot& slot) const override {
    const config::UpstreamConfig& upstream = worker_.config_->upstream;
    const uint32_t index = worker_.index_;
    const uint32_t count = worker_.count_;
    pool::NodePoolOptions options = pool::UpstreamPoolOptions(upstream, slot.grpc);
    options.min_connections = pool::WorkerShare(upstream.min_connections, index, count);
    options.max_connections = pool::WorkerShare(upstream.max_connections, index, count);
    options.max_streams_per_connection = upstream.max_streams_per_connection;
    options.idle_timeout = absl::ToChronoNanoseconds(upstream.idle_timeout);
    options.max_connection_share = upstream.max_connection_share;
    return options;
  }

  std::unique_ptr<pool::SlotConnectionFactory> NewFactory(size_t index,
                                                          const NodeSlot& slot) override {
    return std::make_unique<UpstreamFactory>(worker_, slot.grpc, index);
  }

  // Readiness is re-evaluated on a later turn of the loop, once the pool is done with the event.
  std::unique_ptr<pool::PoolObserver> NewObserver(size_t index) override {
    Worker& worker = worker_;
    return std::make_unique<NodeObserver>(worker, index, [&worker, index] {
      worker.loop_.Post([&worker, index] { worker.UpdateUsable(index); });
    });
  }

 private:
  Worker& worker_;
};

namespace {

retry::RetryPolicyOptions PolicyOptions(const config::RetryConfig& config) {
  auto on = [&config](std::string_view name) {
    return std::find(config.on.begin(), config.on.end(), name) != config.on.end();
  };
  retry::RetryPolicyOptions options;
  options.max_attempts = config.max_attempts;
  options.backoff_base = absl::ToChronoNanoseconds(config.backoff_base);
  options.backoff_max = absl::ToChronoNanoseconds(config.backoff_max);
  options.retry_unavailable = on("unavailable");
  options.retry_resource_exhausted_with_pushback = on("resource_exhausted");
  options.retry_per_try_timeout = on("per_try_timeout");
  return options;
}

retry::RetryBudget::Options BudgetOptions(const config::RetryConfig& config) {
  return retry::RetryBudget::Options{static_cast<double>(config.budget_max_tokens),
                                     config.budget_token_ratio, config.min_retries_in_flight,
                                     static_cast<double>(config.retries_in_flight_percent) / 100.0};
}

retry::RetryClass RetryClassNamed(const std::string& name) {
  if (name == "read") return retry::RetryClass::kRead;
  if (name == "id_scoped_write") return retry::RetryClass::kIdScopedWrite;
  if (name == "filter_scoped_write") return retry::RetryClass::kFilterScopedWrite;
  return retry::RetryClass::kNeverRepeat;  // "never"; the loader admits nothing else
}

}  // namespace

// Retry events, into this worker's metrics and passive health.
class Worker::RetryReporter : public retry::RetryEvents {
 public:
  explicit RetryReporter(Worker& worker) : worker_(worker) {}
  void OnRetry(retry::RetryClass retry_class, retry::RetryReason reason) override {
    worker_.metrics_.RecordRetry(retry_class, reason);
    if (reason == retry::RetryReason::kTransparent) {
      worker_.counters_.transparent_retries.fetch_add(1, std::memory_order_relaxed);
    }
  }
  void OnRetryRefused(retry::RetryRefusal refusal) override {
    worker_.metrics_.RecordRetryRefused(refusal);
  }
  void OnHedge(bool won) override { worker_.metrics_.RecordHedge(won); }
  void OnAttemptResult(size_t node, bool node_fault, double tokens) override {
    worker_.balancer_->OnAttemptEnd(node, node_fault);
    worker_.metrics_.node(node).retry_tokens.store(tokens, std::memory_order_relaxed);
  }
  void OnReplayRefused(retry::ReplayLimit limit) override {
    worker_.metrics_.RecordReplayRefused(limit);
  }

 private:
  Worker& worker_;
};

namespace {

// One slot per config node, in config order: the table of a worker made without one.
std::shared_ptr<const NodeTable> DefaultTable(const config::Config& config,
                                              const UpstreamSecrets& secrets) {
  auto table = std::make_shared<NodeTable>();
  const size_t count = config::NodeCount(config);
  const bool rest = !config.rest.listen.host.empty();
  const std::vector<config::NodeAddress> rest_nodes =
      rest ? rest::RestNodesOf(config) : std::vector<config::NodeAddress>{};
  // Non-owning aliases: the Proxy owns the stores and outlives the workers.
  std::shared_ptr<const tls::ContextStore> store(std::shared_ptr<const tls::ContextStore>(),
                                                 secrets.tls);
  std::shared_ptr<const tls::ContextStore> rest_store(std::shared_ptr<const tls::ContextStore>(),
                                                      secrets.rest_tls);
  for (size_t i = 0; i < count; ++i) {
    NodeSlot slot;
    slot.active = true;
    slot.generation = 1;
    if (i < config.upstream.nodes.size()) slot.grpc = config.upstream.nodes[i];
    if (i < rest_nodes.size()) slot.rest = rest_nodes[i];
    slot.name = config::NodeName(config, i);
    slot.tls = secrets.tls != nullptr ? store : nullptr;
    slot.rest_tls = secrets.rest_tls != nullptr && rest ? rest_store : nullptr;
    slot.tls_index = i;
    table->slots.push_back(std::move(slot));
  }
  return table;
}

}  // namespace

Worker::Worker(std::shared_ptr<const config::Config> config, uint32_t index, uint32_t count,
               ProxyCounters& counters, metrics::WorkerMetrics& metrics,
               const metrics::HealthMetrics* health, UpstreamSecrets secrets,
               std::shared_ptr<const NodeTable> table)
    : config_(std::move(config)),
      table_(table != nullptr ? std::move(table) : DefaultTable(*config_, secrets)),
      index_(index),
      count_(count),
      counters_(counters),
      metrics_(metrics),
      loop_(io_),
      retry_reporter_(std::make_unique<RetryReporter>(*this)),
      retry_(std::make_unique<retry::RetryContext>(PolicyOptions(config_->retry),
                                                   BudgetOptions(config_->retry),
                                                   table_->slots.size(), retry_reporter_.get())),
      read_buffer_(64 * 1024),
      pending_budget_(std::make_unique<pool::PendingBudget>()),
      pools_(std::make_unique<pool::SlotPools>(std::make_unique<PoolParts>(*this), *pending_budget_,
                                               loop_, random_)),
      balancer_(std::make_unique<pool::Balancer>(loop_, random_, metrics_, health)),
      secrets_(secrets),
      probes_(std::make_unique<NodeProbes>(*this, *pools_)),
      call_context_{loop_, random_, counters_, metrics_, *retry_, *balancer_},
      connection_context_{io_,           loop_,    counters_, metrics_,     read_buffer_,
                          call_context_, *probes_, *this,     config_.get()} {
  probes_->Configure(config_->health, *table_);
  const config::RetryConfig& retry = config_->retry;
  retry_->policy_retries = retry.enabled;
  retry_->per_try_timeout = absl::ToChronoNanoseconds(retry.per_try_timeout);
  retry_->hedge_delay = absl::ToChronoNanoseconds(retry.hedge_delay);
  retry_->unreachable_wait = absl::ToChronoNanoseconds(retry.unreachable_wait);
  retry_->replay.per_call = retry.replay_buffer_per_call;
  retry_->replay.total = retry.replay_buffer_total;
  retry_->replay.total_bytes = &counters_.replay_bytes;
  for (const auto& [path, name] : retry.methods) {
    retry_->classifier.Override(path, RetryClassNamed(name));
  }
  if (!config_->rest.listen.host.empty()) {
    rest::RestRetryContext rest_retry;
    rest_retry.context = retry_.get();
    rest_retry.local_replies = &counters_.local_replies;
    rest_retry.protocol_errors = &counters_.downstream_protocol_errors;
    rest_retry.calls_started = &counters_.calls_started;
    // The REST pools share the gRPC pools' upstream.max_pending budget.
    rest_ = std::make_unique<rest::RestWorker>(
        *config_, index, count, io_, loop_, random_, *pending_budget_,
        static_cast<rest::RestHost&>(*this), *balancer_, rest_retry, metrics_, *table_);
    balancer_->SetPools(pool::Protocol::kRest, &rest_->slot_pools());
  }
  if (secrets_.keys != nullptr) key_cache_ = std::make_unique<auth::ApiKeyCache>(*secrets_.keys);
  pending_budget_->limit = pool::WorkerShare(config_->upstream.max_pending, index, count);
  retry_->max_waiting_for_node =
      pending_budget_->limit;  // calls waiting for a node, as queued ones
  pools_->Apply(*table_);
  balancer_->SetPools(pool::Protocol::kGrpc, pools_.get());
  balancer_->Rebuild(*table_, config_->health);
  UpdateContexts();
}

void Worker::UpdateContexts() {
  connection_context_.config = config_.get();
  call_context_.nodes = table_.get();
  call_context_.start_at_bytes =
      std::min<size_t>(config_->retry.replay_buffer_per_call, config_->server.stream_window / 2);
  call_context_.call_keys =
      secrets_.keys != nullptr && secrets_.keys->applies_to_calls() ? key_cache_.get() : nullptr;
  call_context_.key_mode =
      secrets_.keys != nullptr ? secrets_.keys->mode() : auth::KeyMode::kIfAbsent;
}

void Worker::Reconfigure(std::shared_ptr<const config::Config> config,
                         std::shared_ptr<const NodeTable> table, UpstreamSecrets secrets) {
  if (!running_) return;
  config_ = std::move(config);
  table_ = std::move(table);
  if (secrets.keys != secrets_.keys) {
    key_cache_.reset();
    if (secrets.keys != nullptr) key_cache_ = std::make_unique<auth::ApiKeyCache>(*secrets.keys);
  }
  secrets_ = secrets;
  // First, before anything runs that may read them: the old key cache and table are gone.
  UpdateContexts();
  balancer_->Rebuild(*table_, config_->health);
  // Retry: the policy and classes apply to the next decision; budgets keep their tokens (capped)
  // and their retries in flight.
  const config::RetryConfig& retry_config = config_->retry;
  retry_->policy = retry::RetryPolicy(PolicyOptions(retry_config));
  retry_->classifier = retry::MethodClassifier();
  for (const auto& [path, name] : retry_config.methods) {
    retry_->classifier.Override(path, RetryClassNamed(name));
  }
  retry_->policy_retries = retry_config.enabled;
  retry_->per_try_timeout = absl::ToChronoNanoseconds(retry_config.per_try_timeout);
  retry_->hedge_delay = absl::ToChronoNanoseconds(retry_config.hedge_delay);
  retry_->replay.per_call = retry_config.replay_buffer_per_call;
  retry_->replay.total = retry_config.replay_buffer_total;
  const size_t slots = table_->slots.size();
  for (retry::RetryBudget& budget : retry_->budgets)
    budget.SetOptions(BudgetOptions(config_->retry));
  while (retry_->budgets.size() < slots) {
    retry_->budgets.emplace_back(BudgetOptions(config_->retry));
  }
  retry_->unreachable_wait = absl::ToChronoNanoseconds(retry_config.unreachable_wait);
  pending_budget_->limit = pool::WorkerShare(config_->upstream.max_pending, index_, count_);
  retry_->max_waiting_for_node = pending_budget_->limit;
  probes_->Configure(config_->health, *table_);
  pools_->Apply(*table_);  // new slots get pools, removed ones retire, the rest update
  if (rest_ != nullptr) {
    // The REST side reads the worker's retry context (RestRetryContext::context): nothing to copy.
    rest_->Reconfigure(*config_, table_.get());
  }
}

std::vector<bool> Worker::DrainedSlots() const {
  std::vector<bool> drained(table_->slots.size(), true);
  auto both = [&drained](const std::vector<bool>& these) {
    for (size_t s = 0; s < drained.size() && s < these.size(); ++s) {
      drained[s] = drained[s] && these[s];
    }
  };
  both(pools_->DrainedSlots());
  if (rest_ != nullptr) both(rest_->slot_pools().DrainedSlots());
  return drained;
}

Worker::~Worker() { Stop(); }

std::shared_ptr<const tls::ClientContext> Worker::TlsContextOf(size_t node) const {
  if (node >= table_->slots.size()) return nullptr;
  const NodeSlot& slot = table_->slots[node];
  return slot.tls != nullptr ? slot.tls->Get(slot.tls_index) : nullptr;
}

std::shared_ptr<const auth::ApiKeys> Worker::RestApiKeys() {
  return call_context_.call_keys != nullptr ? call_context_.call_keys->Snapshot() : nullptr;
}

const auth::ApiKeys* Worker::api_keys() { return key_cache_ ? &key_cache_->Get() : nullptr; }

void Worker::RecycleTlsNodes(const tls::ContextStore* store, const std::vector<size_t>& nodes,
                             bool rest) {
  // `nodes` are indexes in `store`; the slots whose endpoint uses one of them (DNS discovery may
  // have made several slots of one upstream.nodes entry) recycle that endpoint's pool. A store a
  // reload replaced meanwhile names no slot any more.
  for (size_t s = 0; s < table_->slots.size(); ++s) {
    const NodeSlot& slot = table_->slots[s];
    if ((rest ? slot.rest_tls.get() : slot.tls.get()) != store) continue;
    if (std::find(nodes.begin(), nodes.end(), slot.tls_index) == nodes.end()) continue;
    if (rest) {
      if (rest_ != nullptr) rest_->slot_pools().RecycleAll(s, kTlsRecycleSpread);
    } else {
      pools_->RecycleAll(s, kTlsRecycleSpread);
    }
  }
}

void Worker::Start() {
  running_ = true;
  Post([this] {
    pools_->Start();
    // The sweep looks at every app connection once a period: a quarter of the shorter timeout,
    // between 50 ms and 1 s, so a timeout fires at most a period late; one timer per worker
    // rather than one per connection, and nothing on the data path.
    Duration shortest = Duration::max();
    for (absl::Duration timeout : {config_->server.handshake_timeout, config_->server.idle_timeout,
                                   config_->server.stream_idle_timeout}) {
      if (timeout > absl::ZeroDuration()) {
        shortest = std::min(shortest, absl::ToChronoNanoseconds(timeout));
      }
    }
    if (shortest != Duration::max()) {
      sweep_period_ = std::clamp<Duration>(shortest / 4, std::chrono::milliseconds(50),
                                           std::chrono::seconds(1));
      sweep_timer_ = loop_.CreateTimer();
      sweep_timer_->Arm(sweep_period_, [this] { SweepSessions(); });
    }
    if (rest_ != nullptr) rest_->Start();
  });
  thread_ = std::thread([this] {
    // "qpool-io-0", ...: for top -H, perf and /proc/<pid>/task/<tid>/ (at most 15 characters).
    pthread_setname_np(pthread_self(), absl::StrCat("qpool-io-", index_).substr(0, 15).c_str());
    auto guard = boost::asio::make_work_guard(io_);
    io_.run();
  });
}

void Worker::Post(std::function<void()> fn) { boost::asio::post(io_, std::move(fn)); }

void Worker::Adopt(boost::asio::ip::tcp::socket socket, bool refuse) {
  // In a session slab (small_alloc.h): it goes back to the kernel with its crowd.
  auto session = std::allocate_shared<DownstreamSession>(SessionSlabAllocator<DownstreamSession>(),
                                                         connection_context_, std::move(socket));
  sessions_.emplace(session.get(), session);
  counters_.downstream_open.fetch_add(1, std::memory_order_relaxed);
  if (refuse) {
    session->Refuse(absl::StrCat("qpool: server.max_client_connections (",
                                 config_->server.max_client_connections, ") reached"));
  } else if (draining_) {
    session->Refuse("qpool: shutting down");
  } else {
    session->Start();
  }
}

void Worker::BeginDrain(std::function<void()> on_idle) {
  draining_ = true;
  on_drained_ = std::move(on_idle);
  std::vector<std::shared_ptr<DownstreamSession>> sessions;
  for (auto& [ptr, session] : sessions_) sessions.push_back(session);
  for (auto& session : sessions) session->BeginDrain();
  if (rest_ != nullptr) rest_->BeginDrain();
  CheckDrained();
}

namespace {

// The gauges of `pools`, by slot, for the scrape and /pool; `usable` answers for slot s's pool.
template <typename Usable>
std::vector<metrics::NodePoolGauges> GaugesOf(const pool::SlotPools& pools, Usable usable) {
  std::vector<metrics::NodePoolGauges> gauges(pools.size());
  for (size_t s = 0; s < pools.size(); ++s) {
    const pool::NodePool* pool = pools.pool(s);
    metrics::NodePoolGauges& g = gauges[s];
    if (pool == nullptr || pool->gone()) {
      g.present = false;
      continue;
    }
    g.removed = pool->retired();
    static_cast<pool::NodePoolStats&>(g) = pool->stats();
    g.usable = usable(s, *pool);
    g.longest_wait_seconds = std::chrono::duration<double>(pool->LongestWait()).count();
    for (const pool::NodePool::ConnectionInfo& c : pool->Connections()) {
      g.connections.push_back({pool::ConnectionStateName(c.state), c.streams, c.stream_cap});
    }
  }
  return gauges;
}

}  // namespace

std::vector<metrics::NodePoolGauges> Worker::PoolGauges() const {
  // A gRPC node's readiness is the worker's mirror (UpdateUsable), as /readyz reads it.
  return GaugesOf(
      *pools_, [this](size_t s, const pool::NodePool&) { return metrics_.node(s).UsableHere(); });
}

std::vector<metrics::NodePoolGauges> Worker::RestPoolGauges() const {
  if (rest_ == nullptr) return {};
  return GaugesOf(rest_->slot_pools(),
                  [](size_t, const pool::NodePool& pool) { return pool.usable(); });
}

void Worker::UpdateUsable(size_t node) {
  const pool::NodePool* const found = pools_->pool(node);
  if (found == nullptr) return;  // stopping, or freed
  const pool::NodePool& pool = *found;
  // See NodeMetrics::live / failing: a node in backoff between failed attempts stays "failing"
  // rather than flapping with every attempt.
  const bool live = pool.has_live_connection();
  metrics_.node(node).live.store(live, std::memory_order_relaxed);
  metrics_.node(node).failing.store(!live && pool.stats().consecutive_connect_failures > 0,
                                    std::memory_order_relaxed);
}

void Worker::OnSessionClosed(DownstreamSession* session) {
  counters_.downstream_open.fetch_sub(1, std::memory_order_relaxed);
  // Keep the session alive until the current event is done with it.
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return;
  std::shared_ptr<DownstreamSession> keep = std::move(it->second);
  sessions_.erase(it);
  Post([keep] {});
  MaybeTrimMemory();
  CheckDrained();
}

void Worker::SweepSessions() {
  const MonoTime now = loop_.Now();
  // Decide first, act after: closing a session removes it from sessions_.
  std::vector<std::pair<std::shared_ptr<DownstreamSession>, DownstreamSession::TimeoutAction>> due;
  for (auto& [ptr, session] : sessions_) {
    const DownstreamSession::TimeoutAction action = ptr->CheckTimeouts(now);
    if (action != DownstreamSession::TimeoutAction::kNone) {
      due.emplace_back(session, action);
    } else {
      ptr->TrimIdle();
    }
  }
  for (auto& [session, action] : due) session->OnTimeout(action);
  // Streams stalled past server.stream_idle_timeout: resetting one closes no connection, but
  // ends calls, which may hand upstream streams to other sessions' calls; a snapshot keeps the
  // walk independent of that.
  std::vector<std::shared_ptr<DownstreamSession>> busy;
  for (auto& [ptr, session] : sessions_) {
    if (ptr->has_calls()) busy.push_back(session);
  }
  for (auto& session : busy) session->CheckStreams(now);
  sweep_timer_->Arm(sweep_period_, [this] { SweepSessions(); });
}

void Worker::AdoptRest(boost::asio::ip::tcp::socket socket, bool refuse) {
  if (rest_ == nullptr || !running_) {
    boost::system::error_code ignored;
    socket.close(ignored);
    return;
  }
  counters_.downstream_open.fetch_add(1, std::memory_order_relaxed);
  rest_->Adopt(std::move(socket), refuse);
}

void Worker::OnRestSessionClosed() {
  counters_.downstream_open.fetch_sub(1, std::memory_order_relaxed);
  CheckDrained();
}

void Worker::MaybeTrimMemory() {
  // After a crowd of app connections leaves (a deploy, a load test), glibc keeps the freed memory
  // in its arenas, and the sidecar's RSS stays at its peak. Once this worker holds half the
  // connections it held at its peak (of at least kTrimPeak), give the free pages back.
  constexpr size_t kTrimPeak = 256;
  peak_sessions_ = std::max(peak_sessions_, sessions_.size());
  if (peak_sessions_ < kTrimPeak || sessions_.size() > peak_sessions_ / 2) return;
  peak_sessions_ = sessions_.size();
  // On a later turn, once the closed sessions themselves are freed.
  Post([] { malloc_trim(0); });
}

void Worker::CheckDrained() {
  if (draining_ && sessions_.empty() && (rest_ == nullptr || rest_->idle()) && on_drained_) {
    auto callback = std::move(on_drained_);
    on_drained_ = nullptr;
    callback();
  }
}

void Worker::Stop() {
  if (!running_.exchange(false)) return;
  // Close everything on the worker's own thread, then let run() return.
  Post([this] {
    std::vector<std::shared_ptr<DownstreamSession>> sessions;
    for (auto& [ptr, session] : sessions_) sessions.push_back(session);
    for (auto& session : sessions) session->Abort();
    if (sweep_timer_) sweep_timer_->Cancel();
    if (rest_ != nullptr) rest_->Stop();
    pools_->Shutdown();  // aborts what is still open
    probes_->Clear();    // after their pools: a pool forgets its queued waiters on destruction
    io_.stop();
  });
  if (thread_.joinable()) thread_.join();
}

}  // namespace qpool::server
