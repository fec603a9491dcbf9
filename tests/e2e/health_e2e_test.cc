// Health checking end to end (issue 5): the built qpoold in front of two built qdrant-emulators,
// every port picked at run time, with short probe intervals in a config written at run time.
//  - a node that stops answering (emulator POST /hang) is marked unhealthy within
//    unhealthy_threshold x interval + timeout and new calls go to the other node; after
//    POST /resume it comes back within healthy_threshold x interval and takes calls again;
//  - a connection whose peer stops reading (SIGSTOP of an emulator) is detected by the PING tier
//    and closed, and a new connection replaces it once the peer reads again (SIGCONT);
//  - one node killed (SIGKILL) under steady load: only calls in flight at the kill may fail, new
//    calls succeed on the other node; after a restart on the same port traffic returns to both.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "qdrant/collections_service.grpc.pb.h"
#include "tests/support/emulator_process.h"
#include "tests/support/prometheus_text.h"
#include "tests/support/test_util.h"
#include "tests/unit/http_get.h"

namespace qpool::testing {
namespace {

// One emulator on a fixed gRPC port (so that it can be restarted there) and a free control port.
struct Emulator {
  uint16_t port = 0;
  uint16_t control_port = 0;
  std::unique_ptr<EmulatorProcess> process;
};

// Calls of `method` (full name) the emulator received, from GET /counters.
int CallsOf(const Emulator& emulator, const std::string& method) {
  HttpReply reply = HttpGet(emulator.control_port, "/counters");
  const std::string key = "\"" + method + "\":";
  const size_t at = reply.body.find(key);
  if (at == std::string::npos) return 0;
  return std::atoi(reply.body.c_str() + at + key.size());
}

constexpr char kExists[] = "qdrant.Collections/CollectionExists";

class HealthE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string dir = ::testing::TempDir() + "/qpoold_health_XXXXXX";
    ASSERT_NE(mkdtemp(dir.data()), nullptr) << std::strerror(errno);
    dir_ = dir;
    for (int i = 0; i < 2; ++i) {
      emulators_[i].port = PickFreePort();
      ASSERT_NE(emulators_[i].port, 0);
      ASSERT_NO_FATAL_FAILURE(StartEmulator(i));
    }
    listen_port_ = PickFreePort();
    admin_port_ = PickFreePort();
    const std::string config_path = dir_ + "/qpool.yaml";
    std::ofstream(config_path) << "server:\n"
                               << "  listen: \"127.0.0.1:" << listen_port_ << "\"\n"
                               << "admin:\n"
                               << "  listen: \"127.0.0.1:" << admin_port_
                               << "\"\n"
                               // These tests watch /readyz follow the nodes' health.
                               << "  readiness_includes_upstream: true\n"
                               << "upstream:\n"
                               << "  nodes: [\"127.0.0.1:" << emulators_[0].port
                               << "\", \"127.0.0.1:" << emulators_[1].port << "\"]\n"
                               << "  connect_timeout: 500ms\n"
                               << "  connect_backoff_max: 500ms\n"
                               << "health:\n"
                               << "  medium_interval: " << kInterval << "ms\n"
                               << "  medium_timeout: " << kTimeout << "ms\n"
                               << "  fast_interval: 300ms\n"
                               << "  fast_timeout: 200ms\n"
                               << "  base_ejection_time: 1s\n"
                               << "  max_ejection_time: 2s\n"
                               << ExtraHealthConfig();
    log_path_ = dir_ + "/qpoold.log";
    auto qpoold = Subprocess::Spawn(
        {QPOOLD_PATH, "--config", config_path, "--rest-listen", "127.0.0.1:0"}, log_path_);
    ASSERT_TRUE(qpoold.ok()) << qpoold.status();
    qpoold_ = std::move(*qpoold);
    // Nodes start out healthy; wait until each has answered a health check, so that its pooled
    // connection is up before a test breaks the node.
    ASSERT_TRUE(WaitFor(
        [&] {
          if (!CanConnect(listen_port_)) return false;
          Samples samples = Scrape();
          for (int i = 0; i < 2; ++i) {
            if (samples[absl::StrCat("qpool_health_checks_total{node=\"", Node(i),
                                     "\",tier=\"medium\",result=\"success\"}")] < 1) {
              return false;
            }
          }
          return true;
        },
        absl::Seconds(15), absl::Milliseconds(20)))
        << ReadFileOrEmpty(log_path_);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", listen_port_),
                                   grpc::InsecureChannelCredentials());
    stub_ = qdrant::Collections::NewStub(channel_);
  }

  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "qpoold's log:\n" << ReadFileOrEmpty(log_path_) << "\n";
      std::cerr << "last scrape:\n" << last_scrape_ << "\n";
    }
    stub_.reset();
    channel_.reset();
    for (Emulator& emulator : emulators_) {
      if (emulator.process != nullptr) (void)emulator.process->process().Signal(SIGCONT);
    }
    if (qpoold_ != nullptr) {
      (void)qpoold_->Signal(SIGTERM);
      if (!qpoold_->WaitForExit(absl::Seconds(10))) qpoold_->Kill();
    }
    for (Emulator& emulator : emulators_) emulator.process.reset();  // SIGKILL
  }

  // More `health:` keys, two spaces in, one per line.
  virtual std::string ExtraHealthConfig() const {
    return "  deep_interval: 1s\n  deep_timeout: 500ms\n";
  }

  // More emulator flags.
  virtual std::vector<std::string> EmulatorFlags() const { return {}; }

  void StartEmulator(int i) {
    Emulator& emulator = emulators_[i];
    std::vector<std::string> flags = {"--listen", absl::StrCat("127.0.0.1:", emulator.port)};
    for (const std::string& flag : EmulatorFlags()) flags.push_back(flag);
    auto process = EmulatorProcess::Start(QDRANT_EMULATOR_PATH, flags,
                                          absl::StrCat(dir_, "/emulator", i, ".log"));
    ASSERT_TRUE(process.ok()) << process.status();
    emulator.process = std::move(*process);
    emulator.control_port = emulator.process->control_port();
  }

  std::string Node(int i) const { return absl::StrCat("127.0.0.1:", emulators_[i].port); }
  Samples Scrape() {
    HttpReply reply = HttpGet(admin_port_, "/metrics");
    last_scrape_ = reply.body;
    return ParseSamples(reply.body);
  }
  bool Healthy(int i) {
    return Scrape()[absl::StrCat("qpool_upstream_healthy{node=\"", Node(i), "\"}")] == 1;
  }
  bool Unhealthy(int i) {
    Samples s = Scrape();
    const std::string key = absl::StrCat("qpool_upstream_healthy{node=\"", Node(i), "\"}");
    return s.count(key) == 1 && s[key] == 0;
  }

  grpc::Status Exists(absl::Duration timeout = absl::Seconds(2)) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout));
    qdrant::CollectionExistsRequest request;
    request.set_collection_name("health_e2e");
    qdrant::CollectionExistsResponse reply;
    return stub_->CollectionExists(&ctx, request, &reply);
  }

  static constexpr int kInterval = 200;  // ms, health.medium_interval
  static constexpr int kTimeout = 100;   // ms, health.medium_timeout

  std::string dir_;
  std::string log_path_;
  std::string last_scrape_;
  uint16_t listen_port_ = 0;
  uint16_t admin_port_ = 0;
  Emulator emulators_[2];
  std::unique_ptr<Subprocess> qpoold_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<qdrant::Collections::Stub> stub_;
};

TEST_F(HealthE2eTest, HungNodeTurnsUnhealthyCallsGoToTheOtherAndItComesBack) {
  ASSERT_EQ(HttpRequest(emulators_[0].control_port, "POST", "/hang").status, 200);
  const absl::Time hung_at = absl::Now();
  ASSERT_TRUE(WaitFor([&] { return Unhealthy(0); }, absl::Seconds(10), absl::Milliseconds(10)));
  const absl::Duration detect = absl::Now() - hung_at;
  // unhealthy_threshold x interval + timeout, the interval +10% jitter, plus scheduling slack on a
  // shared 2-core machine.
  EXPECT_LE(detect, absl::Milliseconds(3 * kInterval * 1.1 + kTimeout + 500)) << detect;
  std::cerr << "hung node marked unhealthy after " << detect << "\n";
  EXPECT_TRUE(Healthy(1));
  EXPECT_NE(ReadFileOrEmpty(log_path_).find("unhealthy after 3 failed checks"), std::string::npos);

  // New calls go to the other node: none waits on the hung one.
  const int before = CallsOf(emulators_[1], kExists);
  for (int i = 0; i < 20; ++i) {
    grpc::Status status = Exists();
    EXPECT_TRUE(status.ok()) << i << ": " << status.error_message();
  }
  EXPECT_EQ(CallsOf(emulators_[1], kExists) - before, 20);
  EXPECT_EQ(HttpGet(admin_port_, "/readyz").status, 200);  // node 1 is healthy

  ASSERT_EQ(HttpRequest(emulators_[0].control_port, "POST", "/resume").status, 200);
  const absl::Time resumed_at = absl::Now();
  ASSERT_TRUE(WaitFor([&] { return Healthy(0); }, absl::Seconds(10), absl::Milliseconds(10)));
  const absl::Duration recover = absl::Now() - resumed_at;
  // healthy_threshold x interval (+ jitter) after the first probe that gets through.
  EXPECT_LE(recover, absl::Milliseconds(2 * kInterval * 1.1 + kInterval + 500)) << recover;
  std::cerr << "resumed node healthy again after " << recover << "\n";
  // Traffic returns to both nodes.
  const int before0 = CallsOf(emulators_[0], kExists);
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(Exists().ok());
  EXPECT_GT(CallsOf(emulators_[0], kExists) - before0, 0);

  Samples s = Scrape();
  EXPECT_GE(s[absl::StrCat("qpool_health_checks_total{node=\"", Node(0),
                           "\",tier=\"medium\",result=\"failure\"}")],
            3);
  EXPECT_GE(s[absl::StrCat("qpool_health_checks_total{node=\"", Node(1),
                           "\",tier=\"medium\",result=\"success\"}")],
            3);
  EXPECT_EQ(s[absl::StrCat("qpool_upstream_info{node=\"", Node(1), "\",version=\"1.19.0\"}")], 1);
  EXPECT_GT(s["qpool_health_check_duration_seconds_count{tier=\"medium\"}"], 0);
}

TEST_F(HealthE2eTest, ReadyzIs503WhenNoNodeIsHealthy) {
  for (Emulator& emulator : emulators_) {
    ASSERT_EQ(HttpRequest(emulator.control_port, "POST", "/hang").status, 200);
  }
  ASSERT_TRUE(WaitFor([&] { return HttpGet(admin_port_, "/readyz").status == 503; },
                      absl::Seconds(10), absl::Milliseconds(20)));
  EXPECT_NE(HttpGet(admin_port_, "/readyz").body.find("healthy"), std::string::npos);
  // Both connections are up (usable), so only health can make /readyz 503.
  EXPECT_TRUE(Unhealthy(0));
  EXPECT_TRUE(Unhealthy(1));
  for (Emulator& emulator : emulators_) {
    HttpRequest(emulator.control_port, "POST", "/resume");
  }
  EXPECT_TRUE(WaitFor([&] { return HttpGet(admin_port_, "/readyz").status == 200; },
                      absl::Seconds(10), absl::Milliseconds(20)));
}

TEST_F(HealthE2eTest, PeerThatStopsReadingIsDetectedByPingAndReplaced) {
  const std::string fast_failures = absl::StrCat("qpool_health_checks_total{node=\"", Node(0),
                                                 "\",tier=\"fast\",result=\"failure\"}");
  const std::string connects =
      absl::StrCat("qpool_upstream_connects_total{node=\"", Node(0), "\"}");
  const double connects_before = Scrape()[connects];
  ASSERT_TRUE(emulators_[0].process->process().Signal(SIGSTOP).ok());
  // The connection carries no frame back any more: PING after fast_interval (300ms), no ack
  // within fast_timeout (200ms), closed.
  ASSERT_TRUE(WaitFor([&] { return Scrape()[fast_failures] >= 1; }, absl::Seconds(5),
                      absl::Milliseconds(20)));
  Samples s = Scrape();
  EXPECT_GE(
      s[absl::StrCat("qpool_upstream_disconnects_total{node=\"", Node(0), "\",reason=\"error\"}")],
      1);
  EXPECT_NE(ReadFileOrEmpty(log_path_).find("no PING ack within 200ms"), std::string::npos);
  // Calls meanwhile go to the other node.
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(Exists().ok()) << i;

  ASSERT_TRUE(emulators_[0].process->process().Signal(SIGCONT).ok());
  // A new connection replaces the closed one, and the node takes calls again.
  ASSERT_TRUE(WaitFor([&] { return Scrape()[connects] > connects_before && Healthy(0); },
                      absl::Seconds(15), absl::Milliseconds(50)));
  const int before0 = CallsOf(emulators_[0], kExists);
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(Exists().ok());
  EXPECT_GT(CallsOf(emulators_[0], kExists) - before0, 0);
}

TEST_F(HealthE2eTest, KilledNodeUnderSteadyLoadOnlyInFlightCallsFailAndTrafficReturns) {
  constexpr int kThreads = 4;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> kill_ns{0};  // steady-clock time of the kill; 0 before
  std::mutex mu;
  std::vector<std::pair<int64_t, std::string>> failures;  // (start ns - kill ns, message)
  std::atomic<int> ok{0};
  auto now_ns = [] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  };
  std::vector<std::thread> threads;
  const absl::Time load_end = absl::Now() + absl::Seconds(4);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      while (!stop && absl::Now() < load_end) {
        const int64_t started = now_ns();
        grpc::Status status = Exists(absl::Seconds(1));
        if (status.ok()) {
          ok++;
        } else {
          std::lock_guard<std::mutex> lock(mu);
          failures.emplace_back(started, status.error_message());
        }
      }
    });
  }
  absl::SleepFor(absl::Seconds(1));
  kill_ns = now_ns();
  emulators_[0].process->Kill();
  for (auto& thread : threads) thread.join();
  EXPECT_GT(ok.load(), 100);
  // Only calls already sent when the node died may fail: each started before the kill (or within
  // the 100 ms qpoold may need to see the connection go), at most one per load thread.
  EXPECT_LE(failures.size(), static_cast<size_t>(kThreads));
  for (const auto& [started, message] : failures) {
    EXPECT_LT(started - kill_ns.load(), 100'000'000) << message;
  }
  std::cerr << ok.load() << " calls OK, " << failures.size() << " failed at the kill\n";

  // Restart on the same port: the node becomes healthy again and takes calls.
  ASSERT_NO_FATAL_FAILURE(StartEmulator(0));
  ASSERT_TRUE(WaitFor(
      [&] {
        if (!Healthy(0)) return false;
        for (int i = 0; i < 10; ++i) {
          if (!Exists().ok()) return false;
        }
        return CallsOf(emulators_[0], kExists) > 0;
      },
      absl::Seconds(20), absl::Milliseconds(100)));
  const int before0 = CallsOf(emulators_[0], kExists);
  const int before1 = CallsOf(emulators_[1], kExists);
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(Exists().ok());
  EXPECT_GT(CallsOf(emulators_[0], kExists) - before0, 0);
  EXPECT_GT(CallsOf(emulators_[1], kExists) - before1, 0);
  // Refused reconnects while it was down ejected it (health.consecutive_failures).
  EXPECT_GE(Scrape()[absl::StrCat("qpool_upstream_ejections_total{node=\"", Node(0), "\"}")], 1);
}

TEST_F(HealthE2eTest, UnavailableAnswersEjectTheNodeAfterConsecutiveFailures) {
  // Node 0 answers every CollectionExists UNAVAILABLE (its health checks still pass).
  const std::string faults =
      "{\"methods\":{\"CollectionExists\":{\"error_rate\":1,\"error_code\":\"UNAVAILABLE\"}}}";
  const HttpReply reply = HttpRequest(emulators_[0].control_port, "PUT", "/faults", faults);
  ASSERT_EQ(reply.status, 200) << reply.body;
  const int before = CallsOf(emulators_[0], kExists);
  int failed = 0;
  for (int i = 0; i < 100; ++i) {
    if (!Exists().ok()) failed++;
  }
  // Five UNAVAILABLE answers in a row eject node 0 for base_ejection_time (1s); the rest go to
  // node 1. The app sees none of them: each failed read is retried on node 1 (docs/retries.md).
  EXPECT_EQ(failed, 0);
  EXPECT_GE(CallsOf(emulators_[0], kExists) - before, 5);
  EXPECT_LE(CallsOf(emulators_[0], kExists) - before, 10);
  Samples s = Scrape();
  EXPECT_GE(s["qpool_retries_total{class=\"read\",reason=\"unavailable\"}"], 5);
  EXPECT_GE(s[absl::StrCat("qpool_upstream_ejections_total{node=\"", Node(0), "\"}")], 1);
  EXPECT_EQ(s[absl::StrCat("qpool_upstream_ejections_total{node=\"", Node(1), "\"}")], 0);
  EXPECT_EQ(s["qpool_upstream_panic_total"], 0);
  EXPECT_TRUE(Healthy(0)) << "passive ejection leaves the active verdict alone";
}

// The deep tier asking for a collection that does not exist marks both nodes unhealthy; the calls
// still go through (panic mode, counted).
class HealthDeepCollectionE2eTest : public HealthE2eTest {
 protected:
  std::string ExtraHealthConfig() const override {
    return "  deep_collection: no_such_collection\n  deep_interval: 200ms\n"
           "  deep_timeout: 100ms\n  medium_method: grpc\n";
  }
};

TEST_F(HealthDeepCollectionE2eTest, MissingCollectionMakesNodesUnhealthyAndCallsPanicRoute) {
  // SetUp waited for both nodes healthy, which they are until 3 deep checks failed.
  ASSERT_TRUE(WaitFor([&] { return Unhealthy(0) && Unhealthy(1); }, absl::Seconds(10),
                      absl::Milliseconds(20)));
  EXPECT_EQ(HttpGet(admin_port_, "/readyz").status, 503);
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(Exists().ok()) << i;
  Samples s = Scrape();
  EXPECT_GE(s["qpool_upstream_panic_total"], 10);
  EXPECT_GE(s[absl::StrCat("qpool_health_checks_total{node=\"", Node(0),
                           "\",tier=\"deep\",result=\"failure\"}")],
            3);
  // medium_method: grpc answers SERVING, and reports no version.
  EXPECT_GE(s[absl::StrCat("qpool_health_checks_total{node=\"", Node(0),
                           "\",tier=\"medium\",result=\"success\"}")],
            1);
  EXPECT_GE(CallsOf(emulators_[0], "grpc.health.v1.Health/Check"), 1);
  EXPECT_GE(CallsOf(emulators_[0], "qdrant.Collections/CollectionExists"), 3);
}

// Qdrant with an API key (service.api_key): its health method needs none, its reads do. The
// deep probe sends the key from the variable health.api_key_env names, so the nodes stay healthy;
// apps' calls carry their own key through qpoold untouched.
constexpr char kApiKeyVariable[] = "QPOOL_E2E_QDRANT_API_KEY";

class HealthApiKeyE2eTest : public HealthE2eTest {
 protected:
  void SetUp() override {
    ::setenv(kApiKeyVariable, "s3cret", 1);  // qpoold inherits it
    HealthE2eTest::SetUp();
  }
  void TearDown() override {
    HealthE2eTest::TearDown();
    ::unsetenv(kApiKeyVariable);
  }
  std::vector<std::string> EmulatorFlags() const override { return {"--api-key", "s3cret"}; }
  std::string ExtraHealthConfig() const override {
    return absl::StrCat(
        "  deep_interval: 300ms\n  deep_timeout: 200ms\n  api_key_env: ", kApiKeyVariable, "\n");
  }
};

TEST_F(HealthApiKeyE2eTest, DeepProbeSendsTheKeyAndAppsSendTheirOwn) {
  // Two deep probes per node pass: the key went with them.
  ASSERT_TRUE(WaitFor(
      [&] {
        Samples s = Scrape();
        for (int i = 0; i < 2; ++i) {
          if (s[absl::StrCat("qpool_health_checks_total{node=\"", Node(i),
                             "\",tier=\"deep\",result=\"success\"}")] < 2) {
            return false;
          }
        }
        return true;
      },
      absl::Seconds(10), absl::Milliseconds(20)));
  Samples s = Scrape();
  EXPECT_EQ(s[absl::StrCat("qpool_health_checks_total{node=\"", Node(0),
                           "\",tier=\"deep\",result=\"failure\"}")],
            0);
  EXPECT_TRUE(Healthy(0));
  EXPECT_TRUE(Healthy(1));
  // An app's call without a key is refused by Qdrant, not by qpoold; with the key it goes through.
  EXPECT_EQ(Exists().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext ctx;
  ctx.AddMetadata("api-key", "s3cret");
  qdrant::CollectionExistsRequest request;
  request.set_collection_name("health_e2e");
  qdrant::CollectionExistsResponse reply;
  EXPECT_TRUE(stub_->CollectionExists(&ctx, request, &reply).ok());
}

// The same Qdrant, and qpoold not given the key: the deep read fails UNAUTHENTICATED, every node
// turns unhealthy, /readyz says 503, and the log says what to set.
class HealthMissingApiKeyE2eTest : public HealthApiKeyE2eTest {
 protected:
  void SetUp() override { HealthE2eTest::SetUp(); }
  void TearDown() override { HealthE2eTest::TearDown(); }
  std::string ExtraHealthConfig() const override {
    return "  deep_interval: 300ms\n  deep_timeout: 200ms\n";
  }
};

TEST_F(HealthMissingApiKeyE2eTest, DeepProbeWithoutTheKeyMarksNodesUnhealthyAndSaysWhy) {
  ASSERT_TRUE(WaitFor([&] { return Unhealthy(0) && Unhealthy(1); }, absl::Seconds(10),
                      absl::Milliseconds(20)));
  EXPECT_EQ(HttpGet(admin_port_, "/readyz").status, 503);
  EXPECT_TRUE(WaitFor(
      [&] {
        return ReadFileOrEmpty(log_path_).find("set upstream.api_key_file") != std::string::npos;
      },
      absl::Seconds(5)))
      << ReadFileOrEmpty(log_path_);
}

}  // namespace
}  // namespace qpool::testing
