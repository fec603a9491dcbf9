// The metric families of a scrape, as prometheus-cpp values: what RenderScrapeText (scrape.h)
// serialises, exposed for the tests and the benchmark that check names, types and samples.
//
//   std::vector<prometheus::MetricFamily> families = BuildFamilies(input);
//   families.push_back(BuildInfoFamily("0.1.0"));
//
// With process_metrics.h, the only project headers that include prometheus-cpp; include them from
// the scrape code (scrape.cc, process_metrics.cc) and tests only, never from a header the data
// path includes. Thread-safety: pure functions of their input.
#ifndef QPOOL_DAEMON_METRICS_SCRAPE_FAMILIES_H_
#define QPOOL_DAEMON_METRICS_SCRAPE_FAMILIES_H_

#include <string>
#include <vector>

#include "daemon/metrics/scrape.h"
#include "prometheus/metric_family.h"

namespace qpool::metrics {

// Every qpool_* family of the scrape, with HELP and TYPE, in a stable order.
std::vector<prometheus::MetricFamily> BuildFamilies(const ScrapeInput& input);

// qpool_build_info{version} 1.
prometheus::MetricFamily BuildInfoFamily(const std::string& version);

}  // namespace qpool::metrics

#endif  // QPOOL_DAEMON_METRICS_SCRAPE_FAMILIES_H_
