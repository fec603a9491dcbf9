// Unit tests of daemon/metrics: each metric moves when its event happens (pool events through a
// real NodePool with fake connections and a fake clock; calls through WorkerMetrics), the scrape
// formats what was counted, process_* reads /proc, and the admin endpoint answers per backend
// state.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "daemon/common/qdrant_methods.h"
#include "daemon/metrics/admin_server.h"
#include "daemon/metrics/counters.h"
#include "daemon/metrics/method_class.h"
#include "daemon/metrics/process_metrics.h"
#include "daemon/metrics/scrape.h"
#include "daemon/metrics/scrape_families.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/pool/node_pool.h"
#include "daemon/retry/method_class.h"
#include "prometheus/text_serializer.h"
#include "tests/support/prometheus_text.h"
#include "tests/unit/fake_event_loop.h"
#include "tests/unit/http_get.h"

namespace qpool::metrics {
namespace {

using ::qpool::testing::FakeEventLoop;
using ::qpool::testing::FakeRandom;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

// --- method classes ----------------------------------------------------------------------------

TEST(MethodClassTest, QdrantMethodsFallIntoTheirClass) {
  EXPECT_EQ(ClassifyPath("/qdrant.Points/Search"), MethodClass::kRead);
  EXPECT_EQ(ClassifyPath("/qdrant.Points/SearchBatch"), MethodClass::kRead);
  EXPECT_EQ(ClassifyPath("/qdrant.Points/QueryGroups"), MethodClass::kRead);
  EXPECT_EQ(ClassifyPath("/qdrant.Collections/List"), MethodClass::kRead);
  EXPECT_EQ(ClassifyPath("/qdrant.Qdrant/HealthCheck"), MethodClass::kRead);
  EXPECT_EQ(ClassifyPath("/grpc.health.v1.Health/Check"), MethodClass::kRead);
  EXPECT_EQ(ClassifyPath("/qdrant.Points/Upsert"), MethodClass::kWrite);
  EXPECT_EQ(ClassifyPath("/qdrant.Points/UpdateBatch"), MethodClass::kWrite);
  EXPECT_EQ(ClassifyPath("/qdrant.Points/CreateFieldIndex"), MethodClass::kAdmin);
  EXPECT_EQ(ClassifyPath("/qdrant.Collections/Create"), MethodClass::kAdmin);
  EXPECT_EQ(ClassifyPath("/qdrant.Snapshots/CreateFull"), MethodClass::kAdmin);
  EXPECT_EQ(ClassifyPath("/qdrant.Snapshots/ListFull"), MethodClass::kRead);
}

// The metrics label and the retry class come from one table, so they cannot disagree: a read is
// a read for both, an admin call is never repeated, a write is an id- or filter-scoped write.
TEST(MethodClassTest, MetricsLabelsAndRetryClassesAgreeOnEveryMethod) {
  const retry::MethodClassifier classifier;
  ASSERT_GT(QdrantMethods().size(), 40u);
  for (const QdrantMethod& method : QdrantMethods()) {
    const std::string path = "/" + std::string(method.service) + "/" + std::string(method.method);
    const retry::RetryClass retry_class = classifier.Classify(path, "", "");
    switch (ClassifyPath(path)) {
      case MethodClass::kRead:
        EXPECT_EQ(retry_class, retry::RetryClass::kRead) << path;
        break;
      case MethodClass::kWrite:
        // Without a readable request a selector-dependent write is filter-scoped (the safe side).
        EXPECT_EQ(retry_class, retry::RetryClass::kFilterScopedWrite) << path;
        break;
      case MethodClass::kAdmin:
        EXPECT_EQ(retry_class, retry::RetryClass::kNeverRepeat) << path;
        break;
      case MethodClass::kOther:
        ADD_FAILURE() << path << " is in the table but classified other";
        break;
    }
  }
}

TEST(MethodClassTest, AnythingElseIsOther) {
  EXPECT_EQ(ClassifyPath("/qpool.testing.TestService/Echo"), MethodClass::kOther);
  EXPECT_EQ(ClassifyPath("/qdrant.Points/NoSuchMethod"), MethodClass::kOther);
  EXPECT_EQ(ClassifyPath("/qdrant.Points/"), MethodClass::kOther);
  EXPECT_EQ(ClassifyPath("qdrant.Points/Search"), MethodClass::kOther);
  EXPECT_EQ(ClassifyPath(""), MethodClass::kOther);
  EXPECT_EQ(ClassifyPath("/"), MethodClass::kOther);
  EXPECT_EQ(ClassifyPath("/qdrant.Points/Get/extra"), MethodClass::kOther);
}

// --- counters and histograms -------------------------------------------------------------------

TEST(DurationHistogramTest, ObservationLandsInTheFirstBucketAtOrAboveIt) {
  DurationHistogram histogram(CallDurationBounds());  // 0.0005, 0.001, ...
  histogram.Observe(500us);                           // == first bound: first bucket
  histogram.Observe(700us);                           // second bucket
  histogram.Observe(1000s);                           // +Inf
  histogram.Observe(-5ms);                            // clamped to 0: first bucket
  EXPECT_EQ(histogram.BucketCount(0), 2u);
  EXPECT_EQ(histogram.BucketCount(1), 1u);
  EXPECT_EQ(histogram.BucketCount(CallDurationBounds().size()), 1u);
  EXPECT_NEAR(histogram.SumSeconds(), 1000.0012, 1e-9);
}

TEST(WorkerMetricsTest, RecordCallCountsByClassAndCode) {
  WorkerMetrics metrics(1);
  metrics.RecordCall(MethodClass::kRead, 0, 2ms);
  metrics.RecordCall(MethodClass::kRead, 0, 2ms);
  metrics.RecordCall(MethodClass::kWrite, 14, 3ms);
  metrics.RecordCall(MethodClass::kAdmin, -1, 1ms);  // reset: no status
  metrics.RecordCall(MethodClass::kOther, 99, 1ms);  // not a gRPC code: counted as no status
  EXPECT_EQ(metrics.calls(MethodClass::kRead, 0), 2u);
  EXPECT_EQ(metrics.calls(MethodClass::kWrite, 14), 1u);
  EXPECT_EQ(metrics.calls(MethodClass::kAdmin, kNoStatusSlot), 1u);
  EXPECT_EQ(metrics.calls(MethodClass::kOther, kNoStatusSlot), 1u);
  EXPECT_EQ(metrics.calls(MethodClass::kWrite, 0), 0u);
  EXPECT_NEAR(metrics.call_duration(MethodClass::kRead).SumSeconds(), 0.004, 1e-9);
  EXPECT_STREQ(CodeSlotName(14), "UNAVAILABLE");
  EXPECT_STREQ(CodeSlotName(kNoStatusSlot), "RESET");
}

TEST(WorkerMetricsTest, NodeUsableWhenAnyWorkerIsUpOrNoneFailed) {
  WorkerMetrics w0(1), w1(1);
  const std::vector<const WorkerMetrics*> workers = {&w0, &w1};
  EXPECT_TRUE(NodeUsable(workers, 0));  // nobody tried yet
  w0.node(0).failing = true;            // w1 never tries (its min_connections share is 0)
  EXPECT_FALSE(NodeUsable(workers, 0));
  w1.node(0).live = true;
  EXPECT_TRUE(NodeUsable(workers, 0));
  w1.node(0).live = false;
  w0.node(0).failing = false;
  EXPECT_TRUE(NodeUsable(workers, 0));
}

TEST(WorkerMetricsTest, BytesCount) {
  WorkerMetrics metrics(0);
  metrics.AddRequestBytes(10);
  metrics.AddRequestBytes(5);
  metrics.AddResponseBytes(7);
  EXPECT_EQ(metrics.request_bytes(), 15u);
  EXPECT_EQ(metrics.response_bytes(), 7u);
}

// --- pool events through a real NodePool -------------------------------------------------------

class FakeConnection : public pool::PoolConnection {
 public:
  explicit FakeConnection(pool::PoolConnectionEvents& events) : events_(events) {}
  void Drain() override {}
  void Abort() override {
    if (finished_) return;
    finished_ = true;
    if (connected_) {
      events_.OnClosed(this, absl::CancelledError("aborted"));
    } else {
      events_.OnConnectFailed(this, absl::CancelledError("aborted"));
    }
  }
  void Connect() {
    connected_ = true;
    events_.OnConnected(this, UINT32_MAX);
  }
  void FailConnect() {
    finished_ = true;
    events_.OnConnectFailed(this, absl::UnavailableError("connection refused"));
  }
  void GoAway() { events_.OnGoAway(this); }
  void StreamClosed() { events_.OnStreamClosed(this); }
  void Close(absl::Status reason) {
    finished_ = true;
    events_.OnClosed(this, reason);
  }

 private:
  pool::PoolConnectionEvents& events_;
  bool connected_ = false;
  bool finished_ = false;
};

class FakeFactory : public pool::ConnectionFactory {
 public:
  std::shared_ptr<pool::PoolConnection> Connect(pool::PoolConnectionEvents& events) override {
    made_.push_back(std::make_shared<FakeConnection>(events));
    return made_.back();
  }
  FakeConnection& conn(size_t i) { return *made_.at(i); }
  size_t made() const { return made_.size(); }

 private:
  std::vector<std::shared_ptr<FakeConnection>> made_;
};

class Waiter : public pool::StreamWaiter {
 public:
  void OnStreamReady(pool::PoolConnection*) override { ready++; }
  void OnAcquireFailed(const absl::Status& status) override { failed.push_back(status); }
  int ready = 0;
  std::vector<absl::Status> failed;
};

class PoolMetricsTest : public ::testing::Test {
 protected:
  void MakePool(uint32_t min_connections = 1, uint32_t max_connections = 1, uint32_t streams = 1,
                uint32_t max_pending = 10) {
    pool::NodePoolOptions options;
    options.node_name = "qdrant-0:6334";
    options.min_connections = min_connections;
    options.max_connections = max_connections;
    options.max_streams_per_connection = streams;
    options.acquire_timeout = 1s;
    options.connect_backoff_base = 100ms;
    options.connect_backoff_max = 1s;
    budget_.limit = max_pending;
    observer_ = std::make_unique<PoolMetricsObserver>(metrics_, loop_, [this] { changes_++; });
    pool_ = std::make_unique<pool::NodePool>(options, budget_, factory_, loop_, random_,
                                             observer_.get());
    pool_->Start();
  }

  NodeMetrics metrics_;
  FakeEventLoop loop_;
  FakeRandom random_;
  FakeFactory factory_;
  pool::PendingBudget budget_;
  int changes_ = 0;
  std::unique_ptr<PoolMetricsObserver> observer_;
  std::unique_ptr<pool::NodePool> pool_;
};

TEST_F(PoolMetricsTest, ConnectCountsAndTimesTheHandshake) {
  MakePool();
  loop_.Advance(30ms);
  factory_.conn(0).Connect();
  EXPECT_EQ(metrics_.connects.Get(), 1u);
  EXPECT_EQ(metrics_.ConnectFailures(), 0u);
  EXPECT_NEAR(metrics_.connect_duration.SumSeconds(), 0.030, 1e-9);
  EXPECT_GE(changes_, 2);  // opened, then up
}

TEST_F(PoolMetricsTest, FailedConnectCountsAFailure) {
  MakePool();
  const int before = changes_;
  factory_.conn(0).FailConnect();
  EXPECT_EQ(metrics_.ConnectFailures(), 1u);
  EXPECT_EQ(metrics_.connects.Get(), 0u);
  EXPECT_GT(changes_, before);
}

TEST_F(PoolMetricsTest, DisconnectReasons) {
  MakePool(/*min_connections=*/1, /*max_connections=*/1);
  factory_.conn(0).Connect();
  factory_.conn(0).Close(absl::UnavailableError("reset by peer"));
  EXPECT_EQ(metrics_.disconnects[static_cast<size_t>(pool::CloseReason::kError)].Get(), 1u);

  ASSERT_EQ(factory_.made(), 2u);  // min_connections reopens it
  factory_.conn(1).Connect();
  factory_.conn(1).GoAway();
  factory_.conn(1).Close(absl::OkStatus());  // the drain after GOAWAY finished
  EXPECT_EQ(metrics_.disconnects[static_cast<size_t>(pool::CloseReason::kGoAway)].Get(), 1u);

  ASSERT_EQ(factory_.made(), 3u);
  factory_.conn(2).Connect();
  pool_->Shutdown();
  factory_.conn(2).Close(absl::OkStatus());
  EXPECT_EQ(metrics_.disconnects[static_cast<size_t>(pool::CloseReason::kShutdown)].Get(), 1u);
  EXPECT_EQ(metrics_.disconnects[static_cast<size_t>(pool::CloseReason::kError)].Get(), 1u);
  EXPECT_EQ(metrics_.disconnects[static_cast<size_t>(pool::CloseReason::kGoAway)].Get(), 1u);
  EXPECT_EQ(metrics_.disconnects[static_cast<size_t>(pool::CloseReason::kRecycled)].Get(), 0u);
  EXPECT_EQ(metrics_.disconnects[static_cast<size_t>(pool::CloseReason::kIdle)].Get(), 0u);
}

TEST_F(PoolMetricsTest, RecycledAndIdleDisconnectsAreCountedAsSuch) {
  pool::NodePoolOptions options;
  options.min_connections = 1;
  options.max_connections = 2;
  options.max_streams_per_connection = 1;
  options.max_connection_age = 10min;
  options.idle_timeout = 1min;
  observer_ = std::make_unique<PoolMetricsObserver>(metrics_, loop_, [this] { changes_++; });
  pool_ =
      std::make_unique<pool::NodePool>(options, budget_, factory_, loop_, random_, observer_.get());
  budget_.limit = 10;
  pool_->Start();
  factory_.conn(0).Connect();
  Waiter first;
  Waiter second;
  ASSERT_EQ(pool_->Acquire(first).outcome, pool::NodePool::AcquireOutcome::kReady);
  ASSERT_EQ(pool_->Acquire(second).outcome, pool::NodePool::AcquireOutcome::kQueued);
  factory_.conn(1).Connect();  // a second connection, above min_connections
  factory_.conn(0).StreamClosed();
  factory_.conn(1).StreamClosed();

  loop_.Advance(1min);  // both idle; one is above the floor
  ASSERT_EQ(pool_->stats().draining, 1u);
  factory_.conn(1).Close(absl::OkStatus());
  EXPECT_EQ(metrics_.disconnects[static_cast<size_t>(pool::CloseReason::kIdle)].Get(), 1u);

  loop_.Advance(10min);  // FakeRandom's 0.5 draws no jitter: conn(0) reaches its age
  ASSERT_EQ(pool_->stats().draining, 1u);
  factory_.conn(0).Close(absl::OkStatus());
  EXPECT_EQ(metrics_.disconnects[static_cast<size_t>(pool::CloseReason::kRecycled)].Get(), 1u);
  EXPECT_EQ(metrics_.disconnects[static_cast<size_t>(pool::CloseReason::kGoAway)].Get(), 0u);
  EXPECT_EQ(pool::CloseReasonName(pool::CloseReason::kRecycled), std::string("recycled"));
  EXPECT_EQ(pool::CloseReasonName(pool::CloseReason::kIdle), std::string("idle"));
}

TEST_F(PoolMetricsTest, WaitTimeIsZeroWhenAStreamIsFreeAndTheQueueTimeOtherwise) {
  MakePool(/*min_connections=*/1, /*max_connections=*/1, /*streams=*/1);
  factory_.conn(0).Connect();
  Waiter first;
  ASSERT_EQ(pool_->Acquire(first).outcome, pool::NodePool::AcquireOutcome::kReady);
  EXPECT_EQ(metrics_.wait_duration.BucketCount(0), 1u);  // bound 0: served at once
  Waiter second;
  ASSERT_EQ(pool_->Acquire(second).outcome, pool::NodePool::AcquireOutcome::kQueued);
  loop_.Advance(40ms);
  factory_.conn(0).StreamClosed();
  EXPECT_EQ(second.ready, 1);
  EXPECT_NEAR(metrics_.wait_duration.SumSeconds(), 0.040, 1e-9);
  EXPECT_EQ(metrics_.wait_duration.BucketCount(0), 1u);
}

TEST_F(PoolMetricsTest, QueueOverflowCounts) {
  MakePool(/*min_connections=*/1, /*max_connections=*/1, /*streams=*/1, /*max_pending=*/1);
  factory_.conn(0).Connect();
  Waiter holder, queued, refused;
  ASSERT_EQ(pool_->Acquire(holder).outcome, pool::NodePool::AcquireOutcome::kReady);
  ASSERT_EQ(pool_->Acquire(queued).outcome, pool::NodePool::AcquireOutcome::kQueued);
  EXPECT_EQ(metrics_.queue_overflows.Get(), 0u);
  ASSERT_EQ(pool_->Acquire(refused).outcome, pool::NodePool::AcquireOutcome::kFailed);
  EXPECT_EQ(metrics_.queue_overflows.Get(), 1u);
  pool_->CancelWait(queued);
}

TEST_F(PoolMetricsTest, AcquireTimeoutCounts) {
  MakePool(/*min_connections=*/1, /*max_connections=*/1, /*streams=*/1);
  factory_.conn(0).Connect();
  Waiter holder, queued;
  ASSERT_EQ(pool_->Acquire(holder).outcome, pool::NodePool::AcquireOutcome::kReady);
  ASSERT_EQ(pool_->Acquire(queued).outcome, pool::NodePool::AcquireOutcome::kQueued);
  loop_.Advance(999ms);
  EXPECT_EQ(metrics_.acquire_timeouts.Get(), 0u);
  loop_.Advance(1ms);
  EXPECT_EQ(metrics_.acquire_timeouts.Get(), 1u);
  EXPECT_EQ(queued.failed.size(), 1u);
}

// --- scrape formatting -------------------------------------------------------------------------

using ::qpool::testing::ParseSamples;

std::string Serialize(const std::vector<prometheus::MetricFamily>& families) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

TEST(ScrapeTest, SumsWorkersAndNamesEveryFamily) {
  WorkerMetrics w0(2), w1(2);
  w0.RecordCall(MethodClass::kRead, 0, 1ms);
  w1.RecordCall(MethodClass::kRead, 0, 3ms);
  w1.RecordCall(MethodClass::kWrite, 8, 1ms);
  w0.node(1).connects.Add();
  w1.node(1).connects.Add();
  w1.node(0).queue_overflows.Add();
  w0.AddRequestBytes(100);
  w1.AddRequestBytes(1);
  ScrapeInput input;
  input.node_names = {"a:1", "b:2"};
  input.workers = {&w0, &w1};
  input.downstream.accepted = 7;
  input.downstream.open = 3;
  input.downstream.transparent_retries = 4;
  NodePoolGauges g;
  g.ready = 1;
  g.busy = 2;
  g.streams_in_flight = 5;
  input.pools = {std::vector<NodePoolGauges>{g, g}, std::nullopt};
  const std::string text = Serialize(BuildFamilies(input));
  auto samples = ParseSamples(text);
  EXPECT_EQ(samples["qpool_calls_total{protocol=\"grpc\",class=\"read\",code=\"OK\"}"], 2);
  EXPECT_EQ(
      samples["qpool_calls_total{protocol=\"grpc\",class=\"write\",code=\"RESOURCE_EXHAUSTED\"}"],
      1);
  EXPECT_EQ(
      samples.count("qpool_calls_total{protocol=\"grpc\",class=\"write\",code=\"UNAVAILABLE\"}"),
      0u);
  EXPECT_EQ(samples["qpool_call_duration_seconds_count{protocol=\"grpc\",class=\"read\"}"], 2);
  EXPECT_EQ(
      samples["qpool_call_duration_seconds_bucket{protocol=\"grpc\",class=\"read\",le=\"+Inf\"}"],
      2);
  EXPECT_EQ(
      samples["qpool_call_duration_seconds_bucket{protocol=\"grpc\",class=\"read\",le=\"0.001\"}"],
      1);
  EXPECT_NEAR(samples["qpool_call_duration_seconds_sum{protocol=\"grpc\",class=\"read\"}"], 0.004,
              1e-9);
  EXPECT_EQ(samples["qpool_upstream_connects_total{node=\"b:2\"}"], 2);
  EXPECT_EQ(samples["qpool_upstream_connects_total{node=\"a:1\"}"], 0);
  EXPECT_EQ(samples["qpool_pool_queue_overflows_total{node=\"a:1\"}"], 1);
  EXPECT_EQ(samples["qpool_request_bytes_total"], 101);
  EXPECT_EQ(samples["qpool_downstream_connections_accepted_total"], 7);
  EXPECT_EQ(samples["qpool_downstream_connections"], 3);
  EXPECT_EQ(samples["qpool_transparent_retries_total"], 4);
  EXPECT_EQ(samples["qpool_upstream_connections{node=\"a:1\",state=\"busy\"}"], 2);
  EXPECT_EQ(samples["qpool_upstream_streams_in_flight{node=\"b:2\"}"], 5);
  EXPECT_EQ(samples["qpool_scrape_workers_unanswered"], 1);
  // Every family has HELP and TYPE and the qpool_ prefix.
  std::regex type_line("# TYPE (\\S+) (\\S+)");
  int families = 0;
  for (std::sregex_iterator it(text.begin(), text.end(), type_line), end; it != end; ++it) {
    const std::string name = (*it)[1];
    families++;
    EXPECT_EQ(name.rfind("qpool_", 0), 0u) << name;
    EXPECT_THAT(text, HasSubstr("# HELP " + name + " ")) << name;
    if ((*it)[2] == "counter") {
      EXPECT_EQ(name.substr(name.size() - 6), "_total") << name;
    }
  }
  EXPECT_GE(families, 20);
}

TEST(ScrapeTest, PoolJsonListsNodesAndWorkers) {
  WorkerMetrics w0(1);
  ScrapeInput input;
  input.node_names = {"qdrant-0:6334"};
  input.workers = {&w0};
  input.ready = true;
  NodePoolGauges g;
  g.ready = 2;
  g.waiting = 4;
  input.pools = {std::vector<NodePoolGauges>{g}};
  const std::string json = PoolJson(input);
  EXPECT_THAT(json, HasSubstr("\"node\":\"qdrant-0:6334\""));
  EXPECT_THAT(json, HasSubstr("\"ready\":2"));
  EXPECT_THAT(json, HasSubstr("\"calls_waiting\":4"));
  EXPECT_THAT(json, HasSubstr("\"worker\":0"));
  EXPECT_THAT(json, HasSubstr("{\"ready\":true"));
}

TEST(ScrapeTest, PoolJsonShowsLongestWaitAndEachConnection) {
  WorkerMetrics w0(1);
  ScrapeInput input;
  input.node_names = {"qdrant-0:6334"};
  input.workers = {&w0};
  NodePoolGauges g;
  g.longest_wait_seconds = 0.25;
  g.connections = {{"busy", 100, 100}, {"draining", 3, 100}};
  input.pools = {std::vector<NodePoolGauges>{g}};
  const std::string json = PoolJson(input);
  EXPECT_THAT(json, HasSubstr("\"longest_wait_seconds\":0.25"));
  EXPECT_THAT(json, HasSubstr("{\"state\":\"busy\",\"streams\":100,\"stream_cap\":100}"));
  EXPECT_THAT(json, HasSubstr("{\"state\":\"draining\",\"streams\":3,\"stream_cap\":100}"));
}

TEST(ProcessMetricsTest, ReadsProcSelf) {
  auto samples = ParseSamples(Serialize(CollectProcessMetrics()));
  EXPECT_GT(samples["process_open_fds"], 2);
  EXPECT_GT(samples["process_max_fds"], samples["process_open_fds"]);
  EXPECT_GE(samples["process_threads"], 1);
  EXPECT_GT(samples["process_resident_memory_bytes"], 1 << 20);
  const double now = static_cast<double>(std::time(nullptr));
  EXPECT_NEAR(samples["process_start_time_seconds"], now, 3600);
  EXPECT_GE(samples.count("process_cpu_seconds_total"), 1u);
}

// --- admin endpoint ----------------------------------------------------------------------------

class FakeBackend : public AdminBackend {
 public:
  bool Started() const override { return started; }
  std::string NotReadyReason() const override { return not_ready; }
  bool Live(absl::Duration) override { return live; }
  ScrapeInput Scrape(absl::Duration) override {
    ScrapeInput input;
    input.node_names = {"n:1"};
    input.workers = {&worker};
    return input;
  }
  bool started = false;
  std::string not_ready = "starting";
  bool live = true;
  WorkerMetrics worker{1};
};

class AdminServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    AdminServerOptions options;
    options.port = 0;
    options.version = "9.9.9";
    auto server = AdminServer::Start(options, backend_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    port_ = server_->port();
  }
  FakeBackend backend_;
  std::unique_ptr<AdminServer> server_;
  uint16_t port_ = 0;
};

TEST_F(AdminServerTest, StartupzAndReadyzFollowTheBackend) {
  EXPECT_EQ(testing::HttpGet(port_, "/startupz").status, 503);
  auto readyz = testing::HttpGet(port_, "/readyz");
  EXPECT_EQ(readyz.status, 503);
  EXPECT_THAT(readyz.body, HasSubstr("starting"));
  backend_.started = true;
  backend_.not_ready = "";
  EXPECT_EQ(testing::HttpGet(port_, "/startupz").status, 200);
  EXPECT_EQ(testing::HttpGet(port_, "/readyz").status, 200);
}

TEST_F(AdminServerTest, LivezFollowsTheWorkers) {
  EXPECT_EQ(testing::HttpGet(port_, "/livez").status, 200);
  backend_.live = false;
  EXPECT_EQ(testing::HttpGet(port_, "/livez").status, 503);
}

TEST_F(AdminServerTest, MetricsServesTheTextFormatWithBuildAndProcessFamilies) {
  backend_.worker.RecordCall(MethodClass::kRead, 0, 1ms);
  auto reply = testing::HttpGet(port_, "/metrics");
  EXPECT_EQ(reply.status, 200);
  EXPECT_THAT(reply.content_type, HasSubstr("text/plain; version=0.0.4"));
  auto samples = ParseSamples(reply.body);
  EXPECT_EQ(samples["qpool_build_info{version=\"9.9.9\"}"], 1);
  EXPECT_EQ(samples["qpool_calls_total{protocol=\"grpc\",class=\"read\",code=\"OK\"}"], 1);
  EXPECT_GT(samples["process_open_fds"], 0);
}

TEST_F(AdminServerTest, PoolIsJsonAndUnknownPathsAre404) {
  auto pool = testing::HttpGet(port_, "/pool");
  EXPECT_EQ(pool.status, 200);
  EXPECT_EQ(pool.content_type, "application/json");
  EXPECT_THAT(pool.body, HasSubstr("\"node\":\"n:1\""));
  EXPECT_EQ(testing::HttpGet(port_, "/nope").status, 404);
}

TEST_F(AdminServerTest, StopClosesTheListener) {
  server_->Stop();
  EXPECT_EQ(testing::HttpGet(port_, "/livez").status, 0);
}

TEST(AdminQuitTest, PostFromLoopbackQuitsOtherMethodsAre405) {
  FakeBackend backend;
  std::atomic<int> quits{0};
  AdminServerOptions options;
  options.port = 0;
  options.on_quit = [&quits] { quits.fetch_add(1); };
  auto server = AdminServer::Start(options, backend);
  ASSERT_TRUE(server.ok()) << server.status();
  const uint16_t port = (*server)->port();
  EXPECT_EQ(testing::HttpGet(port, "/quitquitquit").status, 405);
  EXPECT_EQ(testing::HttpRequest(port, "PUT", "/quitquitquit").status, 405);
  EXPECT_EQ(testing::HttpRequest(port, "POST", "/metrics").status, 405);
  EXPECT_EQ(quits.load(), 0);
  const auto quit = testing::HttpRequest(port, "POST", "/quitquitquit");
  EXPECT_EQ(quit.status, 200);
  EXPECT_EQ(quits.load(), 1);
  // A body is read and ignored.
  EXPECT_EQ(testing::HttpRequest(port, "POST", "/quitquitquit", "{}").status, 200);
  EXPECT_EQ(quits.load(), 2);
}

TEST(AdminQuitTest, WithoutAHandlerQuitIsNotFound) {
  FakeBackend backend;
  AdminServerOptions options;
  options.port = 0;
  auto server = AdminServer::Start(options, backend);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ(testing::HttpRequest((*server)->port(), "POST", "/quitquitquit").status, 405);
  EXPECT_EQ(testing::HttpGet((*server)->port(), "/quitquitquit").status, 404);
}

TEST(AdminQuitTest, AnIpv6WildcardListenerServesIpv4Clients) {
  FakeBackend backend;
  AdminServerOptions options;
  options.host = "::";
  options.port = 0;
  auto server = AdminServer::Start(options, backend);
  if (!server.ok()) GTEST_SKIP() << "no IPv6 on this machine: " << server.status();
  // HttpGet connects to 127.0.0.1: a v4-mapped peer on the dual-stack socket.
  EXPECT_EQ(testing::HttpGet((*server)->port(), "/livez").status, 200);
}

TEST(ReloadMetricsTest, CountsByResultAndKeepsTheLastSuccessTime) {
  ConfigReloadMetrics reloads;
  reloads.RecordInitialLoad(absl::FromUnixSeconds(1000));
  reloads.RecordFailure();
  reloads.RecordSuccess(absl::FromUnixSeconds(2000));
  reloads.RecordFailure();
  FakeBackend backend;
  AdminServerOptions options;
  options.reloads = &reloads;
  auto samples = ParseSamples(RenderMetrics(backend, options));
  EXPECT_EQ(samples["qpool_config_reloads_total{result=\"success\"}"], 1);
  EXPECT_EQ(samples["qpool_config_reloads_total{result=\"failure\"}"], 2);
  EXPECT_EQ(samples["qpool_config_last_reload_success_timestamp_seconds"], 2000);
}

// A POST carrying Origin, as a browser sends for a page's cross-site request: refused.
TEST(AdminQuitTest, ABrowsersCrossSitePostIsRefused) {
  namespace beast = boost::beast;
  namespace http = beast::http;
  FakeBackend backend;
  std::atomic<int> quits{0};
  AdminServerOptions options;
  options.port = 0;
  options.on_quit = [&quits] { quits.fetch_add(1); };
  auto server = AdminServer::Start(options, backend);
  ASSERT_TRUE(server.ok()) << server.status();
  boost::asio::io_context io;
  beast::tcp_stream stream(io);
  stream.expires_after(std::chrono::seconds(5));
  stream.connect(boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"),
                                                (*server)->port()));
  http::request<http::empty_body> request(http::verb::post, "/quitquitquit", 11);
  request.set(http::field::host, "127.0.0.1");
  request.set(http::field::origin, "https://evil.example");
  http::write(stream, request);
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  http::read(stream, buffer, response);
  EXPECT_EQ(response.result_int(), 403u);
  EXPECT_EQ(quits.load(), 0);
}

}  // namespace
}  // namespace qpool::metrics
