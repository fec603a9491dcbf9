#include "daemon/server/health_checker.h"

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <cstdlib>

#include "daemon/server/node_probes.h"
#include "daemon/server/worker.h"
#include "spdlog/spdlog.h"

namespace qpool::server {

HealthChecker::HealthChecker(const config::Config& config, metrics::HealthMetrics& metrics,
                             std::vector<Worker*> workers, std::vector<ProbedNode> nodes)
    : config_(config.health),
      metrics_(metrics),
      workers_(std::move(workers)),
      nodes_(std::move(nodes)),
      medium_spec_(config.health.medium_method == "grpc" ? ProbeSpec::GrpcHealthCheck()
                                                         : ProbeSpec::QdrantHealthCheck()),
      deep_spec_(config.health.deep_collection.empty()
                     ? ProbeSpec::ListCollections()
                     : ProbeSpec::CollectionExists(config.health.deep_collection)),
      last_failure_(nodes_.size()),
      loop_(io_) {
  // The probes' API key comes from the workers (auth::ApiKeyStore, which also reads the
  // deprecated health.api_key_env), so a rotated key reaches the probes too.
  const config::HealthConfig& h = config.health;
  health::SchedulerOptions options;
  options.nodes = nodes_.size();
  options.medium = {h.enabled && h.medium_enabled, absl::ToChronoNanoseconds(h.medium_interval),
                    absl::ToChronoNanoseconds(h.medium_timeout)};
  options.deep = {h.enabled && h.deep_enabled, absl::ToChronoNanoseconds(h.deep_interval),
                  absl::ToChronoNanoseconds(h.deep_timeout)};
  options.jitter = h.jitter_percent / 100.0;
  options.unhealthy_threshold = h.unhealthy_threshold;
  options.healthy_threshold = h.healthy_threshold;
  health::ProbeRunner& runner = *this;
  health::HealthSink& sink = *this;
  scheduler_ = std::make_unique<health::HealthScheduler>(options, loop_, random_, runner, sink);
}

HealthChecker::~HealthChecker() { Stop(); }

void HealthChecker::Start() {
  const config::HealthConfig& h = config_;
  if (started_ || workers_.empty() || nodes_.empty() || !h.enabled ||
      !(h.medium_enabled || h.deep_enabled))
    return;
  started_ = true;
  boost::asio::post(io_, [this] { scheduler_->Start(); });
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "qpool-health");
    tid_ = static_cast<pid_t>(::syscall(SYS_gettid));
    auto guard = boost::asio::make_work_guard(io_);
    io_.run();
  });
}

void HealthChecker::Stop() {
  if (!started_) return;
  started_ = false;
  // The scheduler's timers belong to the health thread: stop them there, then the loop.
  boost::asio::post(io_, [this] {
    scheduler_->Stop();
    io_.stop();
  });
  if (thread_.joinable()) thread_.join();
}

void HealthChecker::Run(size_t index, health::Tier tier, Duration timeout,
                        std::function<void(health::ProbeResult)> done) {
  const size_t node = nodes_[index].slot;
  Worker* worker = workers_[node % workers_.size()];
  const ProbeSpec& spec = tier == health::Tier::kDeep ? deep_spec_ : medium_spec_;
  boost::asio::io_context* io = &io_;
  // The worker runs the probe and posts its result back to this thread.
  worker->Post([worker, node, spec, timeout, done = std::move(done), io]() mutable {
    worker->probes().StartProbe(node, spec, timeout,
                                [io, done = std::move(done)](health::ProbeResult r) {
                                  boost::asio::post(*io, [done, r = std::move(r)] { done(r); });
                                });
  });
}

void HealthChecker::OnCheck(size_t index, health::Tier tier, const health::ProbeResult& result,
                            Duration took) {
  const size_t node = nodes_[index].slot;
  const size_t slot = tier == health::Tier::kDeep ? metrics::kDeepTier : metrics::kMediumTier;
  metrics_.RecordCheck(node, slot, result.success, took);
  if (!result.version.empty()) metrics_.SetVersion(node, result.version);
  if (!result.success) {
    SPDLOG_DEBUG("upstream {}: {} health check failed: {}", nodes_[index].name,
                 health::TierName(tier), result.detail);
    last_failure_[index] = result.detail;
  }
}

void HealthChecker::OnHealthChanged(size_t index, bool healthy) {
  metrics_.SetHealthy(nodes_[index].slot, healthy);
  if (healthy) {
    SPDLOG_INFO("upstream {}: healthy again ({} checks in a row passed)", nodes_[index].name,
                config_.healthy_threshold);
  } else {
    SPDLOG_WARN("upstream {}: unhealthy after {} failed checks in a row; last: {}",
                nodes_[index].name, config_.unhealthy_threshold, last_failure_[index]);
  }
}

}  // namespace qpool::server
