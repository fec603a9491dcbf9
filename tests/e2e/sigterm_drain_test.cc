// The built qpoold binary, SIGTERM'd while calls are in flight: every in-flight call finishes,
// qpoold exits 0, and calls racing the shutdown either succeed or are refused with UNAVAILABLE
// before they reach the upstream. QPOOLD_PATH is the binary's path; ports are picked at run time.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "testing/test_service.grpc.pb.h"
#include "tests/support/echo_client.h"
#include "tests/support/test_upstream.h"
#include "tests/support/test_util.h"

namespace qpool::testing {
namespace {

constexpr int kSlowCalls = 20;
constexpr int kSlowCallSleepMs = 500;
constexpr int kRacerThreads = 4;

class SigtermDrainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string dir = ::testing::TempDir() + "/qpoold_sigterm_XXXXXX";
    ASSERT_NE(mkdtemp(dir.data()), nullptr) << std::strerror(errno);
    dir_ = dir;
    auto upstream = TestUpstream::Start();
    ASSERT_TRUE(upstream.ok()) << upstream.status();
    upstream_ = std::move(*upstream);
    listen_port_ = PickFreePort();
    ASSERT_NE(listen_port_, 0);

    const std::string config_path = dir_ + "/qpool.yaml";
    std::ofstream(config_path) << "server:\n"
                               << "  listen: \"127.0.0.1:" << listen_port_ << "\"\n"
                               << "  drain_timeout: 10s\n"
                               << "upstream:\n"
                               << "  nodes: [\"" << upstream_->address() << "\"]\n"
                               << "  max_connections: 2\n"
                               << "log:\n"
                               << "  level: debug\n";
    log_path_ = dir_ + "/qpoold.log";
    auto qpoold = Subprocess::Spawn({QPOOLD_PATH, "--config", config_path, "--rest-listen",
                                     "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"},
                                    log_path_);
    ASSERT_TRUE(qpoold.ok()) << qpoold.status();
    qpoold_ = std::move(*qpoold);
    ASSERT_TRUE(WaitFor([&] { return CanConnect(listen_port_) || Exited(); }, absl::Seconds(10)));
    ASSERT_FALSE(Exited()) << "qpoold exited at start-up:\n" << ReadFileOrEmpty(log_path_);
  }

  void TearDown() override {
    if (HasFailure()) std::cerr << "qpoold's log:\n" << ReadFileOrEmpty(log_path_) << "\n";
    qpoold_.reset();  // SIGKILLs it if it still runs
    if (upstream_ != nullptr) upstream_->Shutdown(absl::ZeroDuration());
  }

  bool Exited() { return qpoold_->WaitForExit(absl::ZeroDuration()).has_value(); }

  std::string dir_;
  std::string log_path_;
  uint16_t listen_port_ = 0;
  std::unique_ptr<TestUpstream> upstream_;
  std::unique_ptr<Subprocess> qpoold_;
};

TEST_F(SigtermDrainTest, SigtermDuringLoadFailsNoCallAndExitsZero) {
  struct SlowCall {
    EchoRequest request;
    EchoResponse response;
    grpc::ClientContext ctx;
    grpc::Status status;
  };
  std::vector<std::unique_ptr<SlowCall>> slow_calls;
  absl::Mutex mu;
  int slow_done = 0;
  std::atomic<bool> stop_racers{false};
  absl::Mutex racer_mu;
  std::map<grpc::StatusCode, int> racer_codes;
  std::string racer_unexpected;
  std::vector<std::thread> racers;
  // Whatever way the test ends, no racer or slow call outlives the state it uses.
  auto stop_clients = absl::MakeCleanup([&] {
    stop_racers = true;
    for (auto& racer : racers) racer.join();
    for (auto& call : slow_calls) call->ctx.TryCancel();
    absl::MutexLock lock(&mu);
    auto all_done = [&] { return slow_done == static_cast<int>(slow_calls.size()); };
    mu.Await(absl::Condition(&all_done));
  });

  // Fast calls racing the shutdown, each racer on its own app connection, until qpoold is gone.
  for (int r = 0; r < kRacerThreads; ++r) {
    racers.emplace_back([&, r] {
      auto stub = TestService::NewStub(OwnChannel(listen_port_));
      const absl::Time give_up = absl::Now() + absl::Seconds(20);
      for (int i = 0; !stop_racers.load() && absl::Now() < give_up; ++i) {
        EchoRequest request;
        request.set_payload(absl::StrCat("racer ", r, " call ", i));
        EchoResponse response;
        grpc::ClientContext ctx;
        ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
        grpc::Status status = stub->Unary(&ctx, request, &response);
        absl::MutexLock lock(&racer_mu);
        ++racer_codes[status.error_code()];
        if (status.ok() ? response.payload() != request.payload()
                        : status.error_code() != grpc::StatusCode::UNAVAILABLE) {
          if (racer_unexpected.empty()) {
            racer_unexpected =
                absl::StrCat("code ", status.error_code(), ": ", status.error_message());
          }
        }
        if (!status.ok()) absl::SleepFor(absl::Milliseconds(2));  // bounds the refused calls
      }
    });
  }
  ASSERT_TRUE(WaitFor(
      [&] {
        absl::MutexLock lock(&racer_mu);
        return racer_codes[grpc::StatusCode::OK] >= 10 * kRacerThreads;
      },
      absl::Seconds(10)))
      << "the racing calls do not get through before SIGTERM";

  // Slow calls, spread over a few app connections, all in progress at the upstream.
  std::vector<std::unique_ptr<TestService::Stub>> slow_stubs;
  for (int i = 0; i < 4; ++i) slow_stubs.push_back(TestService::NewStub(OwnChannel(listen_port_)));
  for (int i = 0; i < kSlowCalls; ++i) {
    auto call = std::make_unique<SlowCall>();
    call->request.set_sleep_ms(kSlowCallSleepMs);
    call->request.set_payload(absl::StrCat("slow ", i));
    call->ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    SlowCall* raw = call.get();
    slow_calls.push_back(std::move(call));
    slow_stubs[i % slow_stubs.size()]->async()->Unary(&raw->ctx, &raw->request, &raw->response,
                                                      [raw, &mu, &slow_done](grpc::Status status) {
                                                        absl::MutexLock lock(&mu);
                                                        raw->status = std::move(status);
                                                        ++slow_done;
                                                      });
  }
  ASSERT_TRUE(WaitFor(
      [&] {
        return upstream_->stats().CallsStarted() - upstream_->stats().CallsFinished() >= kSlowCalls;
      },
      absl::Seconds(5)))
      << upstream_->stats().InProgress() << " calls in progress, want " << kSlowCalls
      << " slow ones";
  {
    absl::MutexLock lock(&mu);
    ASSERT_EQ(slow_done, 0) << "slow calls ended before SIGTERM";
  }

  ASSERT_TRUE(qpoold_->Signal(SIGTERM).ok());
  const absl::Time signalled = absl::Now();
  std::optional<int> exit_status = qpoold_->WaitForExit(absl::Seconds(15));
  const absl::Duration exit_after = absl::Now() - signalled;
  stop_racers = true;
  for (auto& racer : racers) racer.join();
  racers.clear();

  ASSERT_TRUE(exit_status.has_value()) << "qpoold still runs 15s after SIGTERM";
  EXPECT_TRUE(WIFEXITED(*exit_status) && WEXITSTATUS(*exit_status) == 0)
      << "qpoold's wait status " << *exit_status;
  EXPECT_LE(exit_after, absl::Seconds(12));
  {
    absl::MutexLock lock(&mu);
    auto all_done = [&] { return slow_done == kSlowCalls; };
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all_done), absl::Seconds(10)));
  }
  for (int i = 0; i < kSlowCalls; ++i) {
    EXPECT_TRUE(slow_calls[i]->status.ok())
        << "in-flight call " << i << ": code " << slow_calls[i]->status.error_code() << ": "
        << slow_calls[i]->status.error_message();
    EXPECT_EQ(slow_calls[i]->response.payload(), slow_calls[i]->request.payload());
  }
  absl::MutexLock lock(&racer_mu);
  std::string codes;
  for (const auto& [code, count] : racer_codes) absl::StrAppend(&codes, " ", code, "x", count);
  std::cout << "qpoold exited " << exit_after
            << " after SIGTERM; racing calls by status code:" << codes << "\n";
  EXPECT_TRUE(racer_unexpected.empty())
      << "a racing call: " << racer_unexpected << "; codes:" << codes;
  // Nothing reached the upstream half-done: every call it started it finished, none cancelled,
  // and each one was answered OK to its client.
  const UpstreamStats& stats = upstream_->stats();
  EXPECT_TRUE(WaitFor([&] { return stats.InProgress() == 0; }, absl::Seconds(5)));
  EXPECT_EQ(stats.Cancellations(), 0);
  EXPECT_EQ(stats.CallsStarted(), kSlowCalls + racer_codes[grpc::StatusCode::OK])
      << "calls reached the upstream but were not answered OK; codes:" << codes;
}

}  // namespace
}  // namespace qpool::testing
