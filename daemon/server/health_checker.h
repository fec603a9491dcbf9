// The health control thread ("qpool-health"): runs the medium and deep probe schedules
// (health::HealthScheduler) on an io_context of its own, and never blocks an I/O worker. To probe
// node n it posts the probe to worker n % workers, which runs it on its own pool for the node
// (HealthProbe) and posts the result back here. Verdicts are published in metrics::HealthMetrics:
// an atomic `healthy` flag per node that each worker reads when it routes a call
// (pool::Balancer::Pick), and that /readyz reads.
//
//   HealthChecker checker(config, health_metrics, {worker0, worker1});
//   checker.Start();   // after the workers started
//   checker.Stop();    // before the workers stop; joins the thread
//
// The fast tier (PING) runs on the workers themselves (UpstreamConnection); passive ejection too
// (pool::Balancer::OnAttemptEnd). Neither needs this thread.
//
// Thread-safety: Start and Stop from the controlling thread (the Proxy's). Everything else runs on
// the health thread; the workers reach it only through boost::asio::post on its io_context, which
// is thread-safe. The checker and its io_context must outlive the workers (results a worker posts
// after Stop are queued, never run, and freed with the io_context).
#ifndef QPOOL_DAEMON_SERVER_HEALTH_CHECKER_H_
#define QPOOL_DAEMON_SERVER_HEALTH_CHECKER_H_

#include <sys/types.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "daemon/common/asio_event_loop.h"
#include "daemon/config/config.h"
#include "daemon/health/health_scheduler.h"
#include "daemon/metrics/health_metrics.h"
#include "daemon/server/health_probe.h"

namespace qpool::server {

class Worker;

class HealthChecker : private health::ProbeRunner, private health::HealthSink {
 public:
  // One probed node: its slot (the index workers and HealthMetrics know it by) and its name.
  struct ProbedNode {
    size_t slot = 0;
    std::string name;
  };
  // `metrics` and `workers` must outlive the checker's thread (Stop()). `nodes`: the gRPC nodes
  // in the node set now; a node set change (reload, DNS) replaces the checker.
  HealthChecker(const config::Config& config, metrics::HealthMetrics& metrics,
                std::vector<Worker*> workers, std::vector<ProbedNode> nodes);
  ~HealthChecker() override;

  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  // Starts the thread and the schedules; a no-op when no probe tier is enabled.
  void Start();
  // Stops the schedules and joins the thread. Idempotent.
  void Stop();

  // The health thread's kernel thread id (for /proc/<pid>/task/<tid>/stat), 0 before Start().
  pid_t thread_id() const { return tid_.load(); }

 private:
  // health::ProbeRunner: runs on the health thread.
  void Run(size_t node, health::Tier tier, Duration timeout,
           std::function<void(health::ProbeResult)> done) override;
  // health::HealthSink: runs on the health thread.
  void OnCheck(size_t node, health::Tier tier, const health::ProbeResult& result,
               Duration took) override;
  void OnHealthChanged(size_t node, bool healthy) override;

  const config::HealthConfig config_;
  metrics::HealthMetrics& metrics_;
  const std::vector<Worker*> workers_;
  const std::vector<ProbedNode> nodes_;  // scheduler index -> slot and name
  ProbeSpec medium_spec_;
  ProbeSpec deep_spec_;
  std::vector<std::string> last_failure_;  // health thread: why each node's last probe failed
  boost::asio::io_context io_;
  AsioEventLoop loop_;
  StdRandom random_;
  std::unique_ptr<health::HealthScheduler> scheduler_;
  std::thread thread_;
  std::atomic<pid_t> tid_{0};
  bool started_ = false;
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_HEALTH_CHECKER_H_
