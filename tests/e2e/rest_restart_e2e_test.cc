// Issue 12: the only node restarts under REST load that writes. The built qpoold's REST front
// door in front of one built qdrant-emulator (REST port), which is SIGKILLed while clients run
// searches, deletes by ids and deletes by filter, and comes back on the same ports. Reads and
// id-scoped deletes ride the restart out (the ones in flight at the kill are retried by policy,
// later ones wait for the node: retry.unreachable_wait); a delete by filter that may have reached
// the node is never sent again, so the ones in flight at the kill fail (passed on), and only
// those. qpoold's counters tell the same story as the clients. Loopback ports picked at run
// time; every process stopped by pid; the load is bounded in calls and time.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/emulator_process.h"
#include "tests/support/prometheus_text.h"
#include "tests/support/qpoold_process.h"
#include "tests/support/test_util.h"
#include "tests/unit/http_get.h"

namespace qpool::testing {
namespace {

constexpr char kCollection[] = "docs";
constexpr int kPoints = 50;

// One qdrant-emulator process with its REST port on; gRPC and REST ports chosen by the test, so
// that a restart takes the same ones.
class RestEmulator {
 public:
  RestEmulator(std::string log_path, uint16_t grpc_port, uint16_t rest_port)
      : log_path_(std::move(log_path)), grpc_port_(grpc_port), rest_port_(rest_port) {}

  void Start(const std::string& faults) {
    auto process =
        EmulatorProcess::Start(QDRANT_EMULATOR_PATH,
                               {"--listen", absl::StrCat("127.0.0.1:", grpc_port_), "--rest-listen",
                                absl::StrCat("127.0.0.1:", rest_port_), "--faults", faults},
                               log_path_);
    ASSERT_TRUE(process.ok()) << process.status();
    process_ = std::move(*process);
  }
  void Kill() { process_->Kill(); }

  void SetFaults(const std::string& json) {
    const absl::Status set = process_->SetFaults(json);
    ASSERT_TRUE(set.ok()) << set;
  }
  uint32_t Calls(const std::string& method) {
    const absl::StatusOr<std::string> counters = process_->CountersJson();
    if (!counters.ok()) return 0;
    const auto json = nlohmann::json::parse(*counters, nullptr, false);
    if (json.is_discarded() || !json.contains("calls") || !json["calls"].contains(method)) return 0;
    return json["calls"][method].get<uint32_t>();
  }

  // The collection and its points, straight on the node's REST port: point i has payload tag i.
  void Seed() {
    HttpReply reply = HttpRequest(rest_port_, "PUT", absl::StrCat("/collections/", kCollection),
                                  R"({"vectors":{"size":4,"distance":"Cosine"}})");
    ASSERT_EQ(reply.status, 200) << reply.body;
    nlohmann::json points = nlohmann::json::array();
    for (int i = 1; i <= kPoints; ++i) {
      points.push_back(
          {{"id", i}, {"vector", {0.1 * i, 0.2, 0.3, 0.4}}, {"payload", {{"tag", i}}}});
    }
    reply = HttpRequest(rest_port_, "PUT",
                        absl::StrCat("/collections/", kCollection, "/points?wait=true"),
                        nlohmann::json{{"points", points}}.dump());
    ASSERT_EQ(reply.status, 200) << reply.body;
  }

  uint16_t grpc_port() const { return grpc_port_; }
  uint16_t rest_port() const { return rest_port_; }

 private:
  std::string log_path_;
  uint16_t grpc_port_;
  uint16_t rest_port_;
  std::unique_ptr<EmulatorProcess> process_;
};

enum Kind { kSearch = 0, kDeleteIds = 1, kDeleteFilter = 2 };
constexpr const char* kKindNames[] = {"search", "delete by ids", "delete by filter"};

class RestRestartE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string dir = ::testing::TempDir() + "/qpoold_rest_restart_XXXXXX";
    ASSERT_NE(mkdtemp(dir.data()), nullptr) << std::strerror(errno);
    dir_ = dir;
  }

  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "qpoold's log:\n" << ReadFileOrEmpty(dir_ + "/qpoold.log") << "\n";
      std::cerr << "last scrape (calls and retries):\n" << last_scrape_lines_ << "\n";
    }
    if (qpoold_ != nullptr) {
      (void)qpoold_->Signal(SIGTERM);
      if (!qpoold_->WaitForExit(absl::Seconds(10))) qpoold_->Kill();
    }
    emulators_.clear();  // SIGKILL
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  void StartQpoold(uint16_t grpc_port, uint16_t rest_port) {
    listen_port_ = PickFreePort();
    rest_listen_port_ = PickFreePort();
    admin_port_ = PickFreePort();
    // A quick reconnect after the restart (the pool's connect backoff at most 200ms); the calls in
    // flight at the kill all retried at once (min_retries_in_flight, as the JS restart tests).
    const std::string config_path = dir_ + "/qpool.yaml";
    std::ofstream(config_path) << "server:\n  listen: \"127.0.0.1:" << listen_port_
                               << "\"\nadmin:\n  listen: \"127.0.0.1:" << admin_port_
                               << "\"\nrest:\n  listen: \"127.0.0.1:" << rest_listen_port_
                               << "\"\nupstream:\n  nodes: [\"127.0.0.1:" << grpc_port
                               << "\"]\n  rest_nodes: [\"127.0.0.1:" << rest_port
                               << "\"]\n  connect_backoff_max: 200ms\n"
                               << "retry:\n  min_retries_in_flight: 16\nlog:\n  level: warn\n";
    auto qpoold =
        StartQpooldReady({QPOOLD_PATH, "--config", config_path}, dir_ + "/qpoold.log", admin_port_);
    ASSERT_TRUE(qpoold.ok()) << qpoold.status();
    qpoold_ = std::move(*qpoold);
  }

  // qpoold's /metrics, every sample of the families this test reads kept for a failure report.
  Samples Scrape() {
    const std::string text = HttpGet(admin_port_, "/metrics").body;
    std::istringstream lines(text);
    std::string line;
    last_scrape_lines_.clear();
    while (std::getline(lines, line)) {
      if (absl::StartsWith(line, "qpool_calls_total") ||
          absl::StartsWith(line, "qpool_retries_total") ||
          absl::StartsWith(line, "qpool_transparent_retries_total")) {
        last_scrape_lines_ += line + "\n";
      }
    }
    return ParseSamples(text);
  }

  // The sum of the samples of `family` whose labels include every one of `labels`
  // ("class=\"read\"").
  static double Sum(const Samples& samples, const std::string& family,
                    const std::vector<std::string>& labels) {
    double sum = 0;
    for (const auto& [key, value] : samples) {
      if (!absl::StartsWith(key, family + "{")) continue;
      bool all = true;
      for (const std::string& label : labels) all = all && absl::StrContains(key, label);
      if (all) sum += value;
    }
    return sum;
  }

  std::string dir_;
  uint16_t listen_port_ = 0;
  uint16_t rest_listen_port_ = 0;
  uint16_t admin_port_ = 0;
  std::vector<std::unique_ptr<RestEmulator>> emulators_;
  std::unique_ptr<Subprocess> qpoold_;
  std::string last_scrape_lines_;
};

TEST_F(RestRestartE2eTest, ReadsAndIdDeletesRideOutARestartFilterDeletesInFlightFail) {
  const uint16_t grpc_port = PickFreePort();
  const uint16_t rest_port = PickFreePort();
  // Deletes and searches take 40 ms on the node: calls of every kind are in flight at the kill.
  const std::string slow = R"({"methods":{"Delete":{"latency_ms":40},"Search":{"latency_ms":40}}})";
  emulators_.push_back(
      std::make_unique<RestEmulator>(dir_ + "/emulator0.log", grpc_port, rest_port));
  RestEmulator& first = *emulators_.back();
  ASSERT_NO_FATAL_FAILURE(first.Start(slow));
  ASSERT_NO_FATAL_FAILURE(first.Seed());
  ASSERT_NO_FATAL_FAILURE(StartQpoold(grpc_port, rest_port));
  const Samples before = Scrape();

  // Two clients of each kind, a new connection per call, no deadline of their own (no ?timeout=):
  // at most kCallsPerClient calls each, and none started after kLoadFor.
  constexpr int kClientsPerKind = 2;
  constexpr int kCallsPerClient = 400;
  const absl::Time load_until = absl::Now() + absl::Seconds(30);
  std::atomic<bool> stop{false};
  std::atomic<int> calls_after_restart{0};
  std::atomic<bool> restarted{false};
  std::mutex mu;
  std::map<std::pair<int, int>, int> outcomes;  // (kind, HTTP status; 0: no answer) -> calls
  int failed_after_restart = 0;
  std::vector<std::string> failures;
  std::vector<std::thread> clients;
  for (int kind = 0; kind < 3; ++kind) {
    for (int c = 0; c < kClientsPerKind; ++c) {
      clients.emplace_back([&, kind, c] {
        for (int i = 0; i < kCallsPerClient && !stop && absl::Now() < load_until; ++i) {
          const int point = 1 + (i * kClientsPerKind + c) % kPoints;
          std::string target = absl::StrCat("/collections/", kCollection, "/points/");
          std::string body;
          switch (kind) {
            case kSearch:
              absl::StrAppend(&target, "search");
              body = R"({"vector":[0.1,0.2,0.3,0.4],"limit":3})";
              break;
            case kDeleteIds:
              absl::StrAppend(&target, "delete?wait=true");
              body = absl::StrCat(R"({"points":[)", point, "]}");
              break;
            default:
              absl::StrAppend(&target, "delete?wait=true");
              body = absl::StrCat(R"({"filter":{"must":[{"key":"tag","match":{"value":)", point,
                                  "}}]}}");
          }
          const bool after = restarted;  // started once the node was back with its data
          const HttpReply reply =
              HttpRequest(rest_listen_port_, "POST", target, body, std::chrono::seconds(25));
          if (after) calls_after_restart++;
          std::lock_guard<std::mutex> lock(mu);
          outcomes[{kind, reply.status}]++;
          if (reply.status != 200 && after) failed_after_restart++;
          if (reply.status != 200 && failures.size() < 10) {
            failures.push_back(absl::StrCat(kKindNames[kind], " (client ", c, ", ",
                                            after ? "started after the restart" : "started before",
                                            "): ", reply.status, " ", reply.body));
          }
        }
      });
    }
  }

  // The kill, once the node has served calls of every kind; the node is back on the same ports
  // half a second later (the outage itself, not a wait for a condition).
  ASSERT_TRUE(WaitFor(
      [&] {
        return first.Calls("qdrant.Points/Delete") >= 40 &&
               first.Calls("qdrant.Points/Search") >= 20;
      },
      absl::Seconds(20)));
  first.Kill();
  absl::SleepFor(absl::Milliseconds(500));
  // The new process parks searches and deletes (hang) until its collection is back: it comes up
  // empty, as a Qdrant whose storage was not kept, and the test restores the data first.
  emulators_.push_back(
      std::make_unique<RestEmulator>(dir_ + "/emulator1.log", grpc_port, rest_port));
  RestEmulator& second = *emulators_.back();
  ASSERT_NO_FATAL_FAILURE(
      second.Start(R"({"methods":{"Delete":{"hang":true},"Search":{"hang":true}}})"));
  ASSERT_NO_FATAL_FAILURE(second.Seed());
  ASSERT_NO_FATAL_FAILURE(second.SetFaults(slow));
  restarted = true;
  // Served again: every client makes calls after the restart.
  EXPECT_TRUE(
      WaitFor([&] { return calls_after_restart >= 12 * kClientsPerKind; }, absl::Seconds(20)));
  stop = true;
  for (auto& client : clients) client.join();

  int total[3] = {0, 0, 0};
  int ok[3] = {0, 0, 0};
  for (const auto& [key, n] : outcomes) {
    total[key.first] += n;
    if (key.second == 200) ok[key.first] += n;
  }
  std::string seen;
  for (const std::string& failure : failures) absl::StrAppend(&seen, failure, "\n");
  // Reads and id-scoped deletes: not one failed.
  EXPECT_EQ(ok[kSearch], total[kSearch]) << seen;
  EXPECT_EQ(ok[kDeleteIds], total[kDeleteIds]) << seen;
  // Deletes by filter written to the old process failed, passed on as qpoold's 502 (it closed
  // the connection before answering; the request may have reached it): at least one, the one in
  // flight at the kill (40 ms of every call on the node). A client may lose a second one written
  // while the dying process's sockets were still being closed (its connection looked open). None
  // started after the restart failed.
  const int filter_failed = total[kDeleteFilter] - ok[kDeleteFilter];
  EXPECT_GE(filter_failed, 1) << seen;
  EXPECT_EQ(failed_after_restart, 0) << seen;
  EXPECT_EQ((outcomes[{kDeleteFilter, 502}]), filter_failed) << seen;
  EXPECT_GT(calls_after_restart.load(), 0);

  // qpoold's counters: the calls by class and status are what the clients saw; reads and
  // id-scoped deletes were retried by policy, a delete by filter never was.
  const Samples after = Scrape();
  auto delta = [&](const std::string& family, const std::vector<std::string>& labels) {
    return Sum(after, family, labels) - Sum(before, family, labels);
  };
  EXPECT_EQ(delta("qpool_calls_total", {"protocol=\"rest\"", "class=\"read\"", "code=\"200\""}),
            ok[kSearch]);
  EXPECT_EQ(delta("qpool_calls_total", {"protocol=\"rest\"", "class=\"read\""}), total[kSearch]);
  EXPECT_EQ(delta("qpool_calls_total", {"protocol=\"rest\"", "class=\"write\"", "code=\"200\""}),
            ok[kDeleteIds] + ok[kDeleteFilter]);
  EXPECT_EQ(delta("qpool_calls_total", {"protocol=\"rest\"", "class=\"write\"", "code=\"502\""}),
            filter_failed);
  EXPECT_EQ(delta("qpool_calls_total", {"protocol=\"rest\"", "class=\"write\""}),
            total[kDeleteIds] + total[kDeleteFilter]);
  // Searches and deletes by ids in flight at the kill went again (a keep-alive connection lost
  // before any byte of the answer is replayed for them), as did calls that met the node down.
  EXPECT_GE(delta("qpool_retries_total", {"class=\"read\""}), 1);
  EXPECT_GE(delta("qpool_retries_total", {"class=\"id_scoped_write\""}), 1);
  for (const char* reason : {"unavailable", "resource_exhausted", "per_try_timeout"}) {
    EXPECT_EQ(delta("qpool_retries_total",
                    {"class=\"filter_scoped_write\"", absl::StrCat("reason=\"", reason, "\"")}),
              0)
        << reason;
  }
  std::cout << "calls: search " << ok[kSearch] << "/" << total[kSearch] << " ok, delete by ids "
            << ok[kDeleteIds] << "/" << total[kDeleteIds] << " ok, delete by filter "
            << ok[kDeleteFilter] << "/" << total[kDeleteFilter] << " ok; after the restart "
            << calls_after_restart.load() << "\n"
            << last_scrape_lines_;
}

}  // namespace
}  // namespace qpool::testing
