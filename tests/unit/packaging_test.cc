// Offline checks of what qpool ships besides the binary (issue 15, "Packaging" and "Offline
// checks in CI"): every YAML file under deploy/ parses; the kustomize Component and the example
// that uses it are whole, and compose into a pod that has the sidecar, matches the PodMonitor and
// passes Pod Security "restricted"; the CHANGELOG's release matches CMake's version.
//
// Debian 12's kubectl (1.20) predates kustomize Components, and no test may rely on a kubectl only
// one machine has, so the composition is done here: the Component's strategic-merge patches are
// applied to the example's Deployments with the subset of strategic merge they use (maps merge
// key by key; lists of maps with a `name` merge by name; other lists are replaced), which is the
// same result `kubectl kustomize` gives for them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "yaml-cpp/yaml.h"

namespace qpool {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;

const fs::path kDir = QPOOL_SOURCE_DIR;
const fs::path kComponent = kDir / "deploy/kubernetes/components/qpool-sidecar";
const fs::path kExample = kDir / "deploy/kubernetes/example";

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<YAML::Node> LoadAll(const fs::path& path) { return YAML::LoadAllFromFile(path); }

// --- strategic merge, the subset the Component uses -------------------------------------------

YAML::Node Merge(const YAML::Node& base, const YAML::Node& patch);

bool IsNamedList(const YAML::Node& list) {
  if (!list.IsSequence() || list.size() == 0) return false;
  for (const auto& item : list) {
    if (!item.IsMap() || !item["name"]) return false;
  }
  return true;
}

YAML::Node MergeNamedLists(const YAML::Node& base, const YAML::Node& patch) {
  YAML::Node out(YAML::NodeType::Sequence);
  std::set<std::string> patched;
  for (const auto& item : base) {
    YAML::Node merged = YAML::Clone(item);
    for (const auto& change : patch) {
      if (change["name"].as<std::string>() == item["name"].as<std::string>()) {
        merged = Merge(item, change);
        patched.insert(change["name"].as<std::string>());
      }
    }
    out.push_back(merged);
  }
  for (const auto& change : patch) {
    if (!patched.count(change["name"].as<std::string>())) out.push_back(YAML::Clone(change));
  }
  return out;
}

YAML::Node Merge(const YAML::Node& base, const YAML::Node& patch) {
  if (!base || base.IsNull()) return YAML::Clone(patch);
  if (base.IsMap() && patch.IsMap()) {
    YAML::Node out = YAML::Clone(base);
    for (const auto& entry : patch) {
      const std::string key = entry.first.as<std::string>();
      out[key] = Merge(base[key], entry.second);
    }
    return out;
  }
  if (IsNamedList(patch) && (base.IsSequence() && (base.size() == 0 || IsNamedList(base)))) {
    return MergeNamedLists(base, patch);
  }
  return YAML::Clone(patch);
}

// Whether a patch `target` selects `resource` (group/version/kind/name, as kustomize reads them).
bool Selects(const YAML::Node& target, const YAML::Node& resource) {
  const std::string api_version = resource["apiVersion"].as<std::string>();
  const size_t slash = api_version.find('/');
  const std::string group = slash == std::string::npos ? "" : api_version.substr(0, slash);
  const std::string version =
      slash == std::string::npos ? api_version : api_version.substr(slash + 1);
  if (target["group"] && target["group"].as<std::string>() != group) return false;
  if (target["version"] && target["version"].as<std::string>() != version) return false;
  if (target["kind"] && target["kind"].as<std::string>() != resource["kind"].as<std::string>()) {
    return false;
  }
  if (target["name"] && !std::regex_match(resource["metadata"]["name"].as<std::string>(),
                                          std::regex(target["name"].as<std::string>()))) {
    return false;
  }
  return true;
}

// The example's resources with the Component's patches applied.
std::vector<YAML::Node> RenderExample() {
  const YAML::Node kustomization = YAML::LoadFile((kExample / "kustomization.yaml").string());
  std::vector<YAML::Node> resources;
  for (const auto& file : kustomization["resources"]) {
    for (const YAML::Node& doc : LoadAll(kExample / file.as<std::string>())) {
      resources.push_back(doc);
    }
  }
  for (const auto& component : kustomization["components"]) {
    const fs::path dir = kExample / component.as<std::string>();
    const YAML::Node component_file = YAML::LoadFile((dir / "kustomization.yaml").string());
    for (const auto& patch : component_file["patches"]) {
      const YAML::Node body = YAML::LoadFile((dir / patch["path"].as<std::string>()).string());
      for (YAML::Node& resource : resources) {
        if (!Selects(patch["target"], resource)) continue;
        const std::string name = resource["metadata"]["name"].as<std::string>();
        YAML::Node patched = Merge(resource, body);
        patched["metadata"]["name"] = name;  // a targeted patch keeps the target's name
        resource = patched;
      }
    }
  }
  return resources;
}

YAML::Node FindContainer(const YAML::Node& list, const std::string& name) {
  for (const auto& item : list) {
    if (item["name"].as<std::string>() == name) return item;
  }
  return YAML::Node();
}

// --- the tests ---------------------------------------------------------------------------------

TEST(PackagingTest, EveryYamlFileUnderDeployParses) {
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(kDir / "deploy")) {
    const std::string ext = entry.path().extension().string();
    if (ext != ".yaml" && ext != ".yml") continue;
    ++files;
    try {
      std::vector<YAML::Node> docs = LoadAll(entry.path());
      EXPECT_FALSE(docs.empty()) << entry.path();
      for (const YAML::Node& doc : docs) EXPECT_TRUE(doc.IsMap()) << entry.path();
    } catch (const YAML::Exception& e) {
      ADD_FAILURE() << entry.path() << ": " << e.what();
    }
  }
  EXPECT_GE(files, 9);
}

TEST(PackagingTest, TheComponentIsAComponentAndEveryFileItNamesExists) {
  const YAML::Node component = YAML::LoadFile((kComponent / "kustomization.yaml").string());
  EXPECT_EQ(component["apiVersion"].as<std::string>(), "kustomize.config.k8s.io/v1alpha1");
  EXPECT_EQ(component["kind"].as<std::string>(), "Component");
  ASSERT_TRUE(component["patches"].IsSequence());
  for (const auto& patch : component["patches"]) {
    EXPECT_TRUE(fs::exists(kComponent / patch["path"].as<std::string>()));
    EXPECT_EQ(patch["target"]["kind"].as<std::string>(), "Deployment");
  }
  const YAML::Node example = YAML::LoadFile((kExample / "kustomization.yaml").string());
  EXPECT_EQ(example["kind"].as<std::string>(), "Kustomization");
  for (const auto& file : example["resources"]) {
    EXPECT_TRUE(fs::exists(kExample / file.as<std::string>())) << file;
  }
  ASSERT_TRUE(example["components"].IsSequence());
  EXPECT_TRUE(fs::equivalent(kExample / example["components"][0].as<std::string>(), kComponent));
  for (const auto& generator : example["configMapGenerator"]) {
    for (const auto& file : generator["files"]) {
      EXPECT_TRUE(fs::exists(kExample / file.as<std::string>())) << file;
    }
  }
}

TEST(PackagingTest, TheExampleComposesIntoAPodWithTheSidecar) {
  const std::vector<YAML::Node> rendered = RenderExample();
  ASSERT_EQ(rendered.size(), 1u);
  const YAML::Node deployment = rendered[0];
  EXPECT_EQ(deployment["metadata"]["name"].as<std::string>(), "search-api");
  const YAML::Node pod = deployment["spec"]["template"];
  // The app's container is kept; qpool is a native sidecar next to it.
  EXPECT_TRUE(FindContainer(pod["spec"]["containers"], "app"));
  const YAML::Node qpool = FindContainer(pod["spec"]["initContainers"], "qpool");
  ASSERT_TRUE(qpool) << YAML::Dump(pod);
  EXPECT_EQ(qpool["restartPolicy"].as<std::string>(), "Always");
  // Its config volume is the ConfigMap the example generates, mounted where qpoold reads it.
  const YAML::Node volume = FindContainer(pod["spec"]["volumes"], "qpool-config");
  ASSERT_TRUE(volume);
  const YAML::Node example = YAML::LoadFile((kExample / "kustomization.yaml").string());
  EXPECT_EQ(volume["configMap"]["name"].as<std::string>(),
            example["configMapGenerator"][0]["name"].as<std::string>());
  EXPECT_EQ(example["configMapGenerator"][0]["files"][0].as<std::string>(), "qpool.yaml");
  const YAML::Node mount = qpool["volumeMounts"][0];
  EXPECT_EQ(mount["name"].as<std::string>(), "qpool-config");
  EXPECT_EQ(qpool["args"][1].as<std::string>(),
            mount["mountPath"].as<std::string>() + "/qpool.yaml");
  // The probes use the named admin port, on the paths qpoold serves.
  std::set<std::string> ports;
  for (const auto& port : qpool["ports"]) ports.insert(port["name"].as<std::string>());
  for (const char* probe : {"startupProbe", "readinessProbe", "livenessProbe"}) {
    EXPECT_THAT(ports, Contains(qpool[probe]["httpGet"]["port"].as<std::string>())) << probe;
  }
  EXPECT_EQ(qpool["readinessProbe"]["httpGet"]["path"].as<std::string>(), "/readyz");
  EXPECT_EQ(qpool["livenessProbe"]["httpGet"]["path"].as<std::string>(), "/livez");
  EXPECT_EQ(qpool["startupProbe"]["httpGet"]["path"].as<std::string>(), "/startupz");
  // The admin port in the container matches qpoold's admin.listen in the config it mounts.
  const YAML::Node config = YAML::LoadFile((kExample / "qpool.yaml").string());
  const std::string admin_listen = config["admin"]["listen"].as<std::string>();
  EXPECT_EQ(admin_listen.substr(admin_listen.rfind(':') + 1),
            std::to_string(qpool["ports"][0]["containerPort"].as<int>()));
  // The Deployment's selector still matches its pods.
  for (const auto& label : deployment["spec"]["selector"]["matchLabels"]) {
    EXPECT_EQ(pod["metadata"]["labels"][label.first.as<std::string>()].as<std::string>(),
              label.second.as<std::string>());
  }
}

TEST(PackagingTest, ThePodMonitorSelectsTheExamplePodAndItsPort) {
  const YAML::Node pod = RenderExample()[0]["spec"]["template"];
  const YAML::Node monitor = YAML::LoadFile((kDir / "deploy/monitoring/podmonitor.yaml").string());
  ASSERT_EQ(monitor["kind"].as<std::string>(), "PodMonitor");
  for (const auto& label : monitor["spec"]["selector"]["matchLabels"]) {
    const YAML::Node value = pod["metadata"]["labels"][label.first.as<std::string>()];
    ASSERT_TRUE(value) << "the pod lacks the label " << label.first.as<std::string>();
    EXPECT_EQ(value.as<std::string>(), label.second.as<std::string>());
  }
  std::set<std::string> ports;
  for (const char* list : {"containers", "initContainers"}) {
    for (const auto& container : pod["spec"][list]) {
      for (const auto& port : container["ports"]) ports.insert(port["name"].as<std::string>());
    }
  }
  for (const auto& endpoint : monitor["spec"]["podMetricsEndpoints"]) {
    EXPECT_THAT(ports, Contains(endpoint["port"].as<std::string>()));
    EXPECT_EQ(endpoint["path"].as<std::string>(), "/metrics");
  }
}

TEST(PackagingTest, MonitoringObjectsCarryTheKubePrometheusStackLabel) {
  for (const char* file : {"podmonitor.yaml", "prometheusrule.yaml"}) {
    const YAML::Node object = YAML::LoadFile((kDir / "deploy/monitoring" / file).string());
    ASSERT_TRUE(object["metadata"]["labels"]["release"]) << file;
    EXPECT_EQ(object["metadata"]["labels"]["release"].as<std::string>(), "kube-prometheus-stack")
        << file;
  }
}

// Pod Security Standards, "restricted" profile (the baseline checks included) on a pod spec.
// Returns one line per violation.
std::vector<std::string> RestrictedViolations(const YAML::Node& spec) {
  std::vector<std::string> out;
  const YAML::Node pod_context = spec["securityContext"];
  auto pod_bool = [&](const char* key) {
    return pod_context && pod_context[key] && pod_context[key].as<bool>();
  };
  for (const char* host : {"hostNetwork", "hostPID", "hostIPC"}) {
    if (spec[host] && spec[host].as<bool>()) out.push_back(std::string("pod: ") + host);
  }
  const std::set<std::string> allowed_volumes = {"configMap", "csi",       "downwardAPI",
                                                 "emptyDir",  "ephemeral", "persistentVolumeClaim",
                                                 "projected", "secret"};
  for (const auto& volume : spec["volumes"]) {
    for (const auto& field : volume) {
      const std::string key = field.first.as<std::string>();
      if (key != "name" && !allowed_volumes.count(key)) {
        out.push_back("volume " + volume["name"].as<std::string>() + ": type " + key);
      }
    }
  }
  const bool pod_seccomp =
      pod_context && pod_context["seccompProfile"] &&
      (pod_context["seccompProfile"]["type"].as<std::string>() == "RuntimeDefault" ||
       pod_context["seccompProfile"]["type"].as<std::string>() == "Localhost");
  for (const char* list : {"initContainers", "containers"}) {
    for (const auto& container : spec[list]) {
      const std::string who = container["name"].as<std::string>();
      const YAML::Node context = container["securityContext"];
      auto flag = [&](const char* key) {
        return context && context[key] && context[key].as<bool>();
      };
      if (flag("privileged")) out.push_back(who + ": privileged");
      if (!context || !context["allowPrivilegeEscalation"] ||
          context["allowPrivilegeEscalation"].as<bool>()) {
        out.push_back(who + ": allowPrivilegeEscalation must be false");
      }
      bool drops_all = false;
      if (context && context["capabilities"] && context["capabilities"]["drop"]) {
        for (const auto& cap : context["capabilities"]["drop"]) {
          drops_all = drops_all || cap.as<std::string>() == "ALL";
        }
      }
      if (!drops_all) out.push_back(who + ": capabilities.drop must hold ALL");
      if (context && context["capabilities"] && context["capabilities"]["add"]) {
        for (const auto& cap : context["capabilities"]["add"]) {
          if (cap.as<std::string>() != "NET_BIND_SERVICE") {
            out.push_back(who + ": adds capability " + cap.as<std::string>());
          }
        }
      }
      const bool non_root = context && context["runAsNonRoot"] ? context["runAsNonRoot"].as<bool>()
                                                               : pod_bool("runAsNonRoot");
      if (!non_root) out.push_back(who + ": runAsNonRoot must be true");
      if (context && context["runAsUser"] && context["runAsUser"].as<int64_t>() == 0) {
        out.push_back(who + ": runAsUser 0");
      }
      const bool seccomp =
          context && context["seccompProfile"]
              ? (context["seccompProfile"]["type"].as<std::string>() == "RuntimeDefault" ||
                 context["seccompProfile"]["type"].as<std::string>() == "Localhost")
              : pod_seccomp;
      if (!seccomp) out.push_back(who + ": seccompProfile must be RuntimeDefault or Localhost");
      for (const auto& port : container["ports"]) {
        if (port["hostPort"] && port["hostPort"].as<int>() != 0) out.push_back(who + ": hostPort");
      }
    }
  }
  return out;
}

TEST(PackagingTest, TheRenderedPodMeetsPodSecurityRestricted) {
  const YAML::Node spec = RenderExample()[0]["spec"]["template"]["spec"];
  EXPECT_THAT(RestrictedViolations(spec), ::testing::IsEmpty()) << YAML::Dump(spec);
}

TEST(PackagingTest, TheRestrictedCheckCatchesWhatTheIssueFound) {
  // The sidecar as it was before issue 15: no seccompProfile. The check must refuse it.
  YAML::Node spec = YAML::Clone(RenderExample()[0]["spec"]["template"]["spec"]);
  for (auto container : spec["initContainers"])
    container["securityContext"].remove("seccompProfile");
  EXPECT_THAT(RestrictedViolations(spec),
              Contains("qpool: seccompProfile must be RuntimeDefault or Localhost"));
  YAML::Node escalating = YAML::Clone(RenderExample()[0]["spec"]["template"]["spec"]);
  escalating["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = true;
  EXPECT_THAT(RestrictedViolations(escalating),
              Contains("app: allowPrivilegeEscalation must be false"));
}

TEST(PackagingTest, TheChangelogsLatestReleaseIsCmakesVersion) {
  const std::string changelog = ReadFile(kDir / "CHANGELOG.md");
  EXPECT_EQ(changelog.find("## Unreleased"), changelog.find("\n## ") + 1)
      << "## Unreleased must be the first section";
  std::smatch release;
  ASSERT_TRUE(std::regex_search(
      changelog, release,
      std::regex("\n## ([0-9]+\\.[0-9]+\\.[0-9]+) - ([0-9]{4}-[0-9]{2}-[0-9]{2})\n")))
      << "no release section \"## X.Y.Z - YYYY-MM-DD\"";
  EXPECT_EQ(release[1].str(), QPOOL_VERSION);
}

TEST(PackagingTest, TheLicenseIsApache2) {
  const std::string license = ReadFile(kDir / "LICENSE");
  EXPECT_NE(license.find("Apache License"), std::string::npos);
  EXPECT_NE(license.find("Version 2.0, January 2004"), std::string::npos);
  EXPECT_NE(license.find("Copyright 2026 The qpool authors"), std::string::npos);
}

}  // namespace
}  // namespace qpool
