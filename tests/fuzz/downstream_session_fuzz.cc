// libFuzzer target: the app-facing HTTP/2 server (DownstreamSession, its calls' request header
// handling, grpc-timeout, local replies) fed arbitrary bytes as an app connection would send them.
//
// One Worker, driven from this thread (never Start()ed), lives for the whole run. Each input is one
// app connection over loopback TCP: the bytes are written (after the client preface when byte 0
// is even, so that most inputs get past it), the client half-closes, and the worker's event loop
// is run until the connection is gone and nothing is left to do, with bounds on turns and time.
// The one upstream node is a loopback port nothing listens on, so calls end in qpoold's own
// answers (UNAVAILABLE) after the pool's connect fails. Any crash, sanitizer report or leak fails;
// a connection still open after the bounds aborts (a session that never lets go of a closed peer).
//
//   build/fuzz/bin/downstream_session_fuzz -max_total_time=60
//   tests/fuzz/corpus/downstream_session_fuzz
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string_view>

#include "daemon/config/config.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/server/proxy_counters.h"
#include "daemon/server/worker.h"
#include "spdlog/spdlog.h"

namespace {

using boost::asio::ip::tcp;

constexpr std::string_view kClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

struct Harness {
  Harness() {
    spdlog::set_level(spdlog::level::off);
    auto config = std::make_shared<qpool::config::Config>();
    config->upstream.nodes.push_back({"127.0.0.1", ClosedPort()});
    config->upstream.connect_backoff_base = absl::Milliseconds(1);
    config->upstream.connect_backoff_max = absl::Milliseconds(1);
    config->upstream.acquire_timeout = absl::Milliseconds(20);
    config->health.enabled = false;
    // One gRPC node and its REST endpoint (rest.listen is on by default): the REST worker counts
    // into rest_node(0).
    metrics = std::make_unique<qpool::metrics::WorkerMetrics>(1, 1);
    worker = std::make_unique<qpool::server::Worker>(config, 0, 1, counters, *metrics);
    acceptor = std::make_unique<tcp::acceptor>(
        worker->io(), tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  }

  // A loopback port with no listener (bound once to pick it, then closed).
  static uint16_t ClosedPort() {
    boost::asio::io_context io;
    tcp::acceptor probe(io, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
    return probe.local_endpoint().port();
  }

  // Reads and drops whatever qpoold sent; false once the peer closed.
  static bool Drain(int fd) {
    char buf[16384];
    for (;;) {
      const ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n > 0) continue;
      if (n == 0) return false;
      return true;  // EAGAIN: nothing more for now
    }
  }

  void RunOne(const uint8_t* data, size_t size) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) std::abort();
    // Closed with a reset, so no run leaves a port in TIME_WAIT: at a few thousand runs a second
    // the loopback's ephemeral ports would run out within a 30 s run (connect: EADDRNOTAVAIL).
    const linger reset_on_close{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset_on_close, sizeof(reset_on_close));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(acceptor->local_endpoint().port());
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    if (rc != 0 && errno == EINTR) {
      // libFuzzer's timer signal interrupted it; the connect goes on: wait for its outcome.
      pollfd writable{fd, POLLOUT, 0};
      while (poll(&writable, 1, 5000) < 0 && errno == EINTR) {
      }
      int error = 0;
      socklen_t len = sizeof(error);
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len);
      rc = error == 0 ? 0 : -1;
      errno = error;
    }
    if (rc != 0) {
      std::perror("downstream_session_fuzz: connect to the worker's listener");
      std::abort();
    }
    tcp::socket server(worker->io());
    acceptor->accept(server);
    worker->Adopt(std::move(server), /*refuse=*/false);

    const bool with_preface = size > 0 && (data[0] & 1) == 0;
    std::string bytes;
    if (with_preface) bytes.append(kClientPreface);
    if (size > 0) bytes.append(reinterpret_cast<const char*>(data) + 1, size - 1);
    // The bytes are written in pieces between turns of the loop, so nothing blocks on a full
    // socket buffer and qpoold sees them in more than one read.
    size_t sent = 0;
    bool half_closed = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (int turn = 0; turn < 100000; ++turn) {
      if (sent < bytes.size()) {
        const ssize_t n =
            send(fd, bytes.data() + sent, bytes.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) sent += static_cast<size_t>(n);
      } else if (!half_closed) {
        shutdown(fd, SHUT_WR);
        half_closed = true;
      }
      worker->io().restart();
      const size_t ran = worker->io().poll();
      const bool peer_open = Drain(fd);
      if (half_closed && counters.downstream_open.load() == 0 && ran == 0) break;
      if (!peer_open && half_closed && counters.downstream_open.load() == 0) break;
      if (std::chrono::steady_clock::now() > deadline) break;
      if (ran == 0) worker->io().run_for(std::chrono::milliseconds(1));
    }
    close(fd);
    // The connection is gone on our side: qpoold must let go of it.
    for (int turn = 0; turn < 10000 && counters.downstream_open.load() != 0; ++turn) {
      worker->io().restart();
      if (worker->io().poll() == 0) worker->io().run_for(std::chrono::milliseconds(1));
    }
    if (counters.downstream_open.load() != 0) {
      std::fprintf(stderr, "an app connection closed by the peer is still open in qpoold\n");
      std::abort();
    }
  }

  qpool::server::ProxyCounters counters;
  std::unique_ptr<qpool::metrics::WorkerMetrics> metrics;
  std::unique_ptr<qpool::server::Worker> worker;
  std::unique_ptr<tcp::acceptor> acceptor;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness* harness = new Harness;
  harness->RunOne(data, size);
  return 0;
}
