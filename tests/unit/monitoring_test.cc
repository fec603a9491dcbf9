// Drift tests for deploy/monitoring/ and the metrics docs: the PrometheusRule carries exactly the
// rules of prometheus-rules.yaml; every metric the rules and the dashboard query exists; every
// family qpoold exports is in docs/metrics.md; every alert has its runbook in docs/operations.md.
// (ctest also runs `promtool check rules` and `promtool test rules` on the rules.)
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <string_view>

#include "daemon/metrics/process_metrics.h"
#include "daemon/metrics/reload_metrics.h"
#include "daemon/metrics/scrape.h"
#include "daemon/metrics/scrape_families.h"
#include "yaml-cpp/yaml.h"

namespace qpool::metrics {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

const std::string kDir = QPOOL_SOURCE_DIR;

// Every family name qpoold exports (one node, one worker that answered).
std::set<std::string> ExportedFamilies() {
  WorkerMetrics worker(1);
  ScrapeInput input;
  input.node_names = {"n:1"};
  input.workers = {&worker};
  input.pools = {std::vector<NodePoolGauges>(1)};
  std::set<std::string> names;
  for (const auto& family : BuildFamilies(input)) names.insert(family.name);
  names.insert(BuildInfoFamily("x").name);
  for (const auto& family : BuildReloadFamilies(ConfigReloadMetrics())) names.insert(family.name);
  for (const auto& family : CollectProcessMetrics()) names.insert(family.name);
  return names;
}

// Metric names used in `text`, with histogram suffixes taken off.
std::set<std::string> MetricsUsedIn(const std::string& text) {
  std::set<std::string> used;
  std::regex name("\\b((qpool|process)_[a-z_]+)\\b");
  for (std::sregex_iterator it(text.begin(), text.end(), name), end; it != end; ++it) {
    std::string metric = (*it)[1];
    for (const char* suffix : {"_bucket", "_count", "_sum"}) {
      const std::string s = suffix;
      if (metric.size() > s.size() && metric.compare(metric.size() - s.size(), s.size(), s) == 0 &&
          metric.find("_seconds") != std::string::npos) {
        metric = metric.substr(0, metric.size() - s.size());
      }
    }
    used.insert(metric);
  }
  return used;
}

TEST(MonitoringTest, PrometheusRuleHoldsTheRulesFileGroups) {
  YAML::Node plain = YAML::LoadFile(kDir + "/deploy/monitoring/prometheus-rules.yaml");
  YAML::Node crd = YAML::LoadFile(kDir + "/deploy/monitoring/prometheusrule.yaml");
  EXPECT_EQ(crd["kind"].as<std::string>(), "PrometheusRule");
  YAML::Emitter a, b;
  a << plain["groups"];
  b << crd["spec"]["groups"];
  EXPECT_EQ(std::string(a.c_str()), std::string(b.c_str()));
}

TEST(MonitoringTest, RulesAndDashboardQueryOnlyExportedMetrics) {
  const std::set<std::string> exported = ExportedFamilies();
  for (const char* file :
       {"/deploy/monitoring/prometheus-rules.yaml", "/deploy/monitoring/grafana-dashboard.json"}) {
    for (const std::string& metric : MetricsUsedIn(ReadFile(kDir + file))) {
      EXPECT_EQ(exported.count(metric), 1u) << file << " uses " << metric;
    }
  }
}

TEST(MonitoringTest, MetricsDocListsEveryExportedFamily) {
  const std::string doc = ReadFile(kDir + "/docs/metrics.md");
  for (const std::string& name : ExportedFamilies()) {
    EXPECT_THAT(doc, HasSubstr("`" + name + "`")) << name;
  }
}

// The runbook base in the shipped rules: a placeholder under .invalid (RFC 2606), never resolvable.
constexpr std::string_view kRunbookBase = "https://qpool-runbooks.invalid";

TEST(MonitoringTest, EveryAlertHasARunbook) {
  YAML::Node plain = YAML::LoadFile(kDir + "/deploy/monitoring/prometheus-rules.yaml");
  const std::string runbooks = ReadFile(kDir + "/docs/operations.md");
  int alerts = 0;
  for (const auto& group : plain["groups"]) {
    for (const auto& rule : group["rules"]) {
      if (!rule["alert"]) continue;
      alerts++;
      const std::string name = rule["alert"].as<std::string>();
      EXPECT_THAT(runbooks, HasSubstr("### " + name + "\n")) << name;
      std::string anchor = name;
      for (char& c : anchor) c = static_cast<char>(std::tolower(c));
      // An absolute URL (Alertmanager and Grafana cannot resolve a repository path) on the
      // documented placeholder base (never a guessed real address), with the anchor GitHub and
      // GitLab derive from the "### Name" heading.
      EXPECT_EQ(rule["annotations"]["runbook_url"].as<std::string>(),
                std::string(kRunbookBase) + "/docs/operations.md#" + anchor);
    }
  }
  EXPECT_EQ(alerts, 8);
  // The placeholder is one operators can find and replace: documented, with the sed that does it.
  const std::string base(kRunbookBase);
  EXPECT_THAT(runbooks, HasSubstr("`" + base + "/docs/operations.md#<alert name"));
  EXPECT_THAT(runbooks, HasSubstr("sed -i 's#" + base + "/docs#"));
}

}  // namespace
}  // namespace qpool::metrics
