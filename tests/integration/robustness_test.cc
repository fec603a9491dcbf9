// What a peer that is not a well-behaved gRPC client gets from qpoold: garbage, HTTP/1.1 and broken
// prefaces lose their own connection (counted) while other apps keep working; connections over
// server.max_client_connections are refused with a GOAWAY and counted.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/route_fixture.h"
#include "tests/support/test_util.h"

namespace qpool::testing {
namespace {

constexpr char kClientPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
constexpr char kEmptySettings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};

// A raw TCP connection to qpoold, for sending what no gRPC library would.
class RawConnection {
 public:
  explicit RawConnection(uint16_t port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~RawConnection() { close(fd_); }

  bool connected() const { return connected_; }
  void Send(std::string_view bytes) {
    ASSERT_EQ(send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }
  // Reads until the peer closes; false if it is still open after `timeout`.
  bool ReadUntilClosed(absl::Duration timeout, std::string* received) {
    const absl::Time deadline = absl::Now() + timeout;
    char buf[4096];
    while (absl::Now() < deadline) {
      pollfd pfd{fd_, POLLIN, 0};
      const int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
      if (poll(&pfd, 1, ms < 1 ? 1 : ms) <= 0) continue;
      const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return true;  // EOF or reset: closed
      received->append(buf, n);
    }
    return false;
  }

 private:
  int fd_;
  bool connected_ = false;
};

// The error code of the first GOAWAY frame in `bytes`, or -1 if there is none.
int64_t GoAwayErrorCode(const std::string& bytes) {
  size_t pos = 0;
  while (pos + 9 <= bytes.size()) {
    const auto* p = reinterpret_cast<const uint8_t*>(bytes.data() + pos);
    const size_t length = (size_t{p[0]} << 16) | (size_t{p[1]} << 8) | p[2];
    const uint8_t type = p[3];
    if (pos + 9 + length > bytes.size()) break;
    if (type == 7 && length >= 8) {
      return (int64_t{p[13]} << 24) | (int64_t{p[14]} << 16) | (int64_t{p[15]} << 8) | p[16];
    }
    pos += 9 + length;
  }
  return -1;
}

class RobustnessTest : public RouteTest {
 protected:
  // A unary call through the route; the "nobody else notices" check.
  grpc::Status CallOnce(TestService::Stub& stub) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    EchoRequest request;
    request.set_payload("still here");
    EchoResponse response;
    return stub.Unary(&ctx, request, &response);
  }

  void ExpectConnectionDroppedAndOthersUnaffected(std::string_view bytes) {
    // Another app, connected before the bad peer and after it.
    auto other = TestService::NewStub(NewChannel(/*own_connection=*/true));
    ASSERT_TRUE(CallOnce(*other).ok());
    const uint64_t errors_before = proxy_->stats().protocol_errors;

    RawConnection bad(proxy_->port());
    ASSERT_TRUE(bad.connected());
    bad.Send(bytes);
    std::string received;
    EXPECT_TRUE(bad.ReadUntilClosed(absl::Seconds(5), &received))
        << "qpoold kept a connection that sent garbage";
    EXPECT_TRUE(WaitFor([&] { return proxy_->stats().protocol_errors == errors_before + 1; },
                        absl::Seconds(5)));

    EXPECT_TRUE(CallOnce(*other).ok());
    EXPECT_TRUE(CallOnce(*stub_).ok());
  }
};

TEST_P(RobustnessTest, HttpOneRequestLosesOnlyItsOwnConnection) {
  ExpectConnectionDroppedAndOthersUnaffected("GET / HTTP/1.1\r\nHost: qpool\r\n\r\n");
}

TEST_P(RobustnessTest, GarbageLosesOnlyItsOwnConnection) {
  std::string garbage;
  for (int i = 0; i < 4096; ++i) garbage.push_back(static_cast<char>((i * 7919) & 0xFF));
  ExpectConnectionDroppedAndOthersUnaffected(garbage);
}

TEST_P(RobustnessTest, MalformedPrefaceLosesOnlyItsOwnConnection) {
  ExpectConnectionDroppedAndOthersUnaffected("PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n");
}

TEST_P(RobustnessTest, BrokenFrameAfterValidPrefaceLosesOnlyItsOwnConnection) {
  // A valid preface, then a DATA frame on stream 0 (a connection error, RFC 9113 6.1).
  std::string bytes = kClientPreface;
  bytes.append(kEmptySettings, sizeof(kEmptySettings));
  const char data_on_stream_zero[] = {0, 0, 4, 0, 0, 0, 0, 0, 0, 'o', 'o', 'p', 's'};
  bytes.append(data_on_stream_zero, sizeof(data_on_stream_zero));
  ExpectConnectionDroppedAndOthersUnaffected(bytes);
}

TEST_P(RobustnessTest, ConnectionOverMaxClientConnectionsIsRefusedWithGoAwayAndCounted) {
  RestartRoute([](config::Config& config) { config.server.max_client_connections = 2; });
  std::string preface = kClientPreface;
  preface.append(kEmptySettings, sizeof(kEmptySettings));
  RawConnection first(proxy_->port());
  RawConnection second(proxy_->port());
  first.Send(preface);
  second.Send(preface);
  ASSERT_TRUE(WaitFor([&] { return proxy_->stats().open == 2; }, absl::Seconds(5)));

  RawConnection third(proxy_->port());
  ASSERT_TRUE(third.connected());
  third.Send(preface);
  std::string received;
  ASSERT_TRUE(third.ReadUntilClosed(absl::Seconds(5), &received));
  EXPECT_EQ(GoAwayErrorCode(received), 7) << "expected GOAWAY(REFUSED_STREAM)";
  EXPECT_NE(received.find("server.max_client_connections"), std::string::npos)
      << "the GOAWAY debug data should name the limit";
  EXPECT_EQ(proxy_->stats().refused, 1u);
}

TEST_P(RobustnessTest, SlowReaderDoesNotMakeQpooldBufferWithoutBound) {
  constexpr uint32_t kWindow = 65535;  // the smallest server.stream_window
  constexpr int kMessages = 64;
  constexpr int kMessageSize = 1 << 20;  // 64 MiB in all: far more than any window on the way
  RestartRoute([](config::Config& config) { config.server.stream_window = kWindow; });
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  EchoRequest request;
  request.set_response_count(kMessages);
  request.set_response_size(kMessageSize);
  auto reader = stub_->ServerStream(&ctx, request);
  EchoResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.payload(), PatternBytes(kMessageSize, 0));

  // The app stops reading. Whatever the upstream pushes, qpoold may hold one stream window per
  // direction (plus one chunk of slack); the rest must stay in the upstream's court.
  int64_t most_buffered = 0;
  const absl::Time until = absl::Now() + absl::Milliseconds(500);
  while (absl::Now() < until) {
    most_buffered = std::max(most_buffered, proxy_->stats().buffered_bytes);
    absl::SleepFor(absl::Milliseconds(2));  // sampling, not synchronisation
  }
  EXPECT_GT(most_buffered, 0) << "the gauge never saw the stream's bytes";
  EXPECT_LE(most_buffered, 2 * int64_t{kWindow} + 64 * 1024);
  EXPECT_EQ(upstream_stats().CallsFinished(Method::kServerStream), 0)
      << "backpressure should have reached the upstream";

  // The app reads again: everything arrives, in order and intact.
  for (int i = 1; i < kMessages; ++i) {
    ASSERT_TRUE(reader->Read(&response)) << "message " << i;
    ASSERT_EQ(response.index(), i);
    ASSERT_EQ(response.payload().size(), static_cast<size_t>(kMessageSize));
  }
  EXPECT_FALSE(reader->Read(&response));
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(WaitFor([&] { return proxy_->stats().buffered_bytes == 0; }, absl::Seconds(5)));
}

TEST_P(RobustnessTest, TwoWorkersShareTheConnectionBound) {
  RestartRoute([](config::Config& config) {
    config.server.workers = 2;
    config.upstream.max_connections = 2;
    config.upstream.max_streams_per_connection = 4;
  });
  constexpr int kChannels = 40;
  constexpr int kCallsPerChannel = 5;
  std::vector<std::unique_ptr<TestService::Stub>> stubs;
  for (int i = 0; i < kChannels; ++i) {
    stubs.push_back(TestService::NewStub(NewChannel(/*own_connection=*/true)));
  }
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (auto& stub : stubs) {
    threads.emplace_back([&ok, &stub] {
      for (int i = 0; i < kCallsPerChannel; ++i) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
        EchoRequest request;
        request.set_sleep_ms(5);
        request.set_payload("w");
        EchoResponse response;
        if (stub->Unary(&ctx, request, &response).ok()) ok++;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(ok.load(), kChannels * kCallsPerChannel);
  EXPECT_LE(upstream_stats().DistinctPeers(), 2);
  EXPECT_LE(upstream_stats().MaxUnanswered(), 2 * 4);
}

TEST_P(RobustnessTest, CallsGoToTheSecondNodeWhenTheFirstCannotBeReached) {
  const uint16_t dead_port = PickFreePort();
  RestartRoute([&](config::Config& config) {
    config.upstream.nodes = {{"127.0.0.1", dead_port}, {"127.0.0.1", upstream_->port()}};
  });
  // Once the first node's connect has failed, calls go to the second, and keep going there after
  // the first node's backoff ends (it has no connection up).
  ASSERT_TRUE(WaitFor([&] { return CallOnce(*stub_).ok(); }, absl::Seconds(10)));
  int failures = 0;
  const absl::Time until = absl::Now() + absl::Seconds(1);  // spans several backoff periods
  while (absl::Now() < until) {
    if (!CallOnce(*stub_).ok()) failures++;
  }
  EXPECT_EQ(failures, 0);
}

TEST_P(RobustnessTest, UpstreamGoAwayReplacesConnectionsWithoutFailingCalls) {
  // An upstream that sends GOAWAY to every connection after 300 ms, as Qdrant does when it
  // restarts or a load balancer recycles it: connections turn over under load, and no call fails.
  auto aging = TestUpstream::Start(0, absl::Milliseconds(300));
  ASSERT_TRUE(aging.ok()) << aging.status();
  RestartRoute([](config::Config& config) { config.upstream.max_connections = 2; },
               (*aging)->port());
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  const absl::Time until = absl::Now() + absl::Milliseconds(1500);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      while (absl::Now() < until) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        EchoRequest request;
        request.set_sleep_ms(20);
        EchoResponse response;
        (stub_->Unary(&ctx, request, &response).ok() ? ok : failed)++;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(ok.load(), 40);
  EXPECT_GE((*aging)->stats().DistinctPeers(), 3) << "the connections never turned over";
}

// Runs `threads` x `calls` unary calls (5 ms at the upstream each); returns how many failed.
int RunCalls(TestService::Stub& stub, int threads, int calls) {
  std::atomic<int> failed{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      for (int i = 0; i < calls; ++i) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        EchoRequest request;
        request.set_sleep_ms(5);
        EchoResponse response;
        if (!stub.Unary(&ctx, request, &response).ok()) failed++;
      }
    });
  }
  for (auto& worker : workers) worker.join();
  return failed.load();
}

TEST_P(RobustnessTest, CallsSpreadOverTwoLiveNodes) {
  auto second = TestUpstream::Start();
  ASSERT_TRUE(second.ok()) << second.status();
  RestartRoute([&](config::Config& config) {
    config.upstream.nodes = {{"127.0.0.1", upstream_->port()}, {"127.0.0.1", (*second)->port()}};
  });
  // Both nodes connect at start (min_connections); wait until both have served a probe call.
  ASSERT_TRUE(WaitFor(
      [&] {
        return CallOnce(*stub_).ok() && upstream_stats().CallsStarted() > 0 &&
               (*second)->stats().CallsStarted() > 0;
      },
      absl::Seconds(10)));
  const int64_t first_before = upstream_stats().CallsStarted();
  const int64_t second_before = (*second)->stats().CallsStarted();
  EXPECT_EQ(RunCalls(*stub_, 8, 25), 0);
  const int64_t first = upstream_stats().CallsStarted() - first_before;
  const int64_t second_calls = (*second)->stats().CallsStarted() - second_before;
  EXPECT_EQ(first + second_calls, 200);
  EXPECT_GE(first, 40) << "node 1 got " << first << " of 200";
  EXPECT_GE(second_calls, 40) << "node 2 got " << second_calls << " of 200";
}

TEST_P(RobustnessTest, TrafficReturnsToANodeThatComesBack) {
  const uint16_t late_port = PickFreePort();
  RestartRoute([&](config::Config& config) {
    config.upstream.nodes = {{"127.0.0.1", upstream_->port()}, {"127.0.0.1", late_port}};
    config.upstream.connect_backoff_max = absl::Milliseconds(200);
  });
  ASSERT_TRUE(WaitFor([&] { return CallOnce(*stub_).ok(); }, absl::Seconds(10)));
  EXPECT_EQ(RunCalls(*stub_, 4, 10), 0) << "calls fail while the second node is down";

  auto late = TestUpstream::Start(late_port);
  ASSERT_TRUE(late.ok()) << late.status();
  // qpoold reconnects within its backoff (at most 200 ms here) and sends the second node a share.
  EXPECT_TRUE(WaitFor(
      [&] {
        RunCalls(*stub_, 4, 5);
        return (*late)->stats().CallsStarted() > 0;
      },
      absl::Seconds(10)));
}

// A bare HTTP/2 upstream (nghttp2, one thread, one connection at a time) that refuses the first
// `refuse` streams, once it has their whole request, as a server does for streams it never
// processed: with RST_STREAM(REFUSED_STREAM), or with `how` kGoAway by a GOAWAY whose last stream
// id is below the stream (a server shutting down). It answers later streams with an empty OK
// gRPC response. Counts what it refused and answered, and the request bytes of each answered call.
class RefusingUpstream {
 public:
  enum class How { kRefusedStream, kGoAway };
  explicit RefusingUpstream(int refuse, How how = How::kRefusedStream)
      : refuse_(refuse), how_(how) {
    listener_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    listen(listener_, 16);
    socklen_t len = sizeof(addr);
    getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~RefusingUpstream() {
    stop_ = true;
    thread_.join();
    close(listener_);
  }
  uint16_t port() const { return port_; }
  int refused() const { return refused_; }
  int answered() const { return answered_; }
  size_t last_request_bytes() const { return last_request_bytes_; }

 private:
  struct Stream {
    size_t bytes = 0;
  };

  void Serve() {
    while (!stop_) {
      pollfd pfd{listener_, POLLIN, 0};
      if (poll(&pfd, 1, 20) <= 0) continue;
      const int fd = accept(listener_, nullptr, nullptr);
      if (fd >= 0) ServeConnection(fd);
    }
  }

  void ServeConnection(int fd) {
    streams_.clear();  // stream ids start again on each connection
    nghttp2_session_callbacks* callbacks;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_frame_recv_callback(
        callbacks, [](nghttp2_session* session, const nghttp2_frame* frame, void* self) {
          return static_cast<RefusingUpstream*>(self)->OnFrame(session, frame);
        });
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        callbacks,
        [](nghttp2_session*, uint8_t, int32_t id, const uint8_t*, size_t len, void* self) {
          static_cast<RefusingUpstream*>(self)->streams_[id].bytes += len;
          return 0;
        });
    nghttp2_session* session;
    nghttp2_session_server_new(&session, callbacks, this);
    nghttp2_session_callbacks_del(callbacks);
    nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, nullptr, 0);
    uint8_t buf[16384];
    while (!stop_) {
      const uint8_t* out;
      ssize_t n;
      while ((n = nghttp2_session_mem_send(session, &out)) > 0) send(fd, out, n, MSG_NOSIGNAL);
      pollfd pfd{fd, POLLIN, 0};
      if (poll(&pfd, 1, 20) <= 0) continue;
      const ssize_t got = recv(fd, buf, sizeof(buf), 0);
      if (got <= 0 || nghttp2_session_mem_recv(session, buf, got) < 0) break;
    }
    nghttp2_session_del(session);
    close(fd);
  }

  int OnFrame(nghttp2_session* session, const nghttp2_frame* frame) {
    const bool end_stream = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) || !end_stream) {
      return 0;
    }
    const int32_t id = frame->hd.stream_id;
    if (refused_ < refuse_) {
      refused_++;
      if (how_ == How::kGoAway) {
        nghttp2_submit_goaway(session, NGHTTP2_FLAG_NONE, std::max(0, id - 2), NGHTTP2_NO_ERROR,
                              nullptr, 0);
      } else {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
      }
      return 0;
    }
    answered_++;
    last_request_bytes_ = streams_[id].bytes;
    // HEADERS, one empty message, trailers with grpc-status 0.
    const nghttp2_nv headers[] = {MakeHeader(":status", "200"),
                                  MakeHeader("content-type", "application/grpc")};
    nghttp2_data_provider body{};
    body.read_callback = [](nghttp2_session* session, int32_t id, uint8_t* buf, size_t,
                            uint32_t* flags, nghttp2_data_source*, void*) -> ssize_t {
      std::memset(buf, 0, 5);  // an empty gRPC message: not compressed, length 0
      *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
      const nghttp2_nv trailers[] = {MakeHeader("grpc-status", "0")};
      nghttp2_submit_trailer(session, id, trailers, 1);
      return 5;
    };
    nghttp2_submit_response(session, id, headers, 2, &body);
    return 0;
  }

  static nghttp2_nv MakeHeader(const char* name, const char* value) {
    return {reinterpret_cast<uint8_t*>(const_cast<char*>(name)),
            reinterpret_cast<uint8_t*>(const_cast<char*>(value)), strlen(name), strlen(value),
            NGHTTP2_NV_FLAG_NONE};
  }

  const int refuse_;
  const How how_;
  int listener_;
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> refused_{0};
  std::atomic<int> answered_{0};
  std::atomic<size_t> last_request_bytes_{0};
  std::map<int32_t, Stream> streams_;  // the server thread's only
};

TEST_P(RobustnessTest, RefusedStreamIsSentAgainWithItsWholeRequest) {
  RefusingUpstream refusing(/*refuse=*/2);
  RestartRoute([](config::Config& config) { config.upstream.max_connections = 1; },
               refusing.port());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  EchoRequest request;
  request.set_payload(std::string(100 * 1024, 'r'));  // several DATA frames
  EchoResponse response;
  const grpc::Status status = stub_->Unary(&ctx, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  EXPECT_EQ(refusing.refused(), 2);
  EXPECT_EQ(refusing.answered(), 1);
  EXPECT_EQ(refusing.last_request_bytes(), 5 + request.ByteSizeLong())
      << "the replayed request lost or doubled bytes";
  EXPECT_EQ(proxy_->stats().transparent_retries, 2u);
  // The copy is dropped once the answer began: nothing stays held.
  EXPECT_TRUE(WaitFor([&] { return proxy_->stats().replay_bytes == 0; }, absl::Seconds(5)));
  EXPECT_TRUE(WaitFor([&] { return proxy_->stats().buffered_bytes == 0; }, absl::Seconds(5)));
}

// A node that refuses every stream is overloaded or going away: refused streams are sent again at
// once, but only up to retry.max_attempts (no tight loop against it).
TEST_P(RobustnessTest, RefusedStreamGivesUpAfterMaxAttempts) {
  RefusingUpstream refusing(/*refuse=*/100);
  RestartRoute([](config::Config& config) { config.upstream.max_connections = 1; },
               refusing.port());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  EchoResponse response;
  const grpc::Status status = stub_->Unary(&ctx, EchoRequest(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(refusing.refused(), 3) << "three attempts in all";
  EXPECT_EQ(proxy_->stats().transparent_retries, 2u);
}

// Issue "Retry middleware": a 3 MiB upsert-sized request caught by a GOAWAY (its stream above the
// last stream id: never processed) is sent again whole on a new connection; a 5 MiB one passes
// retry.replay_buffer_per_call (4 MiB), so it went without a copy: it fails, and says so in
// qpool_replay_buffer_refusals_total{limit="per_call"}.
TEST_P(RobustnessTest, GoAwayReplaysAThreeMebibyteRequestButNotAFiveMebibyteOne) {
  auto per_call_refusals = [&] {
    metrics::ScrapeInput input = proxy_->Scrape(absl::Seconds(1));
    uint64_t total = 0;
    for (const metrics::WorkerMetrics* worker : input.workers) {
      total += worker->replay_refusals(metrics::ReplayLimit::kPerCall);
    }
    return total;
  };
  for (const size_t size : {size_t{3} << 20, size_t{5} << 20}) {
    SCOPED_TRACE(size);
    RefusingUpstream refusing(/*refuse=*/1, RefusingUpstream::How::kGoAway);
    RestartRoute([](config::Config& config) { config.upstream.max_connections = 1; },
                 refusing.port());
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    EchoRequest request;
    request.set_payload(std::string(size, 'u'));
    EchoResponse response;

    const grpc::Status status = stub_->Unary(&ctx, request, &response);

    EXPECT_EQ(refusing.refused(), 1);
    if (size < (4u << 20)) {
      EXPECT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
      EXPECT_EQ(refusing.answered(), 1);
      EXPECT_EQ(refusing.last_request_bytes(), 5 + request.ByteSizeLong());
      EXPECT_EQ(per_call_refusals(), 0u);
    } else {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
      EXPECT_EQ(refusing.answered(), 0);
      EXPECT_EQ(per_call_refusals(), 1u);
    }
    EXPECT_TRUE(WaitFor([&] { return proxy_->stats().replay_bytes == 0; }, absl::Seconds(5)));
  }
}

INSTANTIATE_TEST_SUITE_P(ThroughQpoold, RobustnessTest, ::testing::Values(Route::kThroughQpoold),
                         RouteName);

}  // namespace
}  // namespace qpool::testing
