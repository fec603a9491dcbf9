#include "daemon/server/worker.h"

#include <pthread.h>

#include <algorithm>
#include <boost/asio/post.hpp>

#include "absl/strings/str_cat.h"
#include "daemon/auth/api_keys.h"
#include "daemon/config/loader.h"
#include "daemon/config/node_table.h"
#include "daemon/metrics/health_metrics.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/pool/balancer.h"
#include "daemon/rest/rest_worker.h"
#include "daemon/retry/retry_context.h"
#include "daemon/server/health_probe.h"
#include "daemon/server/node_probes.h"
#include "daemon/server/proxy_counters.h"
#include "daemon/server/session_set.h"
#include "daemon/server/upstream_connection.h"
#include "daemon/server/worker_pools.h"
#include "daemon/tls/context_store.h"
#include "spdlog/spdlog.h"

namespace qpool::server {
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

// The retry settings the worker's calls read at each decision (config retry.*): the policy, the
// methods' classes, retries on or off, the per-try timeout, the hedge delay, the unreachable wait
// and the replay limits. The budgets are the caller's (they keep their tokens over a reload).
void SetRetrySettings(const config::RetryConfig& retry, retry::RetryContext& context) {
  context.policy = retry::RetryPolicy(PolicyOptions(retry));
  context.classifier = retry::MethodClassifier();
  for (const auto& [path, name] : retry.methods) {
    context.classifier.Override(path, RetryClassNamed(name));
  }
  context.policy_retries = retry.enabled;
  context.per_try_timeout = absl::ToChronoNanoseconds(retry.per_try_timeout);
  context.hedge_delay = absl::ToChronoNanoseconds(retry.hedge_delay);
  context.unreachable_wait = absl::ToChronoNanoseconds(retry.unreachable_wait);
  context.replay.per_call = retry.replay_buffer_per_call;
  context.replay.total = retry.replay_buffer_total;
}

// The call and connection contexts' reloadable settings, from the config, node table and secrets
// in force and the key cache made for them.
void SetReloadable(const config::Config& config, const NodeTable& table,
                   const UpstreamSecrets& secrets, auth::ApiKeyCache* key_cache, CallContext& calls,
                   ConnectionContext& connections) {
  connections.config = &config;
  calls.nodes = &table;
  calls.start_at_bytes =
      std::min<size_t>(config.retry.replay_buffer_per_call, config.server.stream_window / 2);
  calls.call_keys =
      secrets.keys != nullptr && secrets.keys->applies_to_calls() ? key_cache : nullptr;
  calls.key_mode = secrets.keys != nullptr ? secrets.keys->mode() : auth::KeyMode::kIfAbsent;
}

}  // namespace

Worker::Worker(std::shared_ptr<const config::Config> config, uint32_t index, uint32_t count,
               ProxyCounters& counters, metrics::WorkerMetrics& metrics,
               const metrics::HealthMetrics* health, UpstreamSecrets secrets,
               std::shared_ptr<const NodeTable> table)
    : config_(std::move(config)),
      table_(table != nullptr ? std::move(table) : DefaultTable(*config_, secrets)),
      index_(index),
      counters_(counters),
      metrics_(metrics),
      loop_(io_),
      retry_reporter_(std::make_unique<RetryReporter>(*this)),
      retry_(std::make_unique<retry::RetryContext>(PolicyOptions(config_->retry),
                                                   BudgetOptions(config_->retry),
                                                   table_->slots.size(), retry_reporter_.get())),
      read_buffer_(64 * 1024),
      // HTTP/2 connections to the nodes (TLS from the slot's store at connect time); a failed
      // connect counts against its node in passive health.
      pools_(std::make_unique<WorkerPools>(
          index, count, loop_, random_, metrics_,
          [this](const config::NodeAddress& node, size_t slot, pool::PoolConnectionEvents& events) {
            auto conn =
                std::make_shared<UpstreamConnection>(connection_context_, node, slot, events);
            conn->Connect();
            return conn;
          },
          [this](size_t slot) { balancer_->OnAttemptEnd(slot, /*failed=*/true); })),
      balancer_(std::make_unique<pool::Balancer>(loop_, random_, metrics_, health)),
      secrets_(secrets),
      probes_(std::make_unique<NodeProbes>(*this, pools_->grpc())),
      call_context_{loop_, random_, counters_, metrics_, *retry_, *balancer_},
      connection_context_{io_,           loop_,    counters_, metrics_,     read_buffer_,
                          call_context_, *probes_, *this,     config_.get()},
      sessions_(std::make_unique<SessionSet>(
          connection_context_, [this] { return rest_ == nullptr || rest_->idle(); })) {
  probes_->Configure(config_->health, *table_);
  SetRetrySettings(config_->retry, *retry_);
  retry_->replay.total_bytes = &counters_.replay_bytes;
  if (!config_->rest.listen.host.empty()) {
    rest::RestRetryContext rest_retry;
    rest_retry.context = retry_.get();
    rest_retry.local_replies = &counters_.local_replies;
    rest_retry.protocol_errors = &counters_.downstream_protocol_errors;
    rest_retry.calls_started = &counters_.calls_started;
    // The REST pools share the gRPC pools' upstream.max_pending budget.
    rest_ = std::make_unique<rest::RestWorker>(
        *config_, index, count, io_, loop_, random_, pools_->budget(),
        static_cast<rest::RestHost&>(*this), *balancer_, rest_retry, metrics_, *table_);
    balancer_->SetPools(pool::Protocol::kRest, &rest_->slot_pools());
    pools_->SetRestPools(&rest_->slot_pools());
  }
  if (secrets_.keys != nullptr) key_cache_ = std::make_unique<auth::ApiKeyCache>(*secrets_.keys);
  pools_->Apply(config_, table_);  // the pending budget's share, then the pools
  retry_->max_waiting_for_node =
      pools_->budget().limit;  // calls waiting for a node, as queued ones
  balancer_->SetPools(pool::Protocol::kGrpc, &pools_->grpc());
  balancer_->Rebuild(*table_, config_->health);
  SetReloadable(*config_, *table_, secrets_, key_cache_.get(), call_context_, connection_context_);
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
  SetReloadable(*config_, *table_, secrets_, key_cache_.get(), call_context_, connection_context_);
  balancer_->Rebuild(*table_, config_->health);
  // Retry: the policy and classes apply to the next decision; budgets keep their tokens (capped)
  // and their retries in flight.
  SetRetrySettings(config_->retry, *retry_);
  const size_t slots = table_->slots.size();
  for (retry::RetryBudget& budget : retry_->budgets)
    budget.SetOptions(BudgetOptions(config_->retry));
  while (retry_->budgets.size() < slots) {
    retry_->budgets.emplace_back(BudgetOptions(config_->retry));
  }
  probes_->Configure(config_->health, *table_);
  // The pending budget's share; new slots get pools, removed ones retire, the rest update.
  pools_->Apply(config_, table_);
  retry_->max_waiting_for_node = pools_->budget().limit;
  if (rest_ != nullptr) {
    // The REST side reads the worker's retry context (RestRetryContext::context): nothing to copy.
    rest_->Reconfigure(*config_, table_.get());
  }
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

void Worker::Start() {
  running_ = true;
  Post([this] {
    pools_->Start();
    sessions_->StartSweep();
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

void Worker::Adopt(boost::asio::ip::tcp::socket socket, bool refuse, bool rest) {
  if (!rest) {
    sessions_->Adopt(std::move(socket), refuse);
    return;
  }
  if (rest_ == nullptr || !running_) {
    boost::system::error_code ignored;
    socket.close(ignored);
    return;
  }
  counters_.downstream_open.fetch_add(1, std::memory_order_relaxed);
  rest_->Adopt(std::move(socket), refuse);
}

void Worker::BeginDrain(std::function<void()> on_idle) {
  sessions_->BeginDrain(std::move(on_idle));
  if (rest_ != nullptr) rest_->BeginDrain();
  sessions_->CheckDrained();  // waits for the REST side too
}

void Worker::OnSessionClosed(DownstreamSession* session) { sessions_->Remove(session); }

void Worker::OnRestSessionClosed() {
  counters_.downstream_open.fetch_sub(1, std::memory_order_relaxed);
  sessions_->CheckDrained();
}

void Worker::OnRestIdle() { sessions_->CheckDrained(); }

void Worker::Stop() {
  if (!running_.exchange(false)) return;
  // Close everything on the worker's own thread, then let run() return.
  Post([this] {
    sessions_->Stop();
    if (rest_ != nullptr) rest_->Stop();
    pools_->Shutdown();  // aborts what is still open
    probes_->Clear();    // after their pools: a pool forgets its queued waiters on destruction
    io_.stop();
  });
  if (thread_.joinable()) thread_.join();
}

}  // namespace qpool::server
