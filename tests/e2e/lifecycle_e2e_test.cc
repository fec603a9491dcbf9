// The built qpoold's life cycle as an operator drives it (issue 15): what /readyz means, the drain
// delay after SIGTERM, POST /quitquitquit, and config reload on SIGHUP. qpoold runs in front of
// the in-process test upstreams (tests/support: gRPC, and REST where the REST front door is on);
// its config is written at run time with free loopback ports. Every load is bounded in calls and
// time.
#include <arpa/inet.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "testing/test_service.grpc.pb.h"
#include "tests/support/echo_client.h"
#include "tests/support/prometheus_text.h"
#include "tests/support/rest_test_upstream.h"
#include "tests/support/test_upstream.h"
#include "tests/support/test_util.h"
#include "tests/unit/http_get.h"

namespace qpool::testing {
namespace {

// A unary call to `method` with an empty message, whatever the upstream serves (the test upstream
// answers a path it does not serve with UNIMPLEMENTED).
grpc::Status CallPath(const std::shared_ptr<grpc::Channel>& channel, const std::string& method) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue queue;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  grpc::ByteBuffer request;
  grpc::ByteBuffer response;
  grpc::Status status;
  auto call = stub.PrepareUnaryCall(&ctx, method, request, &queue);
  call->StartCall();
  call->Finish(&response, &status, nullptr);
  void* tag = nullptr;
  bool ok = false;
  queue.Next(&tag, &ok);
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  return status;
}

// Writes bytes that are not HTTP/2 to 127.0.0.1:`port`, so qpoold closes that connection with a
// protocol error (logged at debug level) and counts it.
void SendGarbage(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0)
      << std::strerror(errno);
  const std::string garbage = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  EXPECT_EQ(write(fd, garbage.data(), garbage.size()), static_cast<ssize_t>(garbage.size()));
  char buffer[256];
  // qpoold answers (a GOAWAY) and closes; read until it does, within the socket's default wait.
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  while (read(fd, buffer, sizeof(buffer)) > 0) {
  }
  close(fd);
}

// REST requests from `threads` app connections (keep-alive HTTP/1.1, one connection per thread,
// reopened only after a failure) until Stop() or `max_requests` each; counts what failed: no
// answer, a status other than 200, or an answer that is not the request's own (the REST test
// upstream echoes the target in x-seen-target).
class BoundedRestLoad : public ThreadedLoad {
 public:
  BoundedRestLoad(uint16_t port, int threads, int max_requests)
      : ThreadedLoad(threads, max_requests, [port](int thread) -> Caller {
          auto connection = std::make_shared<Connection>();
          return [connection, port, thread](int call) {
            return connection->Get(port,
                                   absl::StrCat("/collections/load/points/", thread, "-", call));
          };
        }) {}

 private:
  // One thread's keep-alive connection, opened again after a failure or a close.
  struct Connection {
    // "" when `target` was answered 200 with its own x-seen-target, else what went wrong.
    std::string Get(uint16_t port, const std::string& target) {
      namespace beast = boost::beast;
      namespace http = beast::http;
      std::string failure;
      beast::error_code ec;
      if (stream == nullptr) {
        stream = std::make_unique<beast::tcp_stream>(io);
        buffer.clear();
        stream->expires_after(std::chrono::seconds(5));
        stream->connect(
            boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port), ec);
        if (ec) failure = "connect: " + ec.message();
      }
      if (failure.empty()) {
        http::request<http::empty_body> request(http::verb::get, target, 11);
        request.set(http::field::host, "qpoold");
        stream->expires_after(std::chrono::seconds(5));
        http::write(*stream, request, ec);
        http::response<http::string_body> response;
        if (!ec) http::read(*stream, buffer, response, ec);
        if (ec) {
          failure = "no answer: " + ec.message();
        } else if (response.result_int() != 200) {
          failure = absl::StrCat("HTTP ", response.result_int(), ": ", response.body());
        } else if (response["x-seen-target"] != target) {
          failure = absl::StrCat("an answer for ", std::string(response["x-seen-target"]));
        } else if (!response.keep_alive()) {
          stream.reset();  // qpoold closes the connection: a new one for the next request
        }
      }
      if (!failure.empty()) stream.reset();
      return failure;
    }

    boost::asio::io_context io;
    std::unique_ptr<boost::beast::tcp_stream> stream;
    boost::beast::flat_buffer buffer;
  };
};

// What a debug-level line looks like in the text format ("<time> debug qpoold <message>").
constexpr char kDebugLine[] = " debug qpoold ";

class LifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string dir = ::testing::TempDir() + "/qpoold_lifecycle_XXXXXX";
    ASSERT_NE(mkdtemp(dir.data()), nullptr) << std::strerror(errno);
    dir_ = dir;
    config_path_ = dir_ + "/qpool.yaml";
    log_path_ = dir_ + "/qpoold.log";
    listen_port_ = PickFreePort();
    admin_port_ = PickFreePort();
    ASSERT_NE(listen_port_, 0);
    ASSERT_NE(admin_port_, 0);
  }

  void TearDown() override {
    if (HasFailure()) std::cerr << "qpoold's log:\n" << ReadFileOrEmpty(log_path_) << "\n";
    if (qpoold_ != nullptr) {
      // Stopped, not killed, so that a coverage build writes qpoold's counters (scripts/coverage).
      (void)qpoold_->Signal(SIGTERM);
      if (!qpoold_->WaitForExit(absl::Seconds(10))) qpoold_->Kill();
      qpoold_.reset();
    }
    if (upstream_ != nullptr) upstream_->Shutdown(absl::ZeroDuration());
  }

  void StartUpstream() {
    auto upstream = TestUpstream::Start();
    ASSERT_TRUE(upstream.ok()) << upstream.status();
    upstream_ = std::move(*upstream);
    node_ = upstream_->address();
  }

  // The config file: the listeners, the nodes, and `extra` YAML sections. REST is off unless
  // rest_port_ is set (no fixed port 6333 in tests); REST-only with rest_only_.
  std::string ConfigText(const std::string& extra, uint16_t listen_port = 0) const {
    const std::string nodes =
        rest_only_
            ? ""
            : absl::StrCat("\"", nodes_.empty() ? node_ : absl::StrJoin(nodes_, "\", \""), "\"");
    const std::string rest_nodes =
        rest_nodes_.empty()
            ? ""
            : absl::StrCat("  rest_nodes: [\"", absl::StrJoin(rest_nodes_, "\", \""), "\"]\n");
    const std::string rest_listen =
        rest_port_ == 0 ? "\"\"" : absl::StrCat("\"127.0.0.1:", rest_port_, "\"");
    return absl::StrCat("server:\n  listen: \"127.0.0.1:", listen_port ? listen_port : listen_port_,
                        "\"\n  drain_timeout: 10s\n", extra_server_,
                        "admin:\n  listen: \"127.0.0.1:", admin_port_, "\"\n", extra_admin_,
                        "rest:\n  listen: ", rest_listen, "\n", "upstream:\n  nodes: [", nodes,
                        "]\n", rest_nodes, "  max_connections: ", max_connections_,
                        "\n  connect_timeout: 500ms\n"
                        "  connect_backoff_max: 500ms\n",
                        extra_upstream_, extra);
  }

  // Replaces the file whole (a new file renamed over it, as a Kubernetes ConfigMap update does),
  // so config.watch_interval's poll never reads a half-written file.
  void WriteConfig(const std::string& text) {
    const std::string next = config_path_ + ".next";
    {
      std::ofstream out(next, std::ios::trunc);
      out << text;
    }
    ASSERT_EQ(std::rename(next.c_str(), config_path_.c_str()), 0) << std::strerror(errno);
  }

  void StartQpoold(const std::string& extra = "log:\n  level: info\n") {
    WriteConfig(ConfigText(extra));
    auto qpoold = Subprocess::Spawn({QPOOLD_PATH, "--config", config_path_}, log_path_);
    ASSERT_TRUE(qpoold.ok()) << qpoold.status();
    qpoold_ = std::move(*qpoold);
    const uint16_t data_port = rest_only_ ? rest_port_ : listen_port_;
    ASSERT_TRUE(WaitFor(
        [&] { return Exited() || (CanConnect(data_port) && Get("/startupz").status == 200); },
        absl::Seconds(15)));
    ASSERT_FALSE(Exited()) << "qpoold exited at start-up";
  }

  bool Exited() { return qpoold_->WaitForExit(absl::ZeroDuration()).has_value(); }
  HttpReply Get(const std::string& path) {
    return HttpGet(admin_port_, path, std::chrono::seconds(2));
  }
  Samples Scrape() { return ParseSamples(Get("/metrics").body); }
  double Reloads(const std::string& result) {
    return Scrape()[absl::StrCat("qpool_config_reloads_total{result=\"", result, "\"}")];
  }

  std::string dir_;
  std::string config_path_;
  std::string log_path_;
  std::string node_;
  std::string extra_server_;
  std::string extra_admin_;
  std::string extra_upstream_;           // more upstream: keys
  std::vector<std::string> nodes_;       // upstream.nodes; empty: node_ alone
  std::vector<std::string> rest_nodes_;  // upstream.rest_nodes; empty: the default
  uint16_t rest_port_ = 0;               // rest.listen's port; 0: REST off
  bool rest_only_ = false;               // upstream.nodes empty (rest_nodes_ and rest_port_ set)
  int max_connections_ = 2;
  uint16_t listen_port_ = 0;
  uint16_t admin_port_ = 0;
  std::unique_ptr<TestUpstream> upstream_;
  std::unique_ptr<Subprocess> qpoold_;
};

// --- readiness --------------------------------------------------------------------------------

TEST_F(LifecycleTest, ReadyzStays200WhileTheOnlyNodeIsDownByDefault) {
  const uint16_t dead_port = PickFreePort();  // nothing listens there
  node_ = absl::StrCat("127.0.0.1:", dead_port);
  ASSERT_NO_FATAL_FAILURE(StartQpoold());
  // The node is known unusable: its connects fail (min_connections opens one at start).
  const std::string usable = absl::StrCat("qpool_upstream_node_usable{node=\"", node_, "\"}");
  ASSERT_TRUE(WaitFor(
      [&] {
        const Samples samples = Scrape();
        auto it = samples.find(usable);
        return it != samples.end() && it->second == 0;
      },
      absl::Seconds(10), absl::Milliseconds(50)));
  auto stub = TestService::NewStub(OwnChannel(listen_port_));
  EXPECT_EQ(Echo(*stub, "x").error_code(), grpc::StatusCode::UNAVAILABLE);
  const HttpReply readyz = Get("/readyz");
  EXPECT_EQ(readyz.status, 200) << readyz.body;
  EXPECT_EQ(Scrape()["qpool_ready"], 1);
}

TEST_F(LifecycleTest, ReadyzIs503WhileTheOnlyNodeIsDownWhenItIncludesUpstream) {
  const uint16_t dead_port = PickFreePort();
  node_ = absl::StrCat("127.0.0.1:", dead_port);
  extra_admin_ = "  readiness_includes_upstream: true\n";
  ASSERT_NO_FATAL_FAILURE(StartQpoold());
  ASSERT_TRUE(WaitFor([&] { return Get("/readyz").status == 503; }, absl::Seconds(10),
                      absl::Milliseconds(50)));
  EXPECT_NE(Get("/readyz").body.find("no usable upstream node"), std::string::npos);
  EXPECT_EQ(Get("/livez").status, 200);
}

// --- drain delay and /quitquitquit ------------------------------------------------------------

TEST_F(LifecycleTest, CallsStartedDuringTheDrainDelaySucceedAndReadyzIs503) {
  ASSERT_NO_FATAL_FAILURE(StartUpstream());
  extra_server_ = "  drain_delay: 2s\n";
  ASSERT_NO_FATAL_FAILURE(StartQpoold());
  EXPECT_EQ(Get("/readyz").status, 200);
  auto stub = TestService::NewStub(OwnChannel(listen_port_));
  ASSERT_TRUE(Echo(*stub, "before").ok());

  ASSERT_TRUE(qpoold_->Signal(SIGTERM).ok());
  const absl::Time signalled = absl::Now();
  ASSERT_TRUE(WaitFor([&] { return Get("/readyz").status == 503; }, absl::Seconds(1),
                      absl::Milliseconds(10)))
      << "/readyz did not turn 503 at SIGTERM";
  EXPECT_NE(Get("/readyz").body.find("draining"), std::string::npos);
  // During the delay: calls on the open connection and on new connections go through.
  int calls = 0;
  while (absl::Now() - signalled < absl::Milliseconds(1500) && calls < 200) {
    ASSERT_TRUE(Echo(*stub, absl::StrCat("during ", calls)).ok()) << "call " << calls;
    auto fresh = TestService::NewStub(OwnChannel(listen_port_));
    grpc::Status status = Echo(*fresh, absl::StrCat("fresh ", calls));
    ASSERT_TRUE(status.ok()) << "call on a new connection " << calls << ": "
                             << status.error_message();
    ++calls;
  }
  EXPECT_GT(calls, 0);
  EXPECT_FALSE(Exited());
  std::optional<int> status = qpoold_->WaitForExit(absl::Seconds(15));
  const absl::Duration exit_after = absl::Now() - signalled;
  ASSERT_TRUE(status.has_value()) << "qpoold still runs 15s after SIGTERM";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status;
  EXPECT_GE(exit_after, absl::Seconds(2)) << "qpoold exited before server.drain_delay was over";
  std::cout << calls << " x 2 calls made during the 2s drain delay; exited " << exit_after
            << " after SIGTERM\n";
}

TEST_F(LifecycleTest, QuitQuitQuitDrainsInFlightCallsAndExitsZero) {
  ASSERT_NO_FATAL_FAILURE(StartUpstream());
  ASSERT_NO_FATAL_FAILURE(StartQpoold());
  EXPECT_EQ(Get("/quitquitquit").status, 405);  // GET changes nothing
  EXPECT_EQ(HttpRequest(admin_port_, "PUT", "/quitquitquit").status, 405);
  EXPECT_FALSE(Exited());
  EXPECT_EQ(Get("/readyz").status, 200);

  auto stub = TestService::NewStub(OwnChannel(listen_port_));
  grpc::Status slow_status;
  std::thread slow([&] { slow_status = Echo(*stub, "slow", /*sleep_ms=*/800); });
  ASSERT_TRUE(WaitFor([&] { return upstream_->stats().InProgress() == 1; }, absl::Seconds(5)));
  const HttpReply quit = HttpRequest(admin_port_, "POST", "/quitquitquit");
  EXPECT_EQ(quit.status, 200) << quit.body;
  std::optional<int> status = qpoold_->WaitForExit(absl::Seconds(15));
  slow.join();
  ASSERT_TRUE(status.has_value()) << "qpoold still runs 15s after /quitquitquit";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status;
  EXPECT_TRUE(slow_status.ok()) << slow_status.error_code() << ": " << slow_status.error_message();
  EXPECT_NE(ReadFileOrEmpty(log_path_).find("POST /quitquitquit"), std::string::npos);
}

// --- reload (SIGHUP) --------------------------------------------------------------------------

TEST_F(LifecycleTest, SighupAppliesANewLogLevelWhileCallsRun) {
  ASSERT_NO_FATAL_FAILURE(StartUpstream());
  ASSERT_NO_FATAL_FAILURE(StartQpoold("log:\n  level: info\n"));
  EchoLoad load(listen_port_, 4, 5000);
  // At info, a protocol error is counted but not logged.
  ASSERT_NO_FATAL_FAILURE(SendGarbage(listen_port_));
  ASSERT_TRUE(WaitFor([&] { return Scrape()["qpool_downstream_protocol_errors_total"] == 1; },
                      absl::Seconds(5), absl::Milliseconds(20)));
  EXPECT_EQ(ReadFileOrEmpty(log_path_).find(kDebugLine), std::string::npos);

  WriteConfig(ConfigText("log:\n  level: debug\n"));
  ASSERT_TRUE(qpoold_->Signal(SIGHUP).ok());
  ASSERT_TRUE(
      WaitFor([&] { return Reloads("success") == 1; }, absl::Seconds(5), absl::Milliseconds(20)));
  EXPECT_EQ(Reloads("failure"), 0);
  EXPECT_NE(ReadFileOrEmpty(log_path_).find("log.level: \"info\" -> \"debug\""), std::string::npos);
  ASSERT_NO_FATAL_FAILURE(SendGarbage(listen_port_));
  EXPECT_TRUE(
      WaitFor([&] { return ReadFileOrEmpty(log_path_).find(kDebugLine) != std::string::npos; },
              absl::Seconds(5), absl::Milliseconds(20)))
      << "no debug line after the reload to log.level debug";
  const double last = Scrape()["qpool_config_last_reload_success_timestamp_seconds"];
  EXPECT_NEAR(last, absl::ToUnixSeconds(absl::Now()), 30);

  ASSERT_TRUE(WaitFor([&] { return load.ok() >= 200; }, absl::Seconds(20)));
  load.Stop();
  EXPECT_EQ(load.failed(), 0) << load.first_failure();
  EXPECT_FALSE(Exited());
}

TEST_F(LifecycleTest, ABrokenFileKeepsTheRunningConfigAndCountsAFailure) {
  ASSERT_NO_FATAL_FAILURE(StartUpstream());
  ASSERT_NO_FATAL_FAILURE(StartQpoold("log:\n  level: info\n"));
  EchoLoad load(listen_port_, 4, 5000);
  WriteConfig(ConfigText("log:\n  level: [debug\n"));  // not YAML
  ASSERT_TRUE(qpoold_->Signal(SIGHUP).ok());
  ASSERT_TRUE(
      WaitFor([&] { return Reloads("failure") == 1; }, absl::Seconds(5), absl::Milliseconds(20)));
  EXPECT_EQ(Reloads("success"), 0);
  EXPECT_NE(ReadFileOrEmpty(log_path_).find("config reload failed"), std::string::npos);
  // An invalid value is refused the same way, naming the key.
  WriteConfig(ConfigText("upstream_typo: 1\n"));
  ASSERT_TRUE(qpoold_->Signal(SIGHUP).ok());
  ASSERT_TRUE(
      WaitFor([&] { return Reloads("failure") == 2; }, absl::Seconds(5), absl::Milliseconds(20)));
  EXPECT_NE(ReadFileOrEmpty(log_path_).find("upstream_typo"), std::string::npos);
  // Still at info: a protocol error is not logged.
  ASSERT_NO_FATAL_FAILURE(SendGarbage(listen_port_));
  ASSERT_TRUE(WaitFor([&] { return Scrape()["qpool_downstream_protocol_errors_total"] == 1; },
                      absl::Seconds(5), absl::Milliseconds(20)));
  EXPECT_EQ(ReadFileOrEmpty(log_path_).find(kDebugLine), std::string::npos);

  ASSERT_TRUE(WaitFor([&] { return load.ok() >= 200; }, absl::Seconds(20)));
  load.Stop();
  EXPECT_EQ(load.failed(), 0) << load.first_failure();
  EXPECT_FALSE(Exited());
}

TEST_F(LifecycleTest, AListenChangeIsRefusedNamingTheKey) {
  ASSERT_NO_FATAL_FAILURE(StartUpstream());
  ASSERT_NO_FATAL_FAILURE(StartQpoold("log:\n  level: info\n"));
  EchoLoad load(listen_port_, 4, 5000);
  const uint16_t other_port = PickFreePort();
  // A listen change next to a live one: the whole reload is refused, the level included.
  WriteConfig(ConfigText("log:\n  level: debug\n", other_port));
  ASSERT_TRUE(qpoold_->Signal(SIGHUP).ok());
  ASSERT_TRUE(
      WaitFor([&] { return Reloads("failure") == 1; }, absl::Seconds(5), absl::Milliseconds(20)));
  const std::string log = ReadFileOrEmpty(log_path_);
  EXPECT_NE(log.find("config reload refused"), std::string::npos);
  EXPECT_NE(log.find("server.listen cannot change while qpoold runs (needs a restart)"),
            std::string::npos);
  EXPECT_FALSE(CanConnect(other_port));
  EXPECT_TRUE(CanConnect(listen_port_));

  ASSERT_TRUE(WaitFor([&] { return load.ok() >= 200; }, absl::Seconds(20)));
  load.Stop();
  EXPECT_EQ(load.failed(), 0) << load.first_failure();
  EXPECT_FALSE(Exited());
}

TEST_F(LifecycleTest, SighupWithoutAConfigFileReloadsTheFlagsAndKeepsRunning) {
  ASSERT_NO_FATAL_FAILURE(StartUpstream());
  auto qpoold = Subprocess::Spawn(
      {QPOOLD_PATH, "--listen", absl::StrCat("127.0.0.1:", listen_port_), "--admin-listen",
       absl::StrCat("127.0.0.1:", admin_port_), "--upstream", node_, "--rest-listen", ""},
      log_path_);
  ASSERT_TRUE(qpoold.ok()) << qpoold.status();
  qpoold_ = std::move(*qpoold);
  ASSERT_TRUE(
      WaitFor([&] { return Exited() || Get("/startupz").status == 200; }, absl::Seconds(15)));
  ASSERT_TRUE(qpoold_->Signal(SIGHUP).ok());
  ASSERT_TRUE(
      WaitFor([&] { return Reloads("success") == 1; }, absl::Seconds(5), absl::Milliseconds(20)));
  EXPECT_FALSE(Exited());
  auto stub = TestService::NewStub(OwnChannel(listen_port_));
  EXPECT_TRUE(Echo(*stub, "after").ok());
}

// The sum of the samples of `family` whose labels include every one of `labels` (`node="..."`).
double SumOf(const Samples& samples, const std::string& family,
             const std::vector<std::string>& labels) {
  double sum = 0;
  for (const auto& [name, value] : samples) {
    if (name.rfind(family + "{", 0) != 0) continue;
    bool all = true;
    for (const std::string& label : labels) all = all && name.find(label) != std::string::npos;
    if (all) sum += value;
  }
  return sum;
}

// Issue 15's reload test: under 8 gRPC clients and 4 REST clients, a reload adds a node (its gRPC
// and REST endpoints), the next removes the first one while raising the pool bound and the log
// level, and a broken file changes nothing. Not one call or REST request fails; /pool and the
// metrics follow each step; the removed node drains and gets no new call or request.
TEST_F(LifecycleTest, ReloadAddsAndRemovesNodesAndRaisesPoolLimitsUnderLoadWithoutAFailedCall) {
  ASSERT_NO_FATAL_FAILURE(StartUpstream());
  auto second = TestUpstream::Start();
  ASSERT_TRUE(second.ok()) << second.status();
  auto rest_first = RestTestUpstream::Start();
  ASSERT_TRUE(rest_first.ok()) << rest_first.status();
  auto rest_second = RestTestUpstream::Start();
  ASSERT_TRUE(rest_second.ok()) << rest_second.status();
  const std::string a = node_;
  const std::string b = (*second)->address();
  TestUpstream& upstream_b = **second;
  RestTestUpstream& rest_upstream_a = **rest_first;
  RestTestUpstream& rest_upstream_b = **rest_second;
  const std::string rest_a = absl::StrCat("127.0.0.1:", rest_upstream_a.port());
  const std::string rest_b = absl::StrCat("127.0.0.1:", rest_upstream_b.port());
  rest_port_ = PickFreePort();
  ASSERT_NE(rest_port_, 0);
  rest_nodes_ = {rest_a};
  // One stream per connection: 8 clients need 8 connections, so the pool's bound shows in the
  // connection count. Two workers: each takes its share of the bound, and of every reload.
  extra_server_ = "  workers: 2\n";
  extra_upstream_ = "  max_streams_per_connection: 1\n";
  ASSERT_NO_FATAL_FAILURE(StartQpoold("log:\n  level: info\n"));
  const std::string label_a = absl::StrCat("node=\"", a, "\"");
  const std::string label_b = absl::StrCat("node=\"", b, "\"");
  const std::string label_rest_b = absl::StrCat("node=\"", rest_b, "\"");
  EchoLoad load(listen_port_, 8, 1000000);            // each client gives up after 60 s
  BoundedRestLoad rest_load(rest_port_, 4, 1000000);  // the same
  ASSERT_TRUE(
      WaitFor([&] { return load.ok() >= 100 && rest_load.ok() >= 100; }, absl::Seconds(20)));
  EXPECT_EQ(upstream_b.stats().CallsStarted(), 0);
  EXPECT_EQ(rest_upstream_b.requests(), 0);

  // 1. Add the second node.
  nodes_ = {a, b};
  rest_nodes_ = {rest_a, rest_b};
  WriteConfig(ConfigText("log:\n  level: info\n"));
  ASSERT_TRUE(qpoold_->Signal(SIGHUP).ok());
  ASSERT_TRUE(
      WaitFor([&] { return Reloads("success") == 1; }, absl::Seconds(5), absl::Milliseconds(20)));
  EXPECT_NE(ReadFileOrEmpty(log_path_).find("upstream.nodes: "), std::string::npos);
  ASSERT_TRUE(WaitFor([&] { return upstream_b.stats().CallsStarted() >= 100; }, absl::Seconds(10)))
      << "the added node gets no calls";
  ASSERT_TRUE(WaitFor([&] { return rest_upstream_b.requests() >= 100; }, absl::Seconds(10)))
      << "the added node's REST endpoint gets no requests";
  {
    HttpReply pool = Get("/pool");
    EXPECT_NE(pool.body.find("\"node\":\"" + a + "\""), std::string::npos) << pool.body;
    EXPECT_NE(pool.body.find("\"node\":\"" + b + "\""), std::string::npos) << pool.body;
    EXPECT_NE(pool.body.find("\"node\":\"" + rest_b + "\""), std::string::npos) << pool.body;
    const Samples samples = Scrape();
    EXPECT_GE(SumOf(samples, "qpool_upstream_connects_total", {label_b}), 1);
    EXPECT_GE(SumOf(samples, "qpool_upstream_connects_total", {label_a}), 1);
    // The added REST endpoint's pool counts in the connection families, as a node of its own.
    EXPECT_GE(SumOf(samples, "qpool_upstream_connects_total", {label_rest_b}), 1);
  }

  // 2. Remove the first node; raise max_connections from 2 to 4; log at debug.
  nodes_ = {b};
  rest_nodes_ = {rest_b};
  max_connections_ = 4;
  WriteConfig(ConfigText("log:\n  level: debug\n"));
  ASSERT_TRUE(qpoold_->Signal(SIGHUP).ok());
  ASSERT_TRUE(
      WaitFor([&] { return Reloads("success") == 2; }, absl::Seconds(5), absl::Milliseconds(20)));
  {
    const std::string log = ReadFileOrEmpty(log_path_);
    EXPECT_NE(log.find("log.level: \"info\" -> \"debug\""), std::string::npos);
    EXPECT_NE(log.find("upstream.max_connections: 2 -> 4"), std::string::npos);
  }
  // The removed node drains (gRPC and REST), then leaves /pool and the metrics.
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::string body = Get("/pool").body;
        return body.find("\"node\":\"" + a + "\"") == std::string::npos &&
               body.find("\"node\":\"" + rest_a + "\"") == std::string::npos;
      },
      absl::Seconds(10), absl::Milliseconds(50)))
      << Get("/pool").body;
  EXPECT_EQ(SumOf(Scrape(), "qpool_upstream_connections", {label_a}), 0);
  const int64_t calls_a = upstream_->stats().CallsStarted();
  const int64_t calls_b = upstream_b.stats().CallsStarted();
  const int64_t requests_a = rest_upstream_a.requests();
  const int64_t requests_b = rest_upstream_b.requests();
  // The new bound: more than the old 2 connections to the node that is left.
  ASSERT_TRUE(WaitFor(
      [&] {
        const Samples samples = Scrape();
        return SumOf(samples, "qpool_upstream_connections", {label_b, "state=\"ready\""}) +
                   SumOf(samples, "qpool_upstream_connections", {label_b, "state=\"busy\""}) >
               2;
      },
      absl::Seconds(10), absl::Milliseconds(50)));
  ASSERT_TRUE(WaitFor([&] { return upstream_b.stats().CallsStarted() >= calls_b + 200; },
                      absl::Seconds(10)));
  ASSERT_TRUE(
      WaitFor([&] { return rest_upstream_b.requests() >= requests_b + 200; }, absl::Seconds(10)));
  EXPECT_EQ(upstream_->stats().CallsStarted(), calls_a) << "a removed node got new calls";
  EXPECT_EQ(rest_upstream_a.requests(), requests_a) << "a removed REST endpoint got new requests";

  // 3. A broken file: the running config (node b, bound 4) stays, and the failure is counted.
  WriteConfig(ConfigText("upstream_typo: 1\n"));
  ASSERT_TRUE(qpoold_->Signal(SIGHUP).ok());
  ASSERT_TRUE(
      WaitFor([&] { return Reloads("failure") == 1; }, absl::Seconds(5), absl::Milliseconds(20)));
  EXPECT_EQ(Reloads("success"), 2);
  const int64_t calls_after_broken = upstream_b.stats().CallsStarted();
  ASSERT_TRUE(WaitFor([&] { return upstream_b.stats().CallsStarted() >= calls_after_broken + 100; },
                      absl::Seconds(10)));
  EXPECT_NE(Get("/pool").body.find("\"node\":\"" + b + "\""), std::string::npos);

  load.Stop();
  rest_load.Stop();
  EXPECT_EQ(load.failed(), 0) << load.first_failure();
  EXPECT_GT(load.ok(), 400);
  EXPECT_EQ(rest_load.failed(), 0) << rest_load.first_failure();
  EXPECT_GT(rest_load.ok(), 400);
  EXPECT_FALSE(Exited());
}

// REST-only (no gRPC node; upstream.rest_nodes): a reload adds a REST endpoint, the next removes
// the first one, under 8 REST clients. Not one request fails; the removed endpoint drains, leaves
// /pool and gets no new request.
TEST_F(LifecycleTest, RestOnlyReloadAddsAndRemovesEndpointsUnderLoadWithoutAFailedRequest) {
  auto rest_first = RestTestUpstream::Start();
  ASSERT_TRUE(rest_first.ok()) << rest_first.status();
  auto rest_second = RestTestUpstream::Start();
  ASSERT_TRUE(rest_second.ok()) << rest_second.status();
  RestTestUpstream& upstream_a = **rest_first;
  RestTestUpstream& upstream_b = **rest_second;
  const std::string a = absl::StrCat("127.0.0.1:", upstream_a.port());
  const std::string b = absl::StrCat("127.0.0.1:", upstream_b.port());
  rest_only_ = true;
  rest_port_ = PickFreePort();
  ASSERT_NE(rest_port_, 0);
  rest_nodes_ = {a};
  extra_server_ = "  workers: 2\n";
  ASSERT_NO_FATAL_FAILURE(StartQpoold("log:\n  level: info\n"));
  BoundedRestLoad load(rest_port_, 8, 1000000);  // each client gives up after 60 s
  ASSERT_TRUE(WaitFor([&] { return load.ok() >= 100; }, absl::Seconds(20)));
  EXPECT_EQ(upstream_b.requests(), 0);

  // 1. Add the second endpoint.
  rest_nodes_ = {a, b};
  WriteConfig(ConfigText("log:\n  level: info\n"));
  ASSERT_TRUE(qpoold_->Signal(SIGHUP).ok());
  ASSERT_TRUE(
      WaitFor([&] { return Reloads("success") == 1; }, absl::Seconds(5), absl::Milliseconds(20)));
  ASSERT_TRUE(WaitFor([&] { return upstream_b.requests() >= 100; }, absl::Seconds(10)))
      << "the added endpoint gets no requests";
  EXPECT_NE(Get("/pool").body.find("\"node\":\"" + b + "\""), std::string::npos);

  // 2. Remove the first one.
  rest_nodes_ = {b};
  WriteConfig(ConfigText("log:\n  level: info\n"));
  ASSERT_TRUE(qpoold_->Signal(SIGHUP).ok());
  ASSERT_TRUE(
      WaitFor([&] { return Reloads("success") == 2; }, absl::Seconds(5), absl::Milliseconds(20)));
  ASSERT_TRUE(
      WaitFor([&] { return Get("/pool").body.find("\"node\":\"" + a + "\"") == std::string::npos; },
              absl::Seconds(10), absl::Milliseconds(50)))
      << Get("/pool").body;
  const int64_t requests_a = upstream_a.requests();
  const int64_t requests_b = upstream_b.requests();
  ASSERT_TRUE(
      WaitFor([&] { return upstream_b.requests() >= requests_b + 200; }, absl::Seconds(10)));
  EXPECT_EQ(upstream_a.requests(), requests_a) << "a removed endpoint got new requests";
  EXPECT_EQ(SumOf(Scrape(), "qpool_rest_upstream_connections", {"node=\"" + a + "\""}), 0);

  load.Stop();
  EXPECT_EQ(load.failed(), 0) << load.first_failure();
  EXPECT_GT(load.ok(), 400);
  EXPECT_FALSE(Exited());
}

// --- access log ---------------------------------------------------------------------------------

// Lines of `log` that contain `text`.
int CountLines(const std::string& log, const std::string& text) {
  int n = 0;
  for (size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++n;
  return n;
}

TEST_F(LifecycleTest, AccessLogHasALinePerGrpcAndRestCallWhileOnAndNoneWhileOff) {
  ASSERT_NO_FATAL_FAILURE(StartUpstream());
  auto rest = RestTestUpstream::Start();
  ASSERT_TRUE(rest.ok()) << rest.status();
  const std::string rest_node = absl::StrCat("127.0.0.1:", (*rest)->port());
  rest_nodes_ = {rest_node};
  rest_port_ = PickFreePort();
  ASSERT_NE(rest_port_, 0);
  // On from the start, every call (sample 1), at log.level warn: access lines do not need info.
  ASSERT_NO_FATAL_FAILURE(StartQpoold("log:\n  level: warn\n  access_log_sample: 1\n"));
  auto stub = TestService::NewStub(OwnChannel(listen_port_));
  auto access_lines = [&] { return CountLines(ReadFileOrEmpty(log_path_), " info access "); };
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Echo(*stub, "logged").ok());
  EXPECT_EQ(CallPath(OwnChannel(listen_port_), "/qdrant.Points/Search").error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(HttpRequest(rest_port_, "GET", "/collections/c/points/7").status, 200);
  }
  ASSERT_TRUE(WaitFor([&] { return access_lines() >= 6; }, absl::Seconds(5)));
  std::string log = ReadFileOrEmpty(log_path_);
  EXPECT_EQ(access_lines(), 6) << log;
  // A method not in Qdrant's table is "other"; its retry class was never needed.
  EXPECT_EQ(CountLines(log, " info access protocol=grpc method=other retry_class=- status=0 "), 3);
  EXPECT_EQ(CountLines(log, absl::StrCat(" node=", node_, " attempts=1 peer=127.0.0.1:")), 4);
  EXPECT_EQ(CountLines(log,
                       " info access protocol=grpc method=/qdrant.Points/Search "
                       "retry_class=read status=12 duration_ms="),
            1);
  // REST: the route template, never the path with the collection and the id.
  EXPECT_EQ(CountLines(log,
                       " info access protocol=rest method=GET route=/collections/{}/points/{} "
                       "retry_class=read status=200 duration_ms="),
            2);
  EXPECT_EQ(CountLines(log, absl::StrCat(" node=", rest_node, " attempts=1 peer=127.0.0.1:")), 2);
  EXPECT_EQ(log.find("/collections/c/points/7"), std::string::npos);

  // Reload: JSON lines.
  WriteConfig(ConfigText("log:\n  level: warn\n  format: json\n  access_log_sample: 1\n"));
  ASSERT_TRUE(qpoold_->Signal(SIGHUP).ok());
  ASSERT_TRUE(
      WaitFor([&] { return Reloads("success") == 1; }, absl::Seconds(5), absl::Milliseconds(20)));
  ASSERT_TRUE(Echo(*stub, "json").ok());
  EXPECT_EQ(HttpRequest(rest_port_, "GET", "/collections/c/points/8").status, 200);
  auto json_lines = [&] {
    return CountLines(ReadFileOrEmpty(log_path_), R"("msg":"access","logger":"access")");
  };
  ASSERT_TRUE(WaitFor([&] { return json_lines() >= 2; }, absl::Seconds(5)));
  log = ReadFileOrEmpty(log_path_);
  EXPECT_EQ(CountLines(log, R"("severity":"INFO","msg":"access","logger":"access",)"
                            R"("protocol":"grpc","method":"other","retry_class":"-","status":0,)"),
            1)
      << log;
  EXPECT_EQ(
      CountLines(log, R"("protocol":"rest","method":"GET","route":"/collections/{}/points/{}",)"
                      R"("retry_class":"read","status":200,"duration_ms":)"),
      1)
      << log;

  // Reload: off. No line for the calls made meanwhile: the one line after turning it on again
  // is the only new one (one worker writes them in order).
  WriteConfig(ConfigText("log:\n  level: warn\n  access_log_sample: 0\n"));
  ASSERT_TRUE(qpoold_->Signal(SIGHUP).ok());
  ASSERT_TRUE(
      WaitFor([&] { return Reloads("success") == 2; }, absl::Seconds(5), absl::Milliseconds(20)));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Echo(*stub, "not logged").ok());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(HttpRequest(rest_port_, "GET", "/collections/c/points/9").status, 200);
  }
  const int text_lines_off = access_lines();
  WriteConfig(ConfigText("log:\n  level: warn\n  access_log_sample: 1\n"));
  ASSERT_TRUE(qpoold_->Signal(SIGHUP).ok());
  ASSERT_TRUE(
      WaitFor([&] { return Reloads("success") == 3; }, absl::Seconds(5), absl::Milliseconds(20)));
  ASSERT_TRUE(Echo(*stub, "logged again").ok());
  ASSERT_TRUE(WaitFor([&] { return access_lines() > text_lines_off; }, absl::Seconds(5)));
  EXPECT_EQ(access_lines(), text_lines_off + 1);
  EXPECT_EQ(text_lines_off, 6) << "calls were logged while the access log was off";
  EXPECT_EQ(json_lines(), 2);
  EXPECT_EQ(Reloads("failure"), 0);
}

// DNS discovery with the system's resolver: "localhost" resolves to loopback addresses (127.0.0.1,
// and ::1 where /etc/hosts says so); each becomes a node of its own, named by its address.
TEST_F(LifecycleTest, DnsDiscoveryMakesOneNodePerAddressOfALocalhostNode) {
  ASSERT_NO_FATAL_FAILURE(StartUpstream());
  const std::string port = node_.substr(node_.rfind(':') + 1);
  nodes_ = {"localhost:" + port};
  extra_upstream_ = "  dns_refresh: 1s\n";
  ASSERT_NO_FATAL_FAILURE(StartQpoold("log:\n  level: info\n"));
  const std::string pool = Get("/pool").body;
  EXPECT_NE(pool.find("\"node\":\"127.0.0.1:" + port + "\""), std::string::npos) << pool;
  EXPECT_EQ(pool.find("\"node\":\"localhost:"), std::string::npos) << pool;
  EXPECT_GE(SumOf(Scrape(), "qpool_upstream_node_usable", {"node=\"127.0.0.1:" + port + "\""}), 1);
  EchoLoad load(listen_port_, 4, 100);
  ASSERT_TRUE(WaitFor([&] { return load.ok() + load.failed() == 400; }, absl::Seconds(30)));
  load.Stop();
  EXPECT_EQ(load.failed(), 0) << load.first_failure();
}

// --- qpoold healthcheck (the image's HEALTHCHECK) ---------------------------------------------

int RunHealthcheck(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {QPOOLD_PATH, "healthcheck"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto process = Subprocess::Spawn(argv);
  if (!process.ok()) return -1;
  std::optional<int> status = (*process)->WaitForExit(absl::Seconds(10));
  if (!status || !WIFEXITED(*status)) return -1;
  return WEXITSTATUS(*status);
}

TEST_F(LifecycleTest, HealthcheckSubcommandFollowsReadyz) {
  ASSERT_NO_FATAL_FAILURE(StartUpstream());
  extra_server_ = "  drain_delay: 3s\n";
  ASSERT_NO_FATAL_FAILURE(StartQpoold());
  const std::string url = absl::StrCat("http://127.0.0.1:", admin_port_, "/readyz");
  EXPECT_EQ(RunHealthcheck({"--url", url}), 0);
  EXPECT_EQ(RunHealthcheck({"--url=" + url, "--timeout=1s"}), 0);
  ASSERT_TRUE(qpoold_->Signal(SIGTERM).ok());  // /readyz 503 through the drain delay
  ASSERT_TRUE(WaitFor([&] { return Get("/readyz").status == 503; }, absl::Seconds(2)));
  EXPECT_EQ(RunHealthcheck({"--url", url}), 1);
  EXPECT_EQ(RunHealthcheck({"--url", absl::StrCat("http://127.0.0.1:", PickFreePort(), "/")}), 1);
  EXPECT_EQ(RunHealthcheck({"--url", "https://127.0.0.1/"}), 1);
  EXPECT_EQ(RunHealthcheck({"--bogus"}), 2);
}

TEST_F(LifecycleTest, AWatchedFileIsReloadedWhenItChangesOncePerChange) {
  ASSERT_NO_FATAL_FAILURE(StartUpstream());
  const std::string watched = "config:\n  watch_interval: 100ms\n";
  ASSERT_NO_FATAL_FAILURE(StartQpoold("log:\n  level: info\n" + watched));
  EchoLoad load(listen_port_, 2, 5000);
  WriteConfig(ConfigText("log:\n  level: debug\n" + watched));  // no SIGHUP
  ASSERT_TRUE(
      WaitFor([&] { return Reloads("success") == 1; }, absl::Seconds(5), absl::Milliseconds(20)));
  EXPECT_NE(ReadFileOrEmpty(log_path_).find("log.level: \"info\" -> \"debug\""), std::string::npos);
  // A broken file: one failed reload for the change, however many polls see it.
  WriteConfig(ConfigText("log:\n  level: [debug\n" + watched));
  ASSERT_TRUE(
      WaitFor([&] { return Reloads("failure") == 1; }, absl::Seconds(5), absl::Milliseconds(20)));
  const absl::Time polls_until = absl::Now() + absl::Milliseconds(500);  // about 5 polls
  while (absl::Now() < polls_until) absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(Reloads("failure"), 1);
  EXPECT_EQ(Reloads("success"), 1);
  ASSERT_TRUE(WaitFor([&] { return load.ok() >= 100; }, absl::Seconds(20)));
  load.Stop();
  EXPECT_EQ(load.failed(), 0) << load.first_failure();
}

}  // namespace
}  // namespace qpool::testing
