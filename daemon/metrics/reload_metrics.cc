#include "daemon/metrics/reload_metrics.h"

#include <string>
#include <utility>

#include "prometheus/client_metric.h"
#include "prometheus/metric_type.h"

namespace qpool::metrics {

std::vector<prometheus::MetricFamily> BuildReloadFamilies(const ConfigReloadMetrics& reloads) {
  std::vector<prometheus::MetricFamily> out;
  prometheus::MetricFamily total;
  total.name = "qpool_config_reloads_total";
  total.help =
      "Config reloads (SIGHUP) by result: success (the new config is in force) or failure (the "
      "old config kept: unreadable, invalid, or a key that needs a restart changed).";
  total.type = prometheus::MetricType::Counter;
  for (const auto& [result, value] :
       {std::pair<const char*, uint64_t>{"failure", reloads.failures()},
        {"success", reloads.successes()}}) {
    prometheus::ClientMetric metric;
    metric.label.push_back({"result", result});
    metric.counter.value = static_cast<double>(value);
    total.metric.push_back(std::move(metric));
  }
  out.push_back(std::move(total));

  prometheus::MetricFamily last;
  last.name = "qpool_config_last_reload_success_timestamp_seconds";
  last.help = "Unix time of the last successful config load: start-up, or a reload.";
  last.type = prometheus::MetricType::Gauge;
  prometheus::ClientMetric metric;
  metric.gauge.value = reloads.last_success_seconds();
  last.metric.push_back(std::move(metric));
  out.push_back(std::move(last));
  return out;
}

}  // namespace qpool::metrics
