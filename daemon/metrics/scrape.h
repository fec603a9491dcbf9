// A scrape: what the proxy hands the admin endpoint, and the /metrics text and /pool JSON built
// from it. The proxy fills a ScrapeInput on the admin thread (counters read with relaxed loads;
// pool gauges from a snapshot each worker takes on its own thread); the functions here format it.
//
//   ScrapeInput input = backend.Scrape(absl::Milliseconds(250));
//   std::string text = RenderScrapeText(input, QPOOL_VERSION);   // the body of GET /metrics
//   std::string json = PoolJson(input);                          // the body of GET /pool
//
// No prometheus-cpp here: this header reaches the data path (worker.h), so the metric families
// themselves are declared in scrape_families.h, which only the scrape code and its tests include.
// Metric names and meanings are listed in docs/metrics.md; monitoring_test keeps the two in sync.
#ifndef QPOOL_DAEMON_METRICS_SCRAPE_H_
#define QPOOL_DAEMON_METRICS_SCRAPE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "daemon/metrics/health_metrics.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/pool/node_pool.h"

namespace qpool::metrics {

// The app-side counters since start (server::ProxyStats is this struct; it lives here to keep this
// library below the server). Hostile-client counts are (reason, count) in the server's reason
// order.
struct DownstreamCounts {
  uint64_t accepted = 0;
  uint64_t refused = 0;
  uint64_t protocol_errors = 0;
  int64_t open = 0;
  uint64_t calls_started = 0;
  uint64_t local_replies = 0;
  int64_t buffered_bytes = 0;
  uint64_t transparent_retries = 0;
  int64_t replay_bytes = 0;
  // Hostile clients (docs/security.md): connections closed with GOAWAY(ENHANCE_YOUR_CALM), as
  // (reason, count); streams answered RESOURCE_EXHAUSTED for header limits; timeouts.
  std::vector<std::pair<std::string, uint64_t>> abuse;
  uint64_t header_list_size_rejections = 0;
  uint64_t header_count_rejections = 0;
  uint64_t handshake_timeouts = 0;
  uint64_t idle_timeouts = 0;
  // App streams reset on both sides (server.connection_buffer_limit, server.stream_idle_timeout,
  // server.max_message_size), as (reason, count).
  std::vector<std::pair<std::string, uint64_t>> stream_resets;
};

// One worker's pool for one node, as the worker saw it when asked: the pool's own counts
// (pool::NodePoolStats) and what the worker adds.
struct NodePoolGauges : pool::NodePoolStats {
  bool present = true;   // the worker holds a pool for the slot (false: nothing to show)
  bool removed = false;  // the node left the node set; its pool drains (/pool: "removed")
  bool usable = true;
  double longest_wait_seconds = 0;  // the oldest waiting call's wait so far
  struct Connection {
    const char* state = "";  // connecting, ready, busy, draining
    uint32_t streams = 0;
    uint32_t stream_cap = 0;
  };
  std::vector<Connection> connections;  // per worker only; empty in node totals
};

struct ScrapeInput {
  using WorkerPools = std::vector<std::optional<std::vector<NodePoolGauges>>>;
  std::vector<std::string> node_names;  // the nodes shown: the `node` label values
  // node_names[n]'s slot in the per-node counters (WorkerMetrics::node, HealthMetrics); empty:
  // slot n. `pools` and `rest_pools` are by n, like the names.
  std::vector<size_t> node_slots;
  size_t slot(size_t n) const { return n < node_slots.size() ? node_slots[n] : n; }
  std::vector<const WorkerMetrics*> workers;  // every worker's counters
  const HealthMetrics* health = nullptr;      // null: health families carry no samples
  DownstreamCounts downstream;
  // [worker][node] pool gauges; a worker that did not answer in time is nullopt.
  std::vector<std::optional<std::vector<NodePoolGauges>>> pools;
  // REST (rest.listen): each node's REST endpoint, and [worker][node] REST pool gauges; empty
  // when REST is off.
  std::vector<std::string> rest_node_names;
  // rest_node_names[n]'s slot in the REST pool counters (WorkerMetrics::rest_node); empty: slot n.
  std::vector<size_t> rest_node_slots;
  size_t rest_slot(size_t n) const { return n < rest_node_slots.size() ? rest_node_slots[n] : n; }
  std::vector<std::optional<std::vector<NodePoolGauges>>> rest_pools;
  bool started = false;
  bool draining = false;
  bool ready = false;
};

class ConfigReloadMetrics;

// The Prometheus text exposition of every qpool_* family (BuildFamilies),
// qpool_build_info{version}, the config reload families when `reloads` is set (all declared in
// scrape.cc's family table) and the process_* families (CollectProcessMetrics).
std::string RenderScrapeText(const ScrapeInput& input, const std::string& version,
                             const ConfigReloadMetrics* reloads = nullptr);

// /pool: per node, totals and per worker, like PgBouncer's SHOW POOLS.
std::string PoolJson(const ScrapeInput& input);

}  // namespace qpool::metrics

#endif  // QPOOL_DAEMON_METRICS_SCRAPE_H_
