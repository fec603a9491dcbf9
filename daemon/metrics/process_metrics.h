// The standard process_* families (prometheus-cpp does not provide them), read from /proc/self at
// scrape time: process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds, process_start_time_seconds,
// process_threads. A file that cannot be read leaves its families out.
#ifndef QPOOL_DAEMON_METRICS_PROCESS_METRICS_H_
#define QPOOL_DAEMON_METRICS_PROCESS_METRICS_H_

#include <string>
#include <vector>

#include "prometheus/metric_family.h"

namespace qpool::metrics {

// `proc_dir` is "/proc/self" except in tests.
std::vector<prometheus::MetricFamily> CollectProcessMetrics(
    const std::string& proc_dir = "/proc/self");

}  // namespace qpool::metrics

#endif  // QPOOL_DAEMON_METRICS_PROCESS_METRICS_H_
