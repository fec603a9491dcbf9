// An in-process gRPC upstream for the integration and e2e tests: it implements
// qpool.testing.TestService (proto/testing/test_service.proto) on 127.0.0.1:0 and counts, at the
// upstream side, what reached it: calls per method, calls in progress, cancellations, and the
// distinct TCP connections (peers) the calls came over.
//
//   auto upstream = qpool::testing::TestUpstream::Start();
//   ASSERT_TRUE(upstream.ok()) << upstream.status();
//   auto channel = grpc::CreateChannel((*upstream)->address(), grpc::InsecureChannelCredentials());
//   ...
//   EXPECT_LE((*upstream)->DistinctPeers(), 2);
//
// Behaviour is steered by EchoRequest fields (sleep, status with details, response size, ...);
// every call echoes its request metadata back, prefixed "echo-", as initial metadata and trailers.
// Sleeps run on gRPC alarms, never on a gRPC thread, and end early when the call is cancelled.
// Thread-safety: all public methods are thread-safe.
#ifndef QPOOL_TESTS_SUPPORT_TEST_UPSTREAM_H_
#define QPOOL_TESTS_SUPPORT_TEST_UPSTREAM_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace qpool::testing {

// Prefix of the metadata keys the upstream echoes back.
inline constexpr char kEchoPrefix[] = "echo-";
// The longest sleep the upstream honours, in milliseconds; longer requests are capped.
inline constexpr int kMaxSleepMs = 60000;

enum class Method { kUnary = 0, kClientStream, kServerStream, kBidi };
inline constexpr int kMethodCount = 4;

// Counters and last-call observations, shared by the service and its reactors.
class UpstreamStats {
 public:
  // Called by the reactors.
  void CallStarted(Method method, const std::string& peer,
                   std::multimap<std::string, std::string> metadata, absl::Duration deadline);
  void CallAnswered();  // right before the reactor calls Finish()
  void CallCancelled();
  void CallFinished(Method method);

  int64_t CallsStarted() const;
  int64_t CallsStarted(Method method) const { return Snapshot().started[static_cast<int>(method)]; }
  int64_t CallsFinished() const;
  int64_t CallsFinished(Method method) const {
    return Snapshot().finished[static_cast<int>(method)];
  }
  // Calls started whose reactor is not done yet (OnDone runs a little after the answer is sent).
  int64_t InProgress() const { return Snapshot().in_progress; }
  int64_t MaxInProgress() const { return Snapshot().max_in_progress; }
  // Calls started and not yet answered (Finish not called). A client (or qpoold) can only see a
  // call end after it is answered, so the peak is exact for checking a concurrency bound, where
  // InProgress() may briefly count a call the client already saw end.
  int64_t Unanswered() const { return Snapshot().unanswered; }
  int64_t MaxUnanswered() const { return Snapshot().max_unanswered; }
  int64_t Cancellations() const { return Snapshot().cancellations; }
  // Distinct `peer()` strings ("ipv4:127.0.0.1:PORT"): one per client TCP connection seen.
  int64_t DistinctPeers() const { return static_cast<int64_t>(Snapshot().peers.size()); }
  std::set<std::string> Peers() const { return Snapshot().peers; }
  // The request metadata of the last call that started (keys as gRPC reports them).
  std::multimap<std::string, std::string> LastMetadata() const { return Snapshot().last_metadata; }
  // The time left until the last call's deadline, when it started; InfiniteDuration without one.
  absl::Duration LastDeadline() const { return Snapshot().last_deadline; }

 private:
  struct State {
    int64_t started[kMethodCount] = {};
    int64_t finished[kMethodCount] = {};
    int64_t in_progress = 0;
    int64_t max_in_progress = 0;
    int64_t unanswered = 0;
    int64_t max_unanswered = 0;
    int64_t cancellations = 0;
    std::set<std::string> peers;
    std::multimap<std::string, std::string> last_metadata;
    absl::Duration last_deadline = absl::InfiniteDuration();
  };
  // A copy of the whole state, read under the lock.
  State Snapshot() const ABSL_LOCKS_EXCLUDED(mu_);

  mutable absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_);
};

class TestUpstream {
 public:
  // Binds 127.0.0.1:0 (or `port` when not 0) and starts serving. Message sizes are unlimited.
  // With a finite `max_connection_age`, the server sends GOAWAY to each connection that old (gRPC's
  // graceful two-step GOAWAY) and lets its calls finish.
  // `host`: the loopback address to bind (127.0.0.2 and so on for a second node on one port).
  static absl::StatusOr<std::unique_ptr<TestUpstream>> Start(
      uint16_t port = 0, absl::Duration max_connection_age = absl::InfiniteDuration(),
      const std::string& host = "127.0.0.1");

  ~TestUpstream();  // Shutdown(absl::ZeroDuration())

  uint16_t port() const { return port_; }
  std::string address() const;  // "127.0.0.1:PORT"

  // Stops accepting; calls still running after `grace` are cancelled. Waits for them. Idempotent.
  void Shutdown(absl::Duration grace);

  UpstreamStats& stats() { return *stats_; }
  const UpstreamStats& stats() const { return *stats_; }

 private:
  class Service;
  TestUpstream() = default;

  std::shared_ptr<UpstreamStats> stats_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  uint16_t port_ = 0;
  std::string host_ = "127.0.0.1";
  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

// `size` bytes of a deterministic pattern that depends on `seed`; the tests compare payloads
// against it.
std::string PatternBytes(size_t size, uint32_t seed = 0);

}  // namespace qpool::testing

#endif  // QPOOL_TESTS_SUPPORT_TEST_UPSTREAM_H_
