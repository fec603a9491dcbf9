// Retries end to end (issue "Retry middleware", docs/retries.md): the built qpoold in front of one
// or two built qdrant-emulators, whose fault injection fails calls and whose per-method counters
// show how many attempts reached "Qdrant". Every process runs on loopback ports picked at run time
// and is stopped by pid.
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "qdrant/collections_service.grpc.pb.h"
#include "qdrant/emulator_control.pb.h"
#include "qdrant/points_service.grpc.pb.h"
#include "qdrant/qdrant.grpc.pb.h"
#include "tests/support/emulator_process.h"
#include "tests/support/prometheus_text.h"
#include "tests/support/qpoold_process.h"
#include "tests/support/test_util.h"
#include "tests/unit/http_get.h"

namespace qpool::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kCollection[] = "docs";
constexpr int kDim = 4;

// One qdrant-emulator process. Its gRPC port is chosen by the test (so that a restart can take
// the same one); its control port is read from its start-up line.
class Emulator {
 public:
  Emulator(std::string log_path, uint16_t grpc_port)
      : log_path_(std::move(log_path)), grpc_port_(grpc_port) {}

  void Start() {
    auto process = EmulatorProcess::Start(
        QDRANT_EMULATOR_PATH, {"--listen", absl::StrCat("127.0.0.1:", grpc_port_)}, log_path_);
    ASSERT_TRUE(process.ok()) << process.status();
    process_ = std::move(*process);
  }
  void Kill() { process_->Kill(); }

  void SetFaults(const std::string& json) {
    const absl::Status set = process_->SetFaults(json);
    ASSERT_TRUE(set.ok()) << set;
  }
  void ResetCounters() {
    const absl::Status reset = process_->ResetCounters();
    ASSERT_TRUE(reset.ok()) << reset;
  }
  qpool::emulator::Counters Counters() {
    const absl::StatusOr<std::string> json = process_->CountersJson();
    EXPECT_TRUE(json.ok()) << json.status();
    qpool::emulator::Counters counters;
    if (!json.ok()) return counters;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(*json, &counters).ok()) << *json;
    return counters;
  }
  uint32_t Calls(const std::string& method) {
    const auto counters = Counters();
    auto it = counters.calls().find(method);
    return it == counters.calls().end() ? 0 : it->second;
  }

  // A channel straight to the emulator, for setting up data.
  std::shared_ptr<grpc::Channel> Channel() const {
    return grpc::CreateChannel(absl::StrCat("127.0.0.1:", grpc_port_),
                               grpc::InsecureChannelCredentials());
  }
  uint16_t grpc_port() const { return grpc_port_; }

 private:
  std::string log_path_;
  uint16_t grpc_port_;
  std::unique_ptr<EmulatorProcess> process_;
};

// Creates the test collection on `channel` with a few points.
void CreateCollection(const std::shared_ptr<grpc::Channel>& channel) {
  auto collections = qdrant::Collections::NewStub(channel);
  grpc::ClientContext ctx;
  qdrant::CreateCollection create;
  create.set_collection_name(kCollection);
  create.mutable_vectors_config()->mutable_params()->set_size(kDim);
  create.mutable_vectors_config()->mutable_params()->set_distance(qdrant::Cosine);
  qdrant::CollectionOperationResponse created;
  ASSERT_TRUE(collections->Create(&ctx, create, &created).ok());
  auto points = qdrant::Points::NewStub(channel);
  grpc::ClientContext upsert_ctx;
  qdrant::UpsertPoints upsert;
  upsert.set_collection_name(kCollection);
  upsert.set_wait(true);
  for (int id = 1; id <= 10; ++id) {
    qdrant::PointStruct* point = upsert.add_points();
    point->mutable_id()->set_num(id);
    for (int d = 0; d < kDim; ++d) {
      point->mutable_vectors()->mutable_vector()->mutable_dense()->add_data(
          static_cast<float>(id + d));
    }
  }
  qdrant::PointsOperationResponse upserted;
  ASSERT_TRUE(points->Upsert(&upsert_ctx, upsert, &upserted).ok());
}

qdrant::SearchPoints SearchRequest() {
  qdrant::SearchPoints search;
  search.set_collection_name(kCollection);
  for (int d = 0; d < kDim; ++d) search.add_vector(1.0f);
  search.set_limit(3);
  return search;
}

// An upsert of `count` points with ids from `first_id`, `dim`-dimensional.
qdrant::UpsertPoints UpsertRequest(uint64_t first_id, int count, int dim = kDim) {
  qdrant::UpsertPoints upsert;
  upsert.set_collection_name(kCollection);
  for (int i = 0; i < count; ++i) {
    qdrant::PointStruct* point = upsert.add_points();
    point->mutable_id()->set_num(first_id + static_cast<uint64_t>(i));
    for (int d = 0; d < dim; ++d) {
      point->mutable_vectors()->mutable_vector()->mutable_dense()->add_data(
          static_cast<float>(i % 7 + d));
    }
  }
  return upsert;
}

class RetryE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string dir = ::testing::TempDir() + "/qpoold_retry_XXXXXX";
    ASSERT_NE(mkdtemp(dir.data()), nullptr) << std::strerror(errno);
    dir_ = dir;
  }

  void TearDown() override {
    if (HasFailure() && admin_port_ != 0) {
      last_scrape_ = HttpGet(admin_port_, "/metrics").body;
    }
    if (HasFailure()) {
      std::cerr << "qpoold's log:\n" << ReadFileOrEmpty(dir_ + "/qpoold.log") << "\n";
      std::cerr << "last scrape (retry families):\n" << RetryLines(last_scrape_) << "\n";
    }
    channel_.reset();  // qpoold's drain then has no app connection to wait for
    if (qpoold_ != nullptr) {
      (void)qpoold_->Signal(SIGTERM);
      if (!qpoold_->WaitForExit(absl::Seconds(10))) qpoold_->Kill();
    }
    emulators_.clear();                                    // SIGKILL
    if (!HasFailure()) std::filesystem::remove_all(dir_);  // kept for a look when a test failed
  }

  Emulator& StartEmulator() {
    const size_t n = emulators_.size();
    emulators_.push_back(
        std::make_unique<Emulator>(absl::StrCat(dir_, "/emulator", n, ".log"), PickFreePort()));
    emulators_.back()->Start();
    return *emulators_.back();
  }

  // Starts qpoold in front of every emulator started so far; `retry_yaml` goes under `retry:`.
  void StartQpoold(const std::string& retry_yaml, const std::string& upstream_yaml = "") {
    listen_port_ = PickFreePort();
    admin_port_ = PickFreePort();
    std::string nodes;
    for (const auto& emulator : emulators_) {
      absl::StrAppend(&nodes, nodes.empty() ? "" : ", ", "\"127.0.0.1:", emulator->grpc_port(),
                      "\"");
    }
    const std::string config_path = dir_ + "/qpool.yaml";
    std::ofstream(config_path) << "server:\n  listen: \"127.0.0.1:" << listen_port_
                               << "\"\nadmin:\n  listen: \"127.0.0.1:" << admin_port_
                               << "\"\nupstream:\n  nodes: [" << nodes << "]\n"
                               << upstream_yaml << "retry:\n"
                               << retry_yaml << "log:\n  level: warn\n";
    auto qpoold =
        StartQpooldReady({QPOOLD_PATH, "--config", config_path, "--rest-listen", "127.0.0.1:0"},
                         dir_ + "/qpoold.log", admin_port_);
    ASSERT_TRUE(qpoold.ok()) << qpoold.status();
    qpoold_ = std::move(*qpoold);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", listen_port_),
                                   grpc::InsecureChannelCredentials());
  }

  // The usual start of a one-node test: the test collection on `emulator`, qpoold in front of it
  // with `retry_yaml`, the emulator's counters zeroed, then `faults` switched on.
  void StartWithFaults(Emulator& emulator, const std::string& retry_yaml,
                       const std::string& faults) {
    ASSERT_NO_FATAL_FAILURE(CreateCollection(emulator.Channel()));
    ASSERT_NO_FATAL_FAILURE(StartQpoold(retry_yaml));
    ASSERT_NO_FATAL_FAILURE(emulator.ResetCounters());
    ASSERT_NO_FATAL_FAILURE(emulator.SetFaults(faults));
  }

  // The value of one sample of qpoold's /metrics ("name{labels}"), 0 when absent.
  double Metric(const std::string& sample) {
    last_scrape_ = HttpGet(admin_port_, "/metrics").body;
    return ParseSamples(last_scrape_)[sample];
  }

  static std::string RetryLines(const std::string& scrape) {
    std::istringstream lines(scrape);
    std::string line;
    std::string out;
    while (std::getline(lines, line)) {
      if (line.find("retr") != std::string::npos || line.find("replay") != std::string::npos) {
        out += line + "\n";
      }
    }
    return out;
  }

  // Runs `calls` calls of `call` spread over `threads` threads; returns how many failed, and
  // records the first failures' messages in failures_.
  int RunCalls(int calls, int threads, const std::function<grpc::Status(int)>& call) {
    std::atomic<int> next{0};
    std::atomic<int> failed{0};
    std::mutex mu;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&] {
        for (int i = next++; i < calls; i = next++) {
          grpc::Status status = call(i);
          if (status.ok()) continue;
          failed++;
          std::lock_guard<std::mutex> lock(mu);
          if (failures_.size() < 5) failures_.push_back(status.error_message());
        }
      });
    }
    for (auto& thread : pool) thread.join();
    return failed.load();
  }

  grpc::Status Search(absl::Duration deadline = absl::Seconds(5)) {
    auto stub = qdrant::Points::NewStub(channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
    qdrant::SearchResponse response;
    return stub->Search(&ctx, SearchRequest(), &response);
  }

  std::string dir_;
  uint16_t listen_port_ = 0;
  uint16_t admin_port_ = 0;
  std::vector<std::unique_ptr<Emulator>> emulators_;
  std::unique_ptr<Subprocess> qpoold_;
  std::shared_ptr<grpc::Channel> channel_;
  std::string last_scrape_;
  std::vector<std::string> failures_;
};

// 30% of Search calls fail with UNAVAILABLE. With the retry budget opened up (a success returns a
// whole token, enough retries may run at once) and max_attempts 7, at least 99.9% of 10,000 calls
// succeed, at what any retrying client must pay: attempts / calls near 1 / (1 - 0.3) = 1.43.
TEST_F(RetryE2eTest, ThirtyPercentUnavailableSearchesSucceedWithAnOpenBudget) {
  Emulator& emulator = StartEmulator();
  ASSERT_NO_FATAL_FAILURE(StartWithFaults(
      emulator, "  max_attempts: 7\n  budget_token_ratio: 1\n  min_retries_in_flight: 64\n",
      R"({"methods":{"Search":{"error_rate":0.3,"error_code":"UNAVAILABLE"}}})"));
  constexpr int kCalls = 10000;

  const int failed = RunCalls(kCalls, 8, [&](int) { return Search(); });

  EXPECT_LE(failed, kCalls / 1000) << (failures_.empty() ? "" : failures_.front());
  const double attempts = emulator.Calls("qdrant.Points/Search");
  std::cout << "30% UNAVAILABLE, open budget: " << kCalls - failed << " of " << kCalls
            << " succeeded, attempts / calls " << attempts / kCalls << "\n";
  EXPECT_GE(attempts / kCalls, 1.30);  // the faults did fire and were retried
  EXPECT_LE(attempts / kCalls, 1.50);
  EXPECT_GT(Metric(R"(qpool_retries_total{class="read",reason="unavailable"})"),
            0.3 * kCalls * 0.9);
}

// The same 30% failure with the default budget (gRPC's retryThrottling, 100 tokens, 0.1 back per
// success): a failure rate that high drains the bucket, so retries stop and amplification stays
// below 1.25; qpoold says so in qpool_retries_refused_total{reason="budget"}.
TEST_F(RetryE2eTest, ThirtyPercentUnavailableWithTheDefaultBudgetAmplifiesAtMostAQuarter) {
  Emulator& emulator = StartEmulator();
  ASSERT_NO_FATAL_FAILURE(StartWithFaults(
      emulator, "", R"({"methods":{"Search":{"error_rate":0.3,"error_code":"UNAVAILABLE"}}})"));
  constexpr int kCalls = 2000;

  const int failed = RunCalls(kCalls, 8, [&](int) { return Search(); });

  const double attempts = emulator.Calls("qdrant.Points/Search");
  std::cout << "30% UNAVAILABLE, default budget: " << kCalls - failed << " of " << kCalls
            << " succeeded, attempts / calls " << attempts / kCalls << "\n";
  EXPECT_LE(attempts / kCalls, 1.25);
  EXPECT_GT(attempts, kCalls);  // some retries ran while tokens lasted
  EXPECT_GT(failed, 0);
  EXPECT_GT(Metric(R"(qpool_retries_refused_total{reason="budget"})"), 0);
}

// Every Search fails: the budget caps amplification, and once it is spent a failed call is passed
// on at once instead of after backoffs.
TEST_F(RetryE2eTest, TotalFailureIsCappedByTheBudget) {
  Emulator& emulator = StartEmulator();
  ASSERT_NO_FATAL_FAILURE(StartWithFaults(
      emulator, "", R"({"methods":{"Search":{"error_rate":1,"error_code":"UNAVAILABLE"}}})"));
  constexpr int kCalls = 1000;

  const int failed = RunCalls(kCalls, 4, [&](int) { return Search(); });

  EXPECT_EQ(failed, kCalls);
  const double attempts = emulator.Calls("qdrant.Points/Search");
  std::cout << "100% UNAVAILABLE: attempts / calls " << attempts / kCalls << "\n";
  EXPECT_LE(attempts / kCalls, 1.25);
  // After the first ~50 failures no call waits for a backoff: refused by the budget.
  EXPECT_GE(Metric(R"(qpool_retries_refused_total{reason="budget"})"), kCalls - 100);
}

// Collection create is never repeated, whatever fails.
TEST_F(RetryE2eTest, CreateCollectionIsNeverAttemptedTwice) {
  Emulator& emulator = StartEmulator();
  ASSERT_NO_FATAL_FAILURE(StartQpoold(""));
  ASSERT_NO_FATAL_FAILURE(emulator.SetFaults(
      R"({"methods":{"Create":{"error_rate":0.3,"error_code":"UNAVAILABLE"}}})"));
  constexpr int kCalls = 60;
  auto collections = qdrant::Collections::NewStub(channel_);

  const int failed = RunCalls(kCalls, 2, [&](int i) {
    grpc::ClientContext ctx;
    qdrant::CreateCollection create;
    create.set_collection_name(absl::StrCat("c", i));
    create.mutable_vectors_config()->mutable_params()->set_size(kDim);
    create.mutable_vectors_config()->mutable_params()->set_distance(qdrant::Cosine);
    qdrant::CollectionOperationResponse response;
    return collections->Create(&ctx, create, &response);
  });

  EXPECT_EQ(emulator.Calls("qdrant.Collections/Create"), static_cast<uint32_t>(kCalls));
  EXPECT_EQ(static_cast<uint32_t>(failed), emulator.Counters().injected_errors());
  EXPECT_GT(failed, 0);
}

// Delete fails after Qdrant applied it. By ids, a repeat gives the same end state: retried up to
// max_attempts. By filter, a repeat may delete other points: never retried. The same when the
// request is gzip-compressed (qpoold inflates it to read the selector, and forwards the original).
class DeleteRetryTest : public RetryE2eTest, public ::testing::WithParamInterface<bool> {};

TEST_P(DeleteRetryTest, ByIdsIsRetriedByFilterIsNot) {
  const bool gzip = GetParam();
  Emulator& emulator = StartEmulator();
  ASSERT_NO_FATAL_FAILURE(StartWithFaults(
      emulator, "",
      R"({"methods":{"qdrant.Points/Delete":{"error_rate":1,"error_code":"UNAVAILABLE","error_phase":"after"}}})"));
  auto points = qdrant::Points::NewStub(channel_);
  auto remove = [&](const qdrant::DeletePoints& request) {
    grpc::ClientContext ctx;
    if (gzip) ctx.set_compression_algorithm(GRPC_COMPRESS_GZIP);
    qdrant::PointsOperationResponse response;
    return points->Delete(&ctx, request, &response);
  };

  qdrant::DeletePoints by_filter;
  by_filter.set_collection_name(kCollection);
  qdrant::Condition* condition = by_filter.mutable_points()->mutable_filter()->add_must();
  condition->mutable_has_id()->add_has_id()->set_num(1);
  grpc::Status filter_status = remove(by_filter);

  EXPECT_EQ(filter_status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(emulator.Calls("qdrant.Points/Delete"), 1u);

  qdrant::DeletePoints by_ids;
  by_ids.set_collection_name(kCollection);
  by_ids.mutable_points()->mutable_points()->add_ids()->set_num(2);
  grpc::Status ids_status = remove(by_ids);

  EXPECT_EQ(ids_status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(emulator.Calls("qdrant.Points/Delete"), 1u + 3u);  // max_attempts 3
  EXPECT_EQ(Metric(R"(qpool_retries_total{class="id_scoped_write",reason="unavailable"})"), 2);
}

INSTANTIATE_TEST_SUITE_P(Encodings, DeleteRetryTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Gzip" : "Identity";
                         });

// The replay buffer holds a 3 MiB upsert (under the 4 MiB per-call default): it is retried. A
// 5 MiB one is forwarded without a copy, never retried, and counted.
TEST_F(RetryE2eTest, ThreeMebibyteUpsertIsRetriedFiveIsNotAndCounted) {
  Emulator& emulator = StartEmulator();
  ASSERT_NO_FATAL_FAILURE(StartWithFaults(
      emulator, "", R"({"methods":{"Upsert":{"error_rate":1,"error_code":"UNAVAILABLE"}}})"));
  auto points = qdrant::Points::NewStub(channel_);
  auto upsert = [&](size_t bytes) {
    // A point of 1024 floats is ~4.1 KB on the wire.
    const qdrant::UpsertPoints request =
        UpsertRequest(1000, static_cast<int>(bytes / (1024 * 4 + 24)), 1024);
    EXPECT_GT(request.ByteSizeLong(), bytes * 9 / 10);
    EXPECT_LT(request.ByteSizeLong(), bytes);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    qdrant::PointsOperationResponse response;
    return points->Upsert(&ctx, request, &response);
  };

  EXPECT_EQ(upsert(3 << 20).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(emulator.Calls("qdrant.Points/Upsert"), 3u);
  EXPECT_EQ(Metric(R"(qpool_replay_buffer_refusals_total{limit="per_call"})"), 0);

  EXPECT_EQ(upsert((5 << 20) + (1 << 19)).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(emulator.Calls("qdrant.Points/Upsert"), 3u + 1u);
  EXPECT_EQ(Metric(R"(qpool_replay_buffer_refusals_total{limit="per_call"})"), 1);
  EXPECT_EQ(Metric("qpool_replay_buffer_bytes"), 0);  // copies released
}

// Two nodes; one is SIGKILLed while reads and id-scoped writes run with 5 s deadlines: calls in
// flight on it are retried on the other, new calls go to the other, and none fails.
// With 8 callers about 4 calls are in flight on the node when it dies, and all 4 need a retry at
// once; the default storm control (retries in flight at most max(3, 20% of calls in flight)) has
// places for 3, and the 4th waits for one within its deadline instead of failing (Envoy's retry
// budget would refuse it). qpoold runs at its defaults; the test checks that no retry was refused.
TEST_F(RetryE2eTest, NodeKilledUnderLoadFailsNoReadOrIdScopedWrite) {
  Emulator& a = StartEmulator();
  Emulator& b = StartEmulator();
  ASSERT_NO_FATAL_FAILURE(CreateCollection(a.Channel()));
  ASSERT_NO_FATAL_FAILURE(CreateCollection(b.Channel()));
  // Some latency, so that calls are in flight on the node when it dies.
  ASSERT_NO_FATAL_FAILURE(b.SetFaults(R"({"methods":{"*":{"latency_ms":5}}})"));
  ASSERT_NO_FATAL_FAILURE(StartQpoold(""));
  std::atomic<bool> killed{false};
  std::thread killer([&] {
    // Kill once the node has served a few hundred calls: load is flowing through both nodes.
    WaitFor([&] { return b.Calls("qdrant.Points/Search") > 100; }, absl::Seconds(20));
    b.Kill();
    killed = true;
  });
  auto points = qdrant::Points::NewStub(channel_);
  constexpr int kCalls = 4000;

  const int failed = RunCalls(kCalls, 8, [&](int i) {
    if (i % 4 != 3) return Search();
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    qdrant::PointsOperationResponse response;
    return points->Upsert(&ctx, UpsertRequest(100 + static_cast<uint64_t>(i), 2), &response);
  });
  killer.join();

  EXPECT_TRUE(killed);
  EXPECT_EQ(failed, 0) << (failures_.empty() ? "" : failures_.front());
  EXPECT_GT(a.Calls("qdrant.Points/Search"), 1000u);
  EXPECT_EQ(Metric(R"(qpool_retries_refused_total{reason="in_flight"})"), 0);
  // Calls were in flight on the node when it died, and were retried.
  EXPECT_GT(Metric(R"(qpool_retries_total{class="read",reason="unavailable"})") +
                Metric(R"(qpool_retries_total{class="id_scoped_write",reason="unavailable"})"),
            0);
}

// RESOURCE_EXHAUSTED with `retry-after: 1` (Qdrant's rate limiter): the retry waits the second
// Qdrant asked for, and no retry starts that could not finish before the caller's deadline.
TEST_F(RetryE2eTest, ResourceExhaustedWaitsForRetryAfterWithinTheDeadline) {
  Emulator& emulator = StartEmulator();
  ASSERT_NO_FATAL_FAILURE(StartWithFaults(
      emulator, "",
      R"({"methods":{"Search":{"error_rate":1,"error_code":"RESOURCE_EXHAUSTED","retry_after_s":1}}})"));
  const absl::Time start = absl::Now();

  grpc::Status status = Search(/*deadline=*/absl::Milliseconds(1500));

  // Attempt 1 at 0 s; attempt 2 after the 1 s wait; a third would start at 2 s, past 1.5 s.
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(emulator.Calls("qdrant.Points/Search"), 2u);
  EXPECT_GE(took, absl::Seconds(1));
  EXPECT_LT(took, absl::Milliseconds(1500));
  EXPECT_EQ(Metric(R"(qpool_retries_total{class="read",reason="resource_exhausted"})"), 1);
  EXPECT_EQ(Metric(R"(qpool_retries_refused_total{reason="deadline"})"), 1);
}

// retry.per_try_timeout: while the node parks every call, each read attempt is cancelled after
// 200 ms and tried again; once the node answers again, the call succeeds within its deadline.
TEST_F(RetryE2eTest, PerTryTimeoutRetriesAReadThatGetsNoAnswer) {
  Emulator& emulator = StartEmulator();
  ASSERT_NO_FATAL_FAILURE(StartWithFaults(emulator, "  per_try_timeout: 200ms\n  max_attempts: 5\n",
                                          R"({"methods":{"Search":{"hang":true}}})"));
  std::thread unhang([&] {
    // Once two attempts have been parked (the first one timed out), the node answers again.
    WaitFor([&] { return emulator.Calls("qdrant.Points/Search") >= 2; }, absl::Seconds(5));
    emulator.SetFaults("{}");
  });

  grpc::Status status = Search(/*deadline=*/absl::Seconds(5));
  unhang.join();

  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_GE(Metric(R"(qpool_retries_total{class="read",reason="per_try_timeout"})"), 1);
}

// Hedged reads: node B answers Search after 2 s, node A at once. With hedge_delay 50ms a Search
// whose attempt went to B gets a second attempt on A, which answers first; B's is cancelled. So
// no call takes anywhere near B's 2 s, while some attempts did go to B.
TEST_F(RetryE2eTest, HedgedReadsAnswerFromTheFastNode) {
  Emulator& a = StartEmulator();
  Emulator& b = StartEmulator();
  ASSERT_NO_FATAL_FAILURE(CreateCollection(a.Channel()));
  ASSERT_NO_FATAL_FAILURE(CreateCollection(b.Channel()));
  ASSERT_NO_FATAL_FAILURE(b.SetFaults(R"({"methods":{"Search":{"latency_ms":2000}}})"));
  ASSERT_NO_FATAL_FAILURE(StartQpoold("  hedge_delay: 50ms\n"));
  constexpr int kCalls = 40;
  std::atomic<int64_t> slowest_ms{0};

  const int failed = RunCalls(kCalls, 4, [&](int) {
    const absl::Time start = absl::Now();
    grpc::Status status = Search();
    const int64_t took = absl::ToInt64Milliseconds(absl::Now() - start);
    int64_t seen = slowest_ms.load();
    while (took > seen && !slowest_ms.compare_exchange_weak(seen, took)) {
    }
    return status;
  });

  EXPECT_EQ(failed, 0) << (failures_.empty() ? "" : failures_.front());
  EXPECT_GT(b.Calls("qdrant.Points/Search"), 0u);  // some attempts did go to the slow node
  EXPECT_LT(slowest_ms.load(), 1500);              // and none of their calls waited for it
  const double hedges = Metric("qpool_hedges_total");
  EXPECT_GE(hedges, b.Calls("qdrant.Points/Search"));
  EXPECT_GT(Metric("qpool_hedges_won_total"), 0);
  EXPECT_EQ(a.Calls("qdrant.Points/Search") + b.Calls("qdrant.Points/Search"), kCalls + hedges);
}

// The only node is down for 2 s: reads issued meanwhile, with 5 s deadlines, wait for it (the
// request never left qpoold) and succeed once it is back.
TEST_F(RetryE2eTest, ReadsDuringATwoSecondOutageSucceedAfterTheNodeReturns) {
  Emulator& emulator = StartEmulator();
  ASSERT_NO_FATAL_FAILURE(StartQpoold("", "  connect_backoff_max: 300ms\n"));
  emulator.Kill();
  const absl::Time down_at = absl::Now();
  std::thread restarter([&] {
    absl::SleepFor(absl::Seconds(2));  // the outage itself, not a wait for a condition
    emulator.Start();
  });
  auto collections = qdrant::Collections::NewStub(channel_);

  // Calls start during the outage, spread over its first second.
  const int failed = RunCalls(40, 8, [&](int i) {
    absl::SleepFor(absl::Milliseconds(25 * (i % 8)));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    qdrant::ListCollectionsResponse response;
    return collections->List(&ctx, qdrant::ListCollectionsRequest(), &response);
  });
  restarter.join();

  EXPECT_EQ(failed, 0) << (failures_.empty() ? "" : failures_.front());
  EXPECT_GE(absl::Now() - down_at, absl::Seconds(2));
  EXPECT_GT(Metric(R"(qpool_retries_total{class="read",reason="transparent"})"), 0);
}

}  // namespace
}  // namespace qpool::testing
