// The built qpoold in front of the built qdrant-emulator, both on ports picked at run time, with
// its admin endpoint on another: /metrics counts exactly the calls a client made (by method class
// and gRPC code), `promtool check metrics` accepts the scrape (when promtool is there), /readyz
// follows the only upstream node away and back while /livez stays 200, and a real Prometheus server
// (Debian's `prometheus`) scraping qpoold answers a PromQL query with the number of calls made
// (when prometheus is there; both tool cases are the ctest entry metrics_e2e_tools_test, Not Run
// without their tool).
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "daemon/common/grpc_code.h"
#include "gtest/gtest.h"
#include "qdrant/collections_service.grpc.pb.h"
#include "qdrant/points_service.grpc.pb.h"
#include "qdrant/qdrant.grpc.pb.h"
#include "tests/support/emulator_process.h"
#include "tests/support/prometheus_text.h"
#include "tests/support/skip.h"
#include "tests/support/test_util.h"
#include "tests/unit/http_get.h"

namespace qpool::testing {
namespace {

std::string UrlEncode(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (isalnum(c) || c == '_' || c == '-' || c == '.') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof(buf), "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

class MetricsE2eTest : public ::testing::Test {
 protected:
  virtual int workers() const { return 1; }

  void SetUp() override {
    std::string dir = ::testing::TempDir() + "/qpoold_metrics_XXXXXX";
    ASSERT_NE(mkdtemp(dir.data()), nullptr) << std::strerror(errno);
    dir_ = dir;
    emulator_port_ = PickFreePort();
    listen_port_ = PickFreePort();
    admin_port_ = PickFreePort();
    ASSERT_NE(emulator_port_, 0);
    ASSERT_NO_FATAL_FAILURE(StartEmulator());
    log_path_ = dir_ + "/qpoold.log";
    // These tests watch /readyz follow the only node; qpoold reads the setting from its
    // environment (QPOOL_<SECTION>_<KEY>), which the child inherits.
    ASSERT_EQ(setenv("QPOOL_ADMIN_READINESS_INCLUDES_UPSTREAM", "true", 1), 0);
    auto qpoold =
        Subprocess::Spawn({QPOOLD_PATH, "--rest-listen", "127.0.0.1:0", "--listen",
                           absl::StrCat("127.0.0.1:", listen_port_), "--admin-listen",
                           absl::StrCat("127.0.0.1:", admin_port_), "--upstream",
                           absl::StrCat("127.0.0.1:", emulator_port_), "--max-connections", "2",
                           "--workers", absl::StrCat(workers())},
                          log_path_);
    ASSERT_TRUE(qpoold.ok()) << qpoold.status();
    qpoold_ = std::move(*qpoold);
    ASSERT_TRUE(WaitFor(
        [&] { return Exited() || (CanConnect(listen_port_) && Get("/readyz").status == 200); },
        absl::Seconds(15)));
    ASSERT_FALSE(Exited()) << "qpoold exited at start-up:\n" << ReadFileOrEmpty(log_path_);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", listen_port_),
                                   grpc::InsecureChannelCredentials());
  }

  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "qpoold's log:\n" << ReadFileOrEmpty(log_path_) << "\n";
      std::cerr << "last scrape:\n" << last_scrape_ << "\n";
    }
    channel_.reset();  // qpoold's drain then has no app connection to wait for
    if (prometheus_ != nullptr) {
      (void)prometheus_->Signal(SIGTERM);
      if (!prometheus_->WaitForExit(absl::Seconds(10))) prometheus_->Kill();
    }
    if (qpoold_ != nullptr) {
      (void)qpoold_->Signal(SIGTERM);
      if (!qpoold_->WaitForExit(absl::Seconds(10))) qpoold_->Kill();
    }
    emulator_.reset();  // SIGKILL
  }

  void StartEmulator() {
    auto emulator = EmulatorProcess::Start(QDRANT_EMULATOR_PATH,
                                           {"--listen", absl::StrCat("127.0.0.1:", emulator_port_)},
                                           dir_ + "/emulator.log");
    ASSERT_TRUE(emulator.ok()) << emulator.status();
    emulator_ = std::move(*emulator);
  }

  bool Exited() { return qpoold_->WaitForExit(absl::ZeroDuration()).has_value(); }
  HttpReply Get(const std::string& path) { return HttpGet(admin_port_, path); }
  Samples Scrape() {
    HttpReply reply = Get("/metrics");
    EXPECT_EQ(reply.status, 200);
    last_scrape_ = reply.body;
    return ParseSamples(reply.body);
  }

  // Counts what the client saw, as "class/CODE".
  std::map<std::string, int> seen_;
  void Count(const char* klass, const grpc::Status& status) {
    seen_[absl::StrCat(klass, "/", GrpcCodeName(static_cast<int>(status.error_code())))]++;
  }

  void HealthChecks(int n, std::shared_ptr<grpc::Channel> channel = nullptr) {
    auto stub = qdrant::Qdrant::NewStub(channel != nullptr ? channel : channel_);
    for (int i = 0; i < n; ++i) {
      grpc::ClientContext ctx;
      qdrant::HealthCheckReply reply;
      Count("read", stub->HealthCheck(&ctx, qdrant::HealthCheckRequest(), &reply));
    }
  }

  // Creates the collection metrics_e2e twice, counted as "admin": the second call fails
  // ALREADY_EXISTS.
  void CreateCollectionTwice() {
    auto collections = qdrant::Collections::NewStub(channel_);
    for (int i = 0; i < 2; ++i) {
      grpc::ClientContext ctx;
      qdrant::CreateCollection request;
      request.set_collection_name("metrics_e2e");
      request.mutable_vectors_config()->mutable_params()->set_size(4);
      request.mutable_vectors_config()->mutable_params()->set_distance(qdrant::Cosine);
      qdrant::CollectionOperationResponse reply;
      Count("admin", collections->Create(&ctx, request, &reply));
    }
  }

  std::string dir_;
  std::string log_path_;
  std::string last_scrape_;
  uint16_t emulator_port_ = 0;
  uint16_t listen_port_ = 0;
  uint16_t admin_port_ = 0;
  std::unique_ptr<EmulatorProcess> emulator_;
  std::unique_ptr<Subprocess> qpoold_;
  std::unique_ptr<Subprocess> prometheus_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(MetricsE2eTest, ScrapeCountsEqualTheCallsMade) {
  HealthChecks(40);
  auto collections = qdrant::Collections::NewStub(channel_);
  for (int i = 0; i < 7; ++i) {
    grpc::ClientContext ctx;
    qdrant::ListCollectionsResponse reply;
    Count("read", collections->List(&ctx, qdrant::ListCollectionsRequest(), &reply));
  }
  CreateCollectionTwice();  // the second one fails: ALREADY_EXISTS
  auto points = qdrant::Points::NewStub(channel_);
  for (int i = 0; i < 5; ++i) {
    grpc::ClientContext ctx;
    qdrant::UpsertPoints request;
    request.set_collection_name(i < 3 ? "metrics_e2e" : "no_such_collection");
    qdrant::PointsOperationResponse reply;
    Count("write", points->Upsert(&ctx, request, &reply));
  }
  const int total = 40 + 7 + 2 + 5;

  // Counters are read at scrape time; the last call's end is recorded on qpoold's worker when its
  // stream closes, a moment after the client saw the answer.
  Samples samples;
  ASSERT_TRUE(WaitFor(
      [&] {
        samples = Scrape();
        double ended = 0;
        for (const char* klass : {"read", "write", "admin", "other"}) {
          ended += samples[absl::StrCat(
              "qpool_call_duration_seconds_count{protocol=\"grpc\",class=\"", klass, "\"}")];
        }
        return ended == total;
      },
      absl::Seconds(10)));
  for (const auto& [key, count] : seen_) {
    const std::string klass = key.substr(0, key.find('/'));
    const std::string code = key.substr(key.find('/') + 1);
    EXPECT_EQ(samples[absl::StrCat("qpool_calls_total{protocol=\"grpc\",class=\"", klass,
                                   "\",code=\"", code, "\"}")],
              count)
        << key;
  }
  EXPECT_EQ(seen_["admin/OK"], 1) << "the emulator answered otherwise than expected";
  EXPECT_EQ(seen_["admin/ALREADY_EXISTS"], 1);
  EXPECT_EQ(samples["qpool_calls_total{protocol=\"grpc\",class=\"admin\",code=\"ALREADY_EXISTS\"}"],
            1);
  EXPECT_EQ(samples["qpool_calls_started_total"], total);
  EXPECT_EQ(samples["qpool_call_duration_seconds_count{protocol=\"grpc\",class=\"read\"}"], 47);
  EXPECT_EQ(samples["qpool_call_duration_seconds_count{protocol=\"grpc\",class=\"write\"}"], 5);
  EXPECT_EQ(samples["qpool_call_duration_seconds_count{protocol=\"grpc\",class=\"admin\"}"], 2);
  const std::string node = absl::StrCat("{node=\"127.0.0.1:", emulator_port_, "\"}");
  EXPECT_EQ(samples["qpool_upstream_attempt_duration_seconds_count" + node], total);
  // Health probes (medium, deep tiers) take streams from the pool too: each finished one counts
  // there, and one per tier may still be in flight.
  double probes = 0;
  for (const char* tier : {"medium", "deep"}) {
    for (const char* result : {"success", "failure"}) {
      probes += samples[absl::StrCat("qpool_health_checks_total{node=\"127.0.0.1:", emulator_port_,
                                     "\",tier=\"", tier, "\",result=\"", result, "\"}")];
    }
  }
  EXPECT_GE(samples["qpool_pool_wait_duration_seconds_count" + node], total + probes);
  EXPECT_LE(samples["qpool_pool_wait_duration_seconds_count" + node], total + probes + 2);
  EXPECT_GE(samples["qpool_upstream_connects_total" + node], 1);
  EXPECT_EQ(samples["qpool_local_replies_total"], 0);
  EXPECT_GT(samples["qpool_request_bytes_total"], 0);
  EXPECT_GT(samples["qpool_response_bytes_total"], 0);
  EXPECT_GE(samples["qpool_downstream_connections_accepted_total"], 1);
  EXPECT_EQ(samples["qpool_ready"], 1);
  EXPECT_EQ(samples["qpool_build_info{version=\"" QPOOL_VERSION "\"}"], 1);
  EXPECT_GT(samples["process_open_fds"], 0);

  // /pool names the node and its connections.
  HttpReply pool = Get("/pool");
  EXPECT_EQ(pool.status, 200);
  EXPECT_NE(pool.body.find(absl::StrCat("\"node\":\"127.0.0.1:", emulator_port_, "\"")),
            std::string::npos)
      << pool.body;
}

// Needs promtool (Debian's prometheus package): run as the ctest entry metrics_e2e_tools_test,
// Not Run without it.
TEST_F(MetricsE2eTest, PromtoolAcceptsTheScrape) {
  QPOOL_SKIP_UNLESS_EXECUTABLE(PROMTOOL_PATH);
  HealthChecks(5);
  CreateCollectionTwice();  // the second one fails: ALREADY_EXISTS, a second code label
  ASSERT_EQ(seen_["read/OK"], 5);
  ASSERT_TRUE(WaitFor(
      [&] {
        return Scrape()["qpool_call_duration_seconds_count{protocol=\"grpc\",class=\"admin\"}"] ==
               2;
      },
      absl::Seconds(10)));

  // promtool's own lint of the exposition format.
  const std::string scrape_path = dir_ + "/scrape.txt";
  std::ofstream(scrape_path) << last_scrape_;
  const std::string out_path = dir_ + "/promtool.out";
  const int rc = std::system(
      absl::StrCat(PROMTOOL_PATH, " check metrics < ", scrape_path, " > ", out_path, " 2>&1")
          .c_str());
  EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0) << ReadFileOrEmpty(out_path);
}

TEST_F(MetricsE2eTest, ReadyzFlipsWithTheOnlyUpstreamAndLivezStays200) {
  HealthChecks(3);
  EXPECT_EQ(Get("/readyz").status, 200);
  EXPECT_EQ(Get("/startupz").status, 200);
  int livez_failures = 0;
  auto readyz_is = [&](int status) {
    if (Get("/livez").status != 200) livez_failures++;
    return Get("/readyz").status == status;
  };

  emulator_->Kill();
  ASSERT_TRUE(WaitFor([&] { return readyz_is(503); }, absl::Seconds(15), absl::Milliseconds(50)));
  EXPECT_NE(Get("/readyz").body.find("no usable upstream node"), std::string::npos);
  Samples down = Scrape();
  const std::string node = absl::StrCat("{node=\"127.0.0.1:", emulator_port_, "\"}");
  EXPECT_EQ(down["qpool_ready"], 0);
  EXPECT_EQ(down["qpool_upstream_node_usable" + node], 0);
  // A killed node refuses the TCP connect: reason "connect". The pool reconnects after a backoff,
  // so the first refused connect may come after the node is already marked down.
  const std::string refused_connects =
      absl::StrCat("qpool_upstream_connect_failures_total{node=\"127.0.0.1:", emulator_port_,
                   "\",reason=\"connect\"}");
  EXPECT_TRUE(WaitFor([&] { return Scrape()[refused_connects] >= 1; }, absl::Seconds(10)))
      << last_scrape_;
  EXPECT_GE(down[absl::StrCat("qpool_upstream_disconnects_total{node=\"127.0.0.1:", emulator_port_,
                              "\",reason=\"error\"}")],
            1);

  ASSERT_NO_FATAL_FAILURE(StartEmulator());
  ASSERT_TRUE(WaitFor([&] { return readyz_is(200); }, absl::Seconds(20), absl::Milliseconds(50)));
  EXPECT_EQ(livez_failures, 0);
  HealthChecks(1);
  EXPECT_EQ(seen_["read/OK"], 4);
}

// Needs prometheus: run as the ctest entry metrics_e2e_tools_test, Not Run without it.
TEST_F(MetricsE2eTest, PrometheusServerScrapesTheCallsMade) {
  QPOOL_SKIP_UNLESS_EXECUTABLE(PROMETHEUS_PATH);
  const int kCalls = 25;
  HealthChecks(kCalls);
  ASSERT_EQ(seen_["read/OK"], kCalls);

  const uint16_t prometheus_port = PickFreePort();
  const std::string config_path = dir_ + "/prometheus.yml";
  std::ofstream(config_path) << "global:\n"
                             << "  scrape_interval: 1s\n"
                             << "  evaluation_interval: 1s\n"
                             << "scrape_configs:\n"
                             << "  - job_name: qpoold\n"
                             << "    static_configs:\n"
                             << "      - targets: [\"127.0.0.1:" << admin_port_ << "\"]\n";
  auto prometheus = Subprocess::Spawn(
      {PROMETHEUS_PATH, "--config.file=" + config_path, "--storage.tsdb.path=" + dir_ + "/tsdb",
       absl::StrCat("--web.listen-address=127.0.0.1:", prometheus_port)},
      dir_ + "/prometheus.log");
  ASSERT_TRUE(prometheus.ok()) << prometheus.status();
  prometheus_ = std::move(*prometheus);

  const std::string query =
      "/api/v1/query?query=" + UrlEncode("sum(qpool_calls_total{job=\"qpoold\",class=\"read\"})");
  std::string answer;
  const bool got = WaitFor(
      [&] {
        HttpReply reply = HttpGet(prometheus_port, query);
        answer = reply.body;
        // {"status":"success","data":{"resultType":"vector","result":[{"metric":{},
        //  "value":[1795753325.03,"25"]}]}}
        return reply.status == 200 &&
               reply.body.find(absl::StrCat(",\"", kCalls, "\"]")) != std::string::npos;
      },
      absl::Seconds(60), absl::Milliseconds(250));
  EXPECT_TRUE(got) << "last answer: " << answer << "\nprometheus log:\n"
                   << ReadFileOrEmpty(dir_ + "/prometheus.log");
  // The target is up and healthy in Prometheus's eyes.
  HttpReply up = HttpGet(prometheus_port, "/api/v1/query?query=" + UrlEncode("up{job=\"qpoold\"}"));
  EXPECT_NE(up.body.find(",\"1\"]"), std::string::npos) << up.body;
}

class MetricsE2eTwoWorkersTest : public MetricsE2eTest {
 protected:
  int workers() const override { return 2; }
};

TEST_F(MetricsE2eTwoWorkersTest, CountsSumOverWorkersAndPoolListsBoth) {
  // Four app connections of their own: accepted round-robin, so both workers carry calls.
  for (int c = 0; c < 4; ++c) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    HealthChecks(10, grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", listen_port_),
                                               grpc::InsecureChannelCredentials(), args));
  }
  ASSERT_EQ(seen_["read/OK"], 40);
  Samples samples;
  ASSERT_TRUE(WaitFor(
      [&] {
        samples = Scrape();
        return samples["qpool_call_duration_seconds_count{protocol=\"grpc\",class=\"read\"}"] == 40;
      },
      absl::Seconds(10)));
  EXPECT_EQ(samples["qpool_calls_total{protocol=\"grpc\",class=\"read\",code=\"OK\"}"], 40);
  EXPECT_EQ(samples["qpool_scrape_workers_unanswered"], 0);
  const std::string node = absl::StrCat("127.0.0.1:", emulator_port_);
  double connections = 0;
  for (const char* state : {"connecting", "ready", "busy", "draining"}) {
    connections += samples[absl::StrCat("qpool_upstream_connections{node=\"", node, "\",state=\"",
                                        state, "\"}")];
  }
  EXPECT_GE(connections, 1);
  EXPECT_LE(connections, 2);  // --max-connections 2, shared by the two workers
  HttpReply pool = Get("/pool");
  EXPECT_NE(pool.body.find("\"worker\":0,"), std::string::npos) << pool.body;
  EXPECT_NE(pool.body.find("\"worker\":1,"), std::string::npos) << pool.body;
  EXPECT_EQ(pool.body.find("\"answered\":false"), std::string::npos) << pool.body;
  EXPECT_EQ(Get("/livez").status, 200);
}

// With two workers and min_connections 1, only worker 0 keeps a connection; worker 1 never tries.
// Its silence must not keep /readyz at 200 when worker 0 sees the node go.
TEST_F(MetricsE2eTwoWorkersTest, ReadyzFlipsWhenOnlyOneWorkerTriesTheNode) {
  EXPECT_EQ(Get("/readyz").status, 200);
  emulator_->Kill();
  EXPECT_TRUE(WaitFor([&] { return Get("/readyz").status == 503; }, absl::Seconds(15),
                      absl::Milliseconds(50)));
  ASSERT_NO_FATAL_FAILURE(StartEmulator());
  EXPECT_TRUE(WaitFor([&] { return Get("/readyz").status == 200; }, absl::Seconds(20),
                      absl::Milliseconds(50)));
  EXPECT_EQ(Get("/livez").status, 200);
}

}  // namespace
}  // namespace qpool::testing
