// Drift tests for deploy/monitoring/ and the metrics docs: the PrometheusRule carries exactly the
// rules of prometheus-rules.yaml; every metric the rules and the dashboard query exists; the
// scrape's family table (scrape_families.h) and docs/metrics.md's tables list the same families
// with the same types and labels, and a scrape shows only declared families; every alert has its
// runbook in docs/operations.md.
// (ctest also runs `promtool check rules` and `promtool test rules` on the rules.)
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/metrics/health_metrics.h"
#include "daemon/metrics/process_metrics.h"
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

const char* TypeName(prometheus::MetricType type) {
  switch (type) {
    case prometheus::MetricType::Counter:
      return "counter";
    case prometheus::MetricType::Gauge:
      return "gauge";
    case prometheus::MetricType::Histogram:
      return "histogram";
    default:
      return "other";
  }
}

// A family as "type | labels", the way docs/metrics.md's table rows give it.
using Shapes = std::map<std::string, std::string>;

// Every family /metrics can show: the scrape's table, and process_* (all present on Linux).
Shapes DeclaredShapes() {
  Shapes out;
  for (const DeclaredFamily& family : DeclaredFamilies()) {
    out[family.name] =
        absl::StrCat(TypeName(family.type), " | ", absl::StrJoin(family.labels, ", "));
  }
  for (const auto& family : CollectProcessMetrics()) {
    out[family.name] = absl::StrCat(TypeName(family.type), " | ");
  }
  return out;
}

// The rows of docs/metrics.md's tables: "| `name` | type | label, label | meaning |".
Shapes DocumentedShapes(const std::string& doc) {
  Shapes out;
  std::istringstream lines(doc);
  std::string line;
  const std::regex row(R"(^\| `([a-z_]+)` \| ([a-z]+) \| ([a-z_, ]*?) *\| .*)");
  while (std::getline(lines, line)) {
    if (line.rfind("| `qpool_", 0) != 0 && line.rfind("| `process_", 0) != 0) continue;
    std::smatch m;
    if (!std::regex_match(line, m, row)) {
      ADD_FAILURE() << "docs/metrics.md: a family row not of the form "
                       "| `name` | type | labels | meaning |: "
                    << line;
      continue;
    }
    EXPECT_EQ(out.count(m[1].str()), 0u) << "docs/metrics.md lists " << m[1] << " twice";
    out[m[1].str()] = absl::StrCat(m[2].str(), " | ", m[3].str());
  }
  return out;
}

std::set<std::string> ExportedFamilies() {
  std::set<std::string> names;
  for (const auto& [name, shape] : DeclaredShapes()) names.insert(name);
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

TEST(MonitoringTest, MetricsDocListsEveryDeclaredFamilyWithItsTypeAndLabels) {
  const Shapes documented = DocumentedShapes(ReadFile(kDir + "/docs/metrics.md"));
  for (const auto& [name, shape] : DeclaredShapes()) {
    auto it = documented.find(name);
    if (it == documented.end()) {
      ADD_FAILURE() << name << " (" << shape << ") is not in docs/metrics.md";
      continue;
    }
    EXPECT_EQ(it->second, shape) << name << ": docs/metrics.md says type | labels differently";
  }
}

TEST(MonitoringTest, MetricsDocListsOnlyDeclaredFamilies) {
  const Shapes declared = DeclaredShapes();
  for (const auto& [name, shape] : DocumentedShapes(ReadFile(kDir + "/docs/metrics.md"))) {
    EXPECT_EQ(declared.count(name), 1u)
        << "docs/metrics.md lists " << name << ", which the scrape does not declare";
  }
}

// A scrape with every family shown (REST on, health checked, a node version known) shows only
// declared families, each with its declared type and HELP, and samples with its declared labels.
TEST(MonitoringTest, ScrapeShowsTheDeclaredFamiliesAndLabels) {
  WorkerMetrics worker(2);
  worker.RecordCall(MethodClass::kRead, 14, std::chrono::milliseconds(1));
  worker.RecordRestCall(MethodClass::kWrite, 200, std::chrono::milliseconds(1));
  HealthMetrics health(2);
  health.SetVersion(0, "1.2.3");
  ScrapeInput input;
  input.node_names = {"n:1", "m:2"};
  input.rest_node_names = {"n:6333", "m:6333"};
  input.workers = {&worker};
  input.health = &health;
  input.downstream.abuse = {{"rapid_reset", 1}};
  input.downstream.stream_resets = {{"stream_idle", 1}};
  input.pools = {std::vector<NodePoolGauges>(2)};
  input.rest_pools = {std::vector<NodePoolGauges>(2)};
  std::map<std::string, DeclaredFamily> declared;
  for (const DeclaredFamily& family : DeclaredFamilies()) declared.emplace(family.name, family);
  size_t shown = 0;
  for (const auto& family : BuildFamilies(input)) {
    auto it = declared.find(family.name);
    ASSERT_NE(it, declared.end()) << family.name;
    EXPECT_EQ(family.type, it->second.type) << family.name;
    EXPECT_EQ(family.help, it->second.help) << family.name;
    EXPECT_FALSE(family.metric.empty()) << family.name << " has no samples";
    for (const auto& metric : family.metric) {
      std::vector<std::string> labels;
      for (const auto& label : metric.label) labels.push_back(label.name);
      EXPECT_EQ(labels, it->second.labels) << family.name;
    }
    shown++;
  }
  // All but qpool_build_info and the two config reload families, which RenderScrapeText adds.
  EXPECT_EQ(shown, declared.size() - 3);
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
