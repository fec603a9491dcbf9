// The metric families of a scrape, as prometheus-cpp values: what RenderScrapeText (scrape.h)
// serialises, exposed for the tests and the benchmark that check names, types and samples. Every
// family is declared once, in one table in scrape.cc (name, type, help, label names and how its
// samples are read), which drives the scrape; DeclaredFamilies() lists it for the test that checks
// it against docs/metrics.md.
//
//   std::vector<prometheus::MetricFamily> families = BuildFamilies(input);
//   for (const DeclaredFamily& f : DeclaredFamilies()) ...   // every family /metrics can show
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
#include "prometheus/metric_type.h"

namespace qpool::metrics {

// Every qpool_* family of the scrape that `input` shows (REST pool families while rest.listen is
// on), with HELP and TYPE, in a stable order; not qpool_build_info and the config reload families,
// which only RenderScrapeText adds.
std::vector<prometheus::MetricFamily> BuildFamilies(const ScrapeInput& input);

// One family as declared: label names in the order samples carry them.
struct DeclaredFamily {
  std::string name;
  prometheus::MetricType type;
  std::string help;
  std::vector<std::string> labels;
};

// Every family /metrics can show but process_* (CollectProcessMetrics): the qpool_* families
// whatever the input, qpool_build_info and the config reload families, in exposition order.
std::vector<DeclaredFamily> DeclaredFamilies();

}  // namespace qpool::metrics

#endif  // QPOOL_DAEMON_METRICS_SCRAPE_FAMILIES_H_
