#include "daemon/server/worker.h"

#include <malloc.h>
#include <pthread.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "absl/strings/str_cat.h"
#include "daemon/config/loader.h"
#include "daemon/health/health.h"
#include "daemon/server/downstream_session.h"
#include "daemon/server/health_probe.h"
#include "daemon/server/upstream_connection.h"
#include "daemon/tls/context_store.h"
#include "spdlog/spdlog.h"

namespace qpool::server {
namespace {

class AsioTimer : public Timer {
 public:
  explicit AsioTimer(boost::asio::io_context& io) : timer_(io) {}
  ~AsioTimer() override { Cancel(); }

  void Arm(Duration after, std::function<void()> callback) override {
    Cancel();
    state_->armed = true;
    state_->callback = std::move(callback);
    timer_.expires_after(after);
    // The handler holds the state, not the timer: a completion that raced with Cancel(), a later
    // Arm() or the timer's destruction sees another generation and does nothing.
    timer_.async_wait(
        [state = state_, generation = state_->generation](const boost::system::error_code& ec) {
          if (ec || generation != state->generation || !state->armed) return;
          state->armed = false;
          auto callback = std::move(state->callback);
          callback();
        });
  }
  void Cancel() override {
    if (!state_->armed) return;
    state_->armed = false;
    state_->generation++;
    state_->callback = nullptr;
    timer_.cancel();
  }
  bool armed() const override { return state_->armed; }

 private:
  struct State {
    bool armed = false;
    uint64_t generation = 0;
    std::function<void()> callback;
  };
  boost::asio::steady_timer timer_;
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

// A worker's share of a per-node bound: `total` split over `count` workers, remainders first.
uint32_t ShareOf(uint32_t total, uint32_t index, uint32_t count) {
  return total / count + (index < total % count ? 1 : 0);
}

health::OutlierOptions OutlierOptionsOf(const config::HealthConfig& health) {
  health::OutlierOptions options;
  options.consecutive_failures = health.consecutive_failures;
  options.base_ejection_time = absl::ToChronoNanoseconds(health.base_ejection_time);
  options.max_ejection_time = absl::ToChronoNanoseconds(health.max_ejection_time);
  options.max_ejection_percent = health.max_ejection_percent;
  options.jitter = health.jitter_percent / 100.0;
  return options;
}

}  // namespace

std::unique_ptr<Timer> AsioEventLoop::CreateTimer() { return std::make_unique<AsioTimer>(io_); }

void AsioEventLoop::Post(std::function<void()> fn) { boost::asio::post(io_, std::move(fn)); }

// Makes UpstreamConnections to one node for one worker's pool.
class Worker::UpstreamFactory : public pool::ConnectionFactory {
 public:
  UpstreamFactory(Worker& worker, config::NodeAddress node, size_t node_index)
      : worker_(worker), node_(std::move(node)), node_index_(node_index) {}

  std::shared_ptr<pool::PoolConnection> Connect(pool::PoolConnectionEvents& events) override {
    auto conn = std::make_shared<UpstreamConnection>(worker_, node_, node_index_, events);
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
    worker_.OnNodeFailure(node_);
  }

 private:
  Worker& worker_;
  const size_t node_;
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
    worker_.OnAttemptEnd(node, node_fault);
    worker_.metrics_.node(node).retry_tokens.store(tokens, std::memory_order_relaxed);
  }
  void OnReplayRefused(retry::ReplayLimit limit) override {
    worker_.metrics_.RecordReplayRefused(limit);
  }

 private:
  Worker& worker_;
};

Worker::Worker(std::shared_ptr<const config::Config> config, uint32_t index, uint32_t count,
               ProxyCounters& counters, metrics::WorkerMetrics& metrics,
               const metrics::HealthMetrics* health, UpstreamSecrets secrets)
    : config_(std::move(config)),
      index_(index),
      counters_(counters),
      metrics_(metrics),
      loop_(io_),
      retry_reporter_(std::make_unique<RetryReporter>(*this)),
      retry_(PolicyOptions(config_->retry), BudgetOptions(config_->retry),
             config::NodeCount(*config_), retry_reporter_.get()),
      read_buffer_(64 * 1024),
      health_(health),
      secrets_(secrets),
      router_(config::NodeCount(*config_), OutlierOptionsOf(config_->health),
              config_->health.enabled && config_->health.passive_enabled, random_),
      ping_interval_(config_->upstream.nodes.size(),
                     config_->health.enabled && config_->health.fast_enabled
                         ? absl::ToChronoNanoseconds(config_->health.fast_interval)
                         : Duration::zero()) {
  const config::RetryConfig& retry = config_->retry;
  retry_.policy_retries = retry.enabled;
  retry_.per_try_timeout = absl::ToChronoNanoseconds(retry.per_try_timeout);
  retry_.hedge_delay = absl::ToChronoNanoseconds(retry.hedge_delay);
  retry_.unreachable_wait = absl::ToChronoNanoseconds(retry.unreachable_wait);
  retry_.replay.per_call = retry.replay_buffer_per_call;
  retry_.replay.total = retry.replay_buffer_total;
  retry_.replay.total_bytes = &counters_.replay_bytes;
  for (const auto& [path, name] : retry.methods) {
    retry_.classifier.Override(path, RetryClassNamed(name));
  }
  if (!config_->rest.listen.host.empty()) {
    rest::RestRetryContext rest_retry;
    rest_retry.context = &retry_;
    rest_retry.local_replies = &counters_.local_replies;
    rest_retry.protocol_errors = &counters_.downstream_protocol_errors;
    rest_retry.calls_started = &counters_.calls_started;
    // The REST pools share the gRPC pools' upstream.max_pending budget.
    rest_ = std::make_unique<rest::RestWorker>(*config_, index, count, io_, loop_, random_,
                                               pending_budget_, *this, rest_retry, metrics_,
                                               secrets_.rest_tls);
  }
  if (secrets_.keys != nullptr) key_cache_.emplace(*secrets_.keys);
  const config::UpstreamConfig& upstream = config_->upstream;
  pending_budget_.limit = ShareOf(upstream.max_pending, index, count);
  retry_.max_waiting_for_node = pending_budget_.limit;  // calls waiting for a node, as queued ones
  for (const config::NodeAddress& node : upstream.nodes) {
    const size_t node_index = pools_.size();
    // Readiness is re-evaluated on a later turn of the loop, once the pool is done with the event.
    observers_.push_back(std::make_unique<NodeObserver>(*this, node_index, [this, node_index] {
      loop_.Post([this, node_index] { UpdateUsable(node_index); });
    }));
    factories_.push_back(std::make_unique<UpstreamFactory>(*this, node, node_index));
    pool::NodePoolOptions options;
    options.node_name = node.ToString();
    options.min_connections = ShareOf(upstream.min_connections, index, count);
    options.max_connections = ShareOf(upstream.max_connections, index, count);
    options.max_streams_per_connection = upstream.max_streams_per_connection;
    options.acquire_timeout = absl::ToChronoNanoseconds(upstream.acquire_timeout);
    options.connect_backoff_base = absl::ToChronoNanoseconds(upstream.connect_backoff_base);
    options.connect_backoff_max = absl::ToChronoNanoseconds(upstream.connect_backoff_max);
    options.max_connection_age = absl::ToChronoNanoseconds(upstream.max_connection_age);
    options.max_requests_per_connection = upstream.max_requests_per_connection;
    options.idle_timeout = absl::ToChronoNanoseconds(upstream.idle_timeout);
    options.max_connection_share = upstream.max_connection_share;
    pools_.push_back(std::make_unique<pool::NodePool>(std::move(options), pending_budget_,
                                                      *factories_.back(), loop_, random_,
                                                      observers_.back().get()));
  }
}

Worker::~Worker() { Stop(); }

std::shared_ptr<const tls::ClientContext> Worker::TlsContextOf(size_t node) const {
  return secrets_.tls != nullptr ? secrets_.tls->Get(node) : nullptr;
}

std::shared_ptr<const auth::ApiKeys> Worker::RestApiKeys() {
  if (!keys_apply_to_calls() || !key_cache_) return nullptr;
  return key_cache_->Snapshot();
}

void Worker::RecycleTlsNodes(const std::vector<size_t>& nodes, bool rest) {
  for (size_t node : nodes) {
    if (rest) {
      if (rest_ != nullptr) rest_->RecycleNode(node, kTlsRecycleSpread);
    } else if (node < pools_.size()) {
      pools_[node]->RecycleAll(kTlsRecycleSpread);
    }
  }
}

void Worker::Start() {
  running_ = true;
  Post([this] {
    for (auto& pool : pools_) pool->Start();
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
  auto session = std::make_shared<DownstreamSession>(*this, std::move(socket));
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

metrics::NodeMetrics* Worker::NodeMetricsOf(const pool::NodePool* pool) {
  const int node = NodeIndexOf(pool);
  return node < 0 ? nullptr : &metrics_.node(static_cast<size_t>(node));
}

int Worker::NodeIndexOf(const pool::NodePool* pool) const {
  for (size_t i = 0; i < pools_.size(); ++i) {
    if (pools_[i].get() == pool) return static_cast<int>(i);
  }
  return -1;
}

std::vector<metrics::NodePoolGauges> Worker::PoolGauges() const {
  std::vector<metrics::NodePoolGauges> gauges;
  for (const auto& pool : pools_) {
    const pool::NodePoolStats stats = pool->stats();
    metrics::NodePoolGauges g;
    g.connecting = stats.connecting;
    g.ready = stats.ready;
    g.busy = stats.busy;
    g.draining = stats.draining;
    g.streams_in_flight = stats.streams_in_flight;
    g.waiting = stats.waiting;
    g.consecutive_connect_failures = stats.consecutive_connect_failures;
    g.usable = metrics_.node(gauges.size()).UsableHere();
    g.longest_wait_seconds = std::chrono::duration<double>(pool->LongestWait()).count();
    for (const pool::NodePool::ConnectionInfo& c : pool->Connections()) {
      g.connections.push_back({pool::ConnectionStateName(c.state), c.streams, c.stream_cap});
    }
    gauges.push_back(g);
  }
  return gauges;
}

void Worker::UpdateUsable(size_t node) {
  if (node >= pools_.size()) return;  // stopping
  const pool::NodePool& pool = *pools_[node];
  // See NodeMetrics::live / failing: a node in backoff between failed attempts stays "failing"
  // rather than flapping with every attempt.
  const bool live = pool.has_live_connection();
  metrics_.node(node).live.store(live, std::memory_order_relaxed);
  metrics_.node(node).failing.store(!live && pool.stats().consecutive_connect_failures > 0,
                                    std::memory_order_relaxed);
}

void Worker::RefreshRouter() {
  for (size_t i = 0; i < pools_.size(); ++i) {
    health::NodeRouter::NodeState& state = router_.node(i);
    state.healthy = health_ == nullptr || health_->healthy(i);
    state.live = pools_[i]->has_live_connection();
    state.usable = pools_[i]->usable();
    state.load = pools_[i]->load();
  }
}

pool::NodePool& Worker::PickPool() {
  if (pools_.size() == 1) return *pools_.front();
  // docs/architecture.md, "Balancing": health first, then a connection up, then power of two
  // choices on streams in flight plus calls waiting.
  RefreshRouter();
  bool panic = false;
  const size_t node = router_.Pick(loop_.Now(), &panic);
  if (panic) metrics_.AddPanicRoute();
  return *pools_[node];
}

void Worker::OnAttemptEnd(size_t node, bool failed) {
  if (node >= router_.size()) return;
  if (failed) {
    OnNodeFailure(node);
  } else {
    router_.OnAttemptEnd(node, false, loop_.Now());
  }
}

void Worker::OnNodeFailure(size_t node) {
  if (node >= router_.size() || router_.size() < 2) return;  // one node: nowhere else to go
  if (router_.OnAttemptEnd(node, true, loop_.Now())) {
    metrics_.node(node).ejections.Add();
    SPDLOG_WARN("upstream {}: ejected after {} failures in a row (health.consecutive_failures)",
                config::NodeName(*config_, node), config_->health.consecutive_failures);
  }
}

void Worker::StartProbe(size_t node, const ProbeSpec& spec, Duration timeout,
                        std::function<void(health::ProbeResult)> done) {
  if (node >= pools_.size()) {  // stopping
    health::ProbeResult result;
    result.detail = "qpoold is stopping";
    done(result);
    return;
  }
  auto probe =
      std::make_unique<HealthProbe>(*this, *pools_[node], config_->upstream.nodes[node].ToString(),
                                    spec, timeout, std::move(done));
  HealthProbe* raw = probe.get();
  probes_.emplace(raw, std::move(probe));
  raw->Start();
}

void Worker::OnProbeDone(HealthProbe* probe) {
  auto it = probes_.find(probe);
  if (it == probes_.end()) return;
  if (finished_probes_.empty()) {
    Post([this] { finished_probes_.clear(); });
  }
  finished_probes_.push_back(std::move(it->second));
  probes_.erase(it);
}

void Worker::BackOffPings(size_t node) {
  if (node >= ping_interval_.size() || ping_interval_[node] == Duration::zero()) return;
  const Duration ceiling = absl::ToChronoNanoseconds(config_->health.fast_interval) * 32;
  const Duration next = std::min(ping_interval_[node] * 2, ceiling);
  if (next != ping_interval_[node]) {
    SPDLOG_WARN("upstream {}: GOAWAY too_many_pings; health PING interval now {}",
                config_->upstream.nodes[node].ToString(),
                absl::FormatDuration(absl::FromChrono(next)));
  }
  ping_interval_[node] = next;
}

pool::NodePool* Worker::PickPoolOtherThan(const pool::NodePool* except) {
  const int except_node = NodeIndexOf(except);
  if (except_node < 0) return nullptr;
  RefreshRouter();
  const std::optional<size_t> node =
      router_.PickOtherThan(static_cast<size_t>(except_node), loop_.Now());
  return node ? pools_[*node].get() : nullptr;
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

std::vector<metrics::NodePoolGauges> Worker::RestPoolGauges() const {
  if (rest_ == nullptr) return {};
  return rest_->PoolGauges();
}

void Worker::RefreshRouterFrom(const std::vector<pool::NodePool*>& pools) {
  for (size_t i = 0; i < pools.size() && i < router_.size(); ++i) {
    health::NodeRouter::NodeState& state = router_.node(i);
    state.healthy = health_ == nullptr || health_->healthy(i);
    state.live = pools[i]->has_live_connection();
    state.usable = pools[i]->usable();
    state.load = pools[i]->load();
  }
}

size_t Worker::PickRestNode(const std::vector<pool::NodePool*>& pools) {
  if (pools.size() == 1) return 0;
  RefreshRouterFrom(pools);
  bool panic = false;
  const size_t node = router_.Pick(loop_.Now(), &panic);
  if (panic) metrics_.AddPanicRoute();
  return node;
}

std::optional<size_t> Worker::PickRestNodeOtherThan(size_t except,
                                                    const std::vector<pool::NodePool*>& pools) {
  if (except >= pools.size()) return std::nullopt;
  RefreshRouterFrom(pools);
  return router_.PickOtherThan(except, loop_.Now());
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
    for (auto& pool : pools_) pool->Shutdown();
    pools_.clear();   // aborts what is still open
    probes_.clear();  // after their pools: a pool forgets its queued waiters on destruction
    finished_probes_.clear();
    io_.stop();
  });
  if (thread_.joinable()) thread_.join();
}

}  // namespace qpool::server
