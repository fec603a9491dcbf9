// Pool accounting with fake connections and a fake clock: acquire, stream caps, queueing, queue
// overflow, acquire timeout, GOAWAY drain, connect backoff, shutdown, recycling (age, requests,
// idle) and close reasons.
#include "daemon/pool/node_pool.h"

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/fake_event_loop.h"

namespace qpool::pool {
namespace {

using ::qpool::testing::FakeEventLoop;
using ::qpool::testing::FakeRandom;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

// A connection that does nothing by itself: the test drives its events. Drain() and Abort() are
// recorded; Abort() reports synchronously, as the PoolConnection contract requires.
class FakeConnection : public PoolConnection {
 public:
  explicit FakeConnection(PoolConnectionEvents& events) : events_(events) {}

  void Drain() override { drain_calls_++; }
  void Abort() override {
    abort_calls_++;
    if (finished_) return;
    finished_ = true;
    if (connected_) {
      events_.OnClosed(this, absl::CancelledError("aborted"));
    } else {
      events_.OnConnectFailed(this, absl::CancelledError("aborted"));
    }
  }

  // What the HTTP/2 connection would report.
  void Connect(uint32_t peer_max_streams = UINT32_MAX) {
    connected_ = true;
    events_.OnConnected(this, peer_max_streams);
  }
  void FailConnect(absl::Status reason = absl::UnavailableError("connection refused")) {
    finished_ = true;
    events_.OnConnectFailed(this, reason);
  }
  void PeerMaxStreams(uint32_t peer_max_streams) {
    events_.OnPeerMaxStreams(this, peer_max_streams);
  }
  void GoAway() { events_.OnGoAway(this); }
  void StreamClosed() { events_.OnStreamClosed(this); }
  void Close(absl::Status reason = absl::OkStatus()) {
    finished_ = true;
    events_.OnClosed(this, reason);
  }

  PoolConnectionEvents& events() { return events_; }
  int drain_calls() const { return drain_calls_; }
  int abort_calls() const { return abort_calls_; }

 private:
  PoolConnectionEvents& events_;
  bool connected_ = false;
  bool finished_ = false;
  int drain_calls_ = 0;
  int abort_calls_ = 0;
};

// Records every connection it makes, in order, with the events sink it was given.
class FakeConnectionFactory : public ConnectionFactory {
 public:
  std::shared_ptr<PoolConnection> Connect(PoolConnectionEvents& events) override {
    auto conn = std::make_shared<FakeConnection>(events);
    made_.push_back(conn);
    return conn;
  }

  size_t made() const { return made_.size(); }
  FakeConnection& conn(size_t i) { return *made_.at(i); }

 private:
  std::vector<std::shared_ptr<FakeConnection>> made_;
};

// Records which callback ran, and appends its id to a shared log so tests can check order.
class RecordingWaiter : public StreamWaiter {
 public:
  explicit RecordingWaiter(int id = 0, std::vector<int>* log = nullptr) : id_(id), log_(log) {}

  void OnStreamReady(PoolConnection* conn) override {
    ready_on_.push_back(conn);
    if (log_) log_->push_back(id_);
  }
  void OnAcquireFailed(const absl::Status& status) override {
    failures_.push_back(status);
    if (log_) log_->push_back(id_);
  }

  int calls() const { return static_cast<int>(ready_on_.size() + failures_.size()); }
  const std::vector<PoolConnection*>& ready_on() const { return ready_on_; }
  const std::vector<absl::Status>& failures() const { return failures_; }

 private:
  int id_;
  std::vector<int>* log_;
  std::vector<PoolConnection*> ready_on_;
  std::vector<absl::Status> failures_;
};

// Records the close reasons the pool reports.
class RecordingObserver : public PoolObserver {
 public:
  void OnConnectionClosed(CloseReason reason, const absl::Status& status) override {
    closed.push_back(reason);
  }
  std::vector<CloseReason> closed;
};

// A seeded pseudo-random source: many different draws, the same in every run.
class SeededRandom : public Random {
 public:
  explicit SeededRandom(uint64_t seed) : engine_(seed) {}
  double Uniform01() override { return std::uniform_real_distribution<double>(0, 1)(engine_); }

 private:
  std::mt19937_64 engine_;
};

class NodePoolTest : public ::testing::Test {
 protected:
  static NodePoolOptions DefaultOptions() {
    NodePoolOptions options;
    options.node_name = "qdrant-0:6334";
    options.min_connections = 1;
    options.max_connections = 3;
    options.max_streams_per_connection = 2;
    options.acquire_timeout = 1s;
    options.connect_backoff_base = 100ms;
    options.connect_backoff_max = 1s;
    // Recycling off unless a test turns it on.
    options.max_connection_age = Duration::zero();
    options.max_requests_per_connection = 0;
    options.idle_timeout = Duration::zero();
    return options;
  }

  NodePool& MakePool(NodePoolOptions options = DefaultOptions(), Random* random = nullptr) {
    pool_ = std::make_unique<NodePool>(std::move(options), budget_, factory_, loop_,
                                       random != nullptr ? *random : random_, &observer_);
    return *pool_;
  }

  // A started pool whose first connection is ready.
  NodePool& MakeReadyPool(NodePoolOptions options = DefaultOptions(),
                          uint32_t peer_max_streams = UINT32_MAX) {
    NodePool& pool = MakePool(std::move(options));
    pool.Start();
    factory_.conn(0).Connect(peer_max_streams);
    return pool;
  }

  // Acquires and expects an immediate slot; returns the connection it is on.
  PoolConnection* AcquireNow(NodePool& pool) {
    RecordingWaiter waiter;
    NodePool::AcquireResult result = pool.Acquire(waiter);
    EXPECT_EQ(result.outcome, NodePool::AcquireOutcome::kReady) << result.status;
    return result.connection;
  }

  // A ready pool of one connection with one stream (max_connections and
  // max_streams_per_connection 1, `options` otherwise) whose stream is taken: the next acquire
  // waits.
  NodePool& MakeBusyPool(NodePoolOptions options = DefaultOptions(),
                         uint32_t peer_max_streams = UINT32_MAX) {
    options.max_connections = 1;
    options.max_streams_per_connection = 1;
    NodePool& pool = MakeReadyPool(std::move(options), peer_max_streams);
    AcquireNow(pool);
    return pool;
  }

  // A waiter that lives as long as the fixture: a waiter still queued when the pool goes must
  // outlive it (the destructor unlinks it), so tests' waiters are not locals.
  RecordingWaiter& NewWaiter(int id = 0, std::vector<int>* log = nullptr) {
    waiters_.push_back(std::make_unique<RecordingWaiter>(id, log));
    return *waiters_.back();
  }

  // A share account that outlives every waiter (declared before waiters_): a waiter destroyed
  // while it holds a slot gives its account's share back (StreamWaiter's destructor).
  ShareAccount& NewAccount() { return accounts_.emplace_back(); }

  std::deque<ShareAccount> accounts_;
  std::vector<std::unique_ptr<RecordingWaiter>> waiters_;
  RecordingObserver observer_;
  FakeEventLoop loop_;
  FakeRandom random_{1.0};
  FakeRandom no_jitter_{0.5};  // u = 0: each connection's age limit is max_connection_age exactly
  SeededRandom seeded_{20261127};
  PendingBudget budget_{1024, 0};
  FakeConnectionFactory factory_;
  std::unique_ptr<NodePool> pool_;  // last: destroyed first, while its collaborators still live
};

TEST_F(NodePoolTest, StartOpensMinConnections) {
  NodePoolOptions options = DefaultOptions();
  options.min_connections = 2;
  NodePool& pool = MakePool(options);
  EXPECT_EQ(factory_.made(), 0u);

  pool.Start();

  EXPECT_EQ(factory_.made(), 2u);
  EXPECT_EQ(pool.stats().connecting, 2u);
  EXPECT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kConnecting);
}

TEST_F(NodePoolTest, AcquireOnReadyConnectionIsImmediate) {
  NodePool& pool = MakeReadyPool();
  RecordingWaiter& waiter = NewWaiter();

  NodePool::AcquireResult result = pool.Acquire(waiter);

  EXPECT_EQ(result.outcome, NodePool::AcquireOutcome::kReady);
  EXPECT_EQ(result.connection, &factory_.conn(0));
  EXPECT_EQ(waiter.calls(), 0);  // the result is the answer; no callback
  EXPECT_EQ(pool.stats().streams_in_flight, 1u);
  EXPECT_EQ(budget_.used, 0u);
}

TEST_F(NodePoolTest, AcquireWaitsForAConnectingConnection) {
  NodePool& pool = MakePool();
  pool.Start();
  RecordingWaiter& waiter = NewWaiter();

  EXPECT_EQ(pool.Acquire(waiter).outcome, NodePool::AcquireOutcome::kQueued);
  EXPECT_EQ(factory_.made(), 1u);  // the connecting one has room for it
  factory_.conn(0).Connect();

  EXPECT_THAT(waiter.ready_on(), ElementsAre(&factory_.conn(0)));
  EXPECT_EQ(budget_.used, 0u);
}

TEST_F(NodePoolTest, StreamsFillOneConnectionToConfiguredCapBeforeANewOneOpens) {
  NodePool& pool = MakeReadyPool(DefaultOptions(), /*peer_max_streams=*/100);  // cap is 2

  EXPECT_EQ(AcquireNow(pool), &factory_.conn(0));
  EXPECT_EQ(factory_.made(), 1u);
  EXPECT_EQ(AcquireNow(pool), &factory_.conn(0));
  EXPECT_EQ(factory_.made(), 1u);
  EXPECT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kBusy);

  RecordingWaiter& third = NewWaiter();
  EXPECT_EQ(pool.Acquire(third).outcome, NodePool::AcquireOutcome::kQueued);
  EXPECT_EQ(factory_.made(), 2u);
}

TEST_F(NodePoolTest, StreamsFillOneConnectionToPeerMaxStreamsWhenLowerThanConfiguredCap) {
  NodePoolOptions options = DefaultOptions();
  options.max_streams_per_connection = 100;
  NodePool& pool = MakeReadyPool(options, /*peer_max_streams=*/3);

  for (int i = 0; i < 3; ++i) EXPECT_EQ(AcquireNow(pool), &factory_.conn(0));
  EXPECT_EQ(factory_.made(), 1u);
  EXPECT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kBusy);

  RecordingWaiter& fourth = NewWaiter();
  EXPECT_EQ(pool.Acquire(fourth).outcome, NodePool::AcquireOutcome::kQueued);
  EXPECT_EQ(factory_.made(), 2u);
}

TEST_F(NodePoolTest, NewConnectionOpensOnlyWhenEveryOpenOneIsAtItsCap) {
  NodePoolOptions options = DefaultOptions();
  options.min_connections = 2;
  NodePool& pool = MakePool(options);
  pool.Start();
  factory_.conn(0).Connect();
  factory_.conn(1).Connect();

  for (int i = 0; i < 3; ++i) AcquireNow(pool);
  EXPECT_EQ(factory_.made(), 2u);  // conn(1) still has a free stream
  AcquireNow(pool);
  EXPECT_EQ(factory_.made(), 2u);  // both at cap, nobody waits yet

  RecordingWaiter& waiter = NewWaiter();
  EXPECT_EQ(pool.Acquire(waiter).outcome, NodePool::AcquireOutcome::kQueued);
  EXPECT_EQ(factory_.made(), 3u);
}

TEST_F(NodePoolTest, NeverMoreThanMaxConnectionsWhateverTheNumberOfWaiters) {
  NodePool& pool = MakeReadyPool();  // max 3, 2 streams each
  for (int i = 0; i < 200; ++i) {
    pool.Acquire(NewWaiter());
    EXPECT_LE(factory_.made(), 3u);
  }
  for (size_t i = 1; i < factory_.made(); ++i) factory_.conn(i).Connect();

  EXPECT_EQ(factory_.made(), 3u);
  EXPECT_EQ(pool.stats().total(), 3u);
  EXPECT_EQ(pool.stats().streams_in_flight, 6u);
}

TEST_F(NodePoolTest, DrainingConnectionsCountTowardsMaxConnections) {
  NodePoolOptions options = DefaultOptions();
  options.max_connections = 2;
  options.max_streams_per_connection = 1;
  NodePool& pool = MakeReadyPool(options);
  AcquireNow(pool);
  factory_.conn(0).GoAway();  // in-flight stream keeps it open, draining
  ASSERT_EQ(factory_.made(), 2u);
  factory_.conn(1).Connect();
  AcquireNow(pool);

  RecordingWaiter& waiter = NewWaiter();
  EXPECT_EQ(pool.Acquire(waiter).outcome, NodePool::AcquireOutcome::kQueued);
  EXPECT_EQ(factory_.made(), 2u);  // 1 draining + 1 busy = max

  factory_.conn(0).StreamClosed();
  factory_.conn(0).Close();
  EXPECT_EQ(factory_.made(), 3u);  // the draining one is gone: room for one more
  EXPECT_EQ(pool.stats().total(), 2u);
}

TEST_F(NodePoolTest, WaitersAreServedFifoWhenAStreamIsReleased) {
  NodePool& pool = MakeBusyPool();
  std::vector<int> order;
  RecordingWaiter& w1 = NewWaiter(1, &order);
  RecordingWaiter& w2 = NewWaiter(2, &order);
  RecordingWaiter& w3 = NewWaiter(3, &order);
  pool.Acquire(w1);
  pool.Acquire(w2);
  pool.Acquire(w3);
  EXPECT_TRUE(order.empty());

  factory_.conn(0).StreamClosed();
  EXPECT_THAT(order, ElementsAre(1));
  factory_.conn(0).StreamClosed();
  EXPECT_THAT(order, ElementsAre(1, 2));
  factory_.conn(0).StreamClosed();
  EXPECT_THAT(order, ElementsAre(1, 2, 3));
  EXPECT_THAT(w3.ready_on(), ElementsAre(&factory_.conn(0)));
  EXPECT_EQ(budget_.used, 0u);
}

TEST_F(NodePoolTest, ReleaseUnusedReturnsTheSlotToTheNextWaiter) {
  NodePoolOptions options = DefaultOptions();
  options.max_connections = 1;
  options.max_streams_per_connection = 1;
  NodePool& pool = MakeReadyPool(options);
  PoolConnection* conn = AcquireNow(pool);
  RecordingWaiter& waiter = NewWaiter();
  pool.Acquire(waiter);

  pool.ReleaseUnused(conn);

  EXPECT_THAT(waiter.ready_on(), ElementsAre(conn));
}

TEST_F(NodePoolTest, QueueOverflowGivesResourceExhaustedNamingMaxPending) {
  budget_.limit = 2;
  NodePoolOptions options = DefaultOptions();
  options.max_connections = 1;
  NodePool& pool = MakePool(options);
  pool.Start();
  RecordingWaiter& w1 = NewWaiter();
  RecordingWaiter& w2 = NewWaiter();
  RecordingWaiter& w3 = NewWaiter();
  pool.Acquire(w1);
  pool.Acquire(w2);

  NodePool::AcquireResult result = pool.Acquire(w3);

  EXPECT_EQ(result.outcome, NodePool::AcquireOutcome::kFailed);
  EXPECT_EQ(result.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(result.status.message()), HasSubstr("upstream.max_pending"));
  EXPECT_EQ(w3.calls(), 0);
  EXPECT_EQ(pool.stats().waiting, 2u);
}

TEST_F(NodePoolTest, PendingBudgetIsSharedByNodePools) {
  budget_.limit = 2;
  NodePool& pool_a = MakePool();
  pool_a.Start();
  FakeConnectionFactory factory_b;
  NodePoolOptions options_b = DefaultOptions();
  options_b.node_name = "qdrant-1:6334";
  NodePool pool_b(options_b, budget_, factory_b, loop_, random_, nullptr);
  pool_b.Start();
  RecordingWaiter& a1 = NewWaiter();
  RecordingWaiter& a2 = NewWaiter();
  RecordingWaiter& b1 = NewWaiter();
  pool_a.Acquire(a1);
  pool_a.Acquire(a2);

  NodePool::AcquireResult result = pool_b.Acquire(b1);
  EXPECT_EQ(result.outcome, NodePool::AcquireOutcome::kFailed);
  EXPECT_EQ(result.status.code(), absl::StatusCode::kResourceExhausted);

  pool_a.CancelWait(a1);
  EXPECT_EQ(pool_b.Acquire(b1).outcome, NodePool::AcquireOutcome::kQueued);
  EXPECT_EQ(budget_.used, 2u);
}

TEST_F(NodePoolTest, AcquireTimeoutGivesUnavailableExactlyAtTheTimeout) {
  NodePool& pool = MakePool();
  pool.Start();
  RecordingWaiter& waiter = NewWaiter();
  pool.Acquire(waiter);

  loop_.Advance(1s - 1ns);
  EXPECT_EQ(waiter.calls(), 0);
  loop_.Advance(1ns);

  ASSERT_EQ(waiter.failures().size(), 1u);
  EXPECT_EQ(waiter.failures()[0].code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(waiter.failures()[0].message()), HasSubstr("upstream.acquire_timeout"));
  EXPECT_EQ(budget_.used, 0u);
  EXPECT_EQ(pool.stats().waiting, 0u);
}

TEST_F(NodePoolTest, EachWaiterTimesOutAtItsOwnDeadline) {
  NodePool& pool = MakePool();
  pool.Start();
  RecordingWaiter& early = NewWaiter();
  RecordingWaiter& late = NewWaiter();
  pool.Acquire(early);
  loop_.Advance(400ms);
  pool.Acquire(late);

  loop_.Advance(600ms);
  EXPECT_EQ(early.failures().size(), 1u);
  EXPECT_EQ(late.calls(), 0);
  loop_.Advance(400ms - 1ns);
  EXPECT_EQ(late.calls(), 0);
  loop_.Advance(1ns);
  EXPECT_EQ(late.failures().size(), 1u);
}

TEST_F(NodePoolTest, CancellingTheOldestWaiterKeepsTheNextOnesDeadline) {
  NodePool& pool = MakePool();
  pool.Start();
  RecordingWaiter& cancelled = NewWaiter();
  RecordingWaiter& next = NewWaiter();
  pool.Acquire(cancelled);
  loop_.Advance(400ms);
  pool.Acquire(next);

  pool.CancelWait(cancelled);
  loop_.Advance(1s - 1ns);  // 1.4s after the first, 1s - 1ns after `next`
  EXPECT_EQ(next.calls(), 0);
  loop_.Advance(1ns);

  EXPECT_EQ(next.failures().size(), 1u);
  EXPECT_EQ(cancelled.calls(), 0);
}

TEST_F(NodePoolTest, CancelWaitRemovesTheWaiterWithNoCallbackAndFreesBudget) {
  NodePool& pool = MakeBusyPool();
  RecordingWaiter& cancelled = NewWaiter();
  RecordingWaiter& next = NewWaiter();
  pool.Acquire(cancelled);
  pool.Acquire(next);
  ASSERT_EQ(budget_.used, 2u);

  pool.CancelWait(cancelled);
  pool.CancelWait(cancelled);  // no-op once it is not queued

  EXPECT_EQ(budget_.used, 1u);
  EXPECT_EQ(pool.stats().waiting, 1u);
  factory_.conn(0).StreamClosed();
  EXPECT_EQ(next.ready_on().size(), 1u);
  loop_.Advance(5s);
  EXPECT_EQ(cancelled.calls(), 0);
}

TEST_F(NodePoolTest, GoAwayMovesTheConnectionToDraining) {
  NodePool& pool = MakeReadyPool();
  AcquireNow(pool);

  factory_.conn(0).GoAway();

  EXPECT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kDraining);
  EXPECT_EQ(pool.stats().draining, 1u);
  EXPECT_EQ(pool.stats().streams_in_flight, 1u);  // the in-flight stream finishes there
}

TEST_F(NodePoolTest, NoNewStreamsGoToADrainingConnection) {
  NodePool& pool = MakeReadyPool();
  factory_.conn(0).GoAway();  // has a free stream, but is draining
  RecordingWaiter& waiter = NewWaiter();

  EXPECT_EQ(pool.Acquire(waiter).outcome, NodePool::AcquireOutcome::kQueued);
  ASSERT_EQ(factory_.made(), 2u);
  factory_.conn(1).Connect();

  EXPECT_THAT(waiter.ready_on(), ElementsAre(&factory_.conn(1)));
}

TEST_F(NodePoolTest, StreamReleasedOnADrainingConnectionDoesNotMakeItReady) {
  NodePoolOptions options = DefaultOptions();
  options.max_connections = 1;
  NodePool& pool = MakeReadyPool(options);
  AcquireNow(pool);
  AcquireNow(pool);
  factory_.conn(0).GoAway();
  RecordingWaiter& waiter = NewWaiter();
  pool.Acquire(waiter);

  factory_.conn(0).StreamClosed();

  EXPECT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kDraining);
  EXPECT_EQ(waiter.calls(), 0);
  EXPECT_EQ(pool.stats().streams_in_flight, 1u);
}

TEST_F(NodePoolTest, GoAwayOpensAReplacementWhenUnderTheBound) {
  NodePool& pool = MakeReadyPool();
  AcquireNow(pool);

  factory_.conn(0).GoAway();

  EXPECT_EQ(factory_.made(), 2u);
  EXPECT_EQ(pool.StateOf(&factory_.conn(1)), ConnectionState::kConnecting);
}

TEST_F(NodePoolTest, GoAwayAtTheBoundOpensTheReplacementOnlyOnceTheDrainedOneCloses) {
  NodePoolOptions options = DefaultOptions();
  options.max_connections = 1;
  NodePool& pool = MakeReadyPool(options);
  AcquireNow(pool);

  factory_.conn(0).GoAway();
  EXPECT_EQ(factory_.made(), 1u);
  factory_.conn(0).StreamClosed();
  factory_.conn(0).Close();

  EXPECT_EQ(factory_.made(), 2u);
  EXPECT_EQ(pool.stats().total(), 1u);
}

TEST_F(NodePoolTest, ConnectFailureFailsWaitersWithUnavailableWhenNoConnectionIsUp) {
  NodePool& pool = MakePool();
  pool.Start();
  RecordingWaiter& waiter = NewWaiter();
  pool.Acquire(waiter);

  factory_.conn(0).FailConnect(absl::UnavailableError("connection refused"));

  ASSERT_EQ(waiter.failures().size(), 1u);
  EXPECT_EQ(waiter.failures()[0].code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(waiter.failures()[0].message()), HasSubstr("qdrant-0:6334"));
  EXPECT_THAT(std::string(waiter.failures()[0].message()), HasSubstr("connection refused"));
  EXPECT_EQ(budget_.used, 0u);
  EXPECT_FALSE(pool.usable());
}

TEST_F(NodePoolTest, ConnectFailureKeepsWaitersWhenAConnectionIsUp) {
  NodePoolOptions options = DefaultOptions();
  options.max_streams_per_connection = 1;
  NodePool& pool = MakeReadyPool(options);
  AcquireNow(pool);
  RecordingWaiter& waiter = NewWaiter();
  pool.Acquire(waiter);
  ASSERT_EQ(factory_.made(), 2u);

  factory_.conn(1).FailConnect();

  EXPECT_EQ(waiter.calls(), 0);
  EXPECT_TRUE(pool.usable());
  factory_.conn(0).StreamClosed();
  EXPECT_THAT(waiter.ready_on(), ElementsAre(&factory_.conn(0)));
}

TEST_F(NodePoolTest, ConnectBackoffDoublesUpToTheMaxWithFullJitterAtItsCeiling) {
  random_.set(1.0);             // the top of the jitter range: the backoff ceiling itself
  NodePool& pool = MakePool();  // base 100ms, max 1s
  pool.Start();
  const std::vector<Duration> expected = {100ms, 200ms, 400ms, 800ms, 1s, 1s};
  for (size_t i = 0; i < expected.size(); ++i) {
    ASSERT_EQ(factory_.made(), i + 1);
    factory_.conn(i).FailConnect();
    EXPECT_EQ(loop_.NextTimerIn(), expected[i]) << "failure " << i + 1;
    EXPECT_EQ(pool.stats().consecutive_connect_failures, i + 1);
    loop_.Advance(expected[i]);
  }
}

TEST_F(NodePoolTest, ConnectBackoffIsAUniformDrawBelowTheCeiling) {
  random_.set(0.5);
  NodePool& pool = MakePool();
  pool.Start();
  const std::vector<Duration> expected = {50ms, 100ms, 200ms, 400ms, 500ms};
  for (size_t i = 0; i < expected.size(); ++i) {
    ASSERT_EQ(factory_.made(), i + 1);
    factory_.conn(i).FailConnect();
    EXPECT_EQ(loop_.NextTimerIn(), expected[i]) << "failure " << i + 1;
    loop_.Advance(expected[i]);
  }
}

TEST_F(NodePoolTest, ReconnectsAfterTheBackoff) {
  NodePool& pool = MakePool();
  pool.Start();
  factory_.conn(0).FailConnect();

  loop_.Advance(100ms - 1ns);
  EXPECT_EQ(factory_.made(), 1u);
  loop_.Advance(1ns);
  ASSERT_EQ(factory_.made(), 2u);
  factory_.conn(1).Connect();

  EXPECT_TRUE(pool.usable());
  EXPECT_EQ(AcquireNow(pool), &factory_.conn(1));
}

TEST_F(NodePoolTest, AcquireDuringBackoffFailsFast) {
  NodePool& pool = MakePool();
  pool.Start();
  factory_.conn(0).FailConnect(absl::UnavailableError("connection refused"));
  RecordingWaiter& waiter = NewWaiter();

  NodePool::AcquireResult result = pool.Acquire(waiter);

  EXPECT_EQ(result.outcome, NodePool::AcquireOutcome::kFailed);
  EXPECT_EQ(result.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(result.status.message()), HasSubstr("connection refused"));
  EXPECT_EQ(waiter.calls(), 0);
  EXPECT_EQ(budget_.used, 0u);
  EXPECT_EQ(factory_.made(), 1u);  // no connection attempt during the backoff
}

TEST_F(NodePoolTest, SuccessfulConnectResetsTheBackoff) {
  NodePool& pool = MakePool();
  pool.Start();
  factory_.conn(0).FailConnect();
  loop_.Advance(100ms);
  factory_.conn(1).FailConnect();
  EXPECT_EQ(loop_.NextTimerIn(), 200ms);
  loop_.Advance(200ms);

  factory_.conn(2).Connect();
  EXPECT_EQ(pool.stats().consecutive_connect_failures, 0u);
  factory_.conn(2).Close(absl::UnavailableError("connection reset"));
  ASSERT_EQ(factory_.made(), 4u);  // min_connections reopens at once
  factory_.conn(3).FailConnect();

  EXPECT_EQ(loop_.NextTimerIn(), 100ms);  // back to the base, not 400ms
}

TEST_F(NodePoolTest, ShutdownFailsWaitersAndDrainsConnections) {
  NodePoolOptions options = DefaultOptions();
  options.max_streams_per_connection = 1;
  NodePool& pool = MakeReadyPool(options);
  AcquireNow(pool);
  RecordingWaiter& waiter = NewWaiter();
  pool.Acquire(waiter);
  ASSERT_EQ(factory_.made(), 2u);  // conn(1) is connecting for the waiter

  pool.Shutdown();

  ASSERT_EQ(waiter.failures().size(), 1u);
  EXPECT_EQ(waiter.failures()[0].code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(budget_.used, 0u);
  EXPECT_EQ(factory_.conn(0).drain_calls(), 1);
  EXPECT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kDraining);
  EXPECT_EQ(factory_.conn(1).abort_calls(), 1);  // nothing in flight on a connecting one
  EXPECT_EQ(pool.stats().consecutive_connect_failures, 0u);  // an abort is no connect failure
  EXPECT_EQ(loop_.NextTimerIn(), Duration::max());           // and arms no backoff
  RecordingWaiter& late = NewWaiter();
  EXPECT_EQ(pool.Acquire(late).outcome, NodePool::AcquireOutcome::kFailed);

  factory_.conn(0).StreamClosed();
  factory_.conn(0).Close();
  EXPECT_EQ(pool.stats().total(), 0u);
  EXPECT_EQ(factory_.made(), 2u);  // no new connection after shutdown
}

TEST_F(NodePoolTest, PeerLoweringMaxStreamsMovesTheConnectionToBusy) {
  NodePoolOptions options = DefaultOptions();
  options.max_streams_per_connection = 10;
  NodePool& pool = MakeReadyPool(options, /*peer_max_streams=*/10);
  AcquireNow(pool);
  AcquireNow(pool);

  factory_.conn(0).PeerMaxStreams(2);

  EXPECT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kBusy);
  RecordingWaiter& waiter = NewWaiter();
  EXPECT_EQ(pool.Acquire(waiter).outcome, NodePool::AcquireOutcome::kQueued);
}

TEST_F(NodePoolTest, PeerRaisingMaxStreamsServesWaiters) {
  NodePoolOptions options = DefaultOptions();
  options.max_connections = 1;
  options.max_streams_per_connection = 10;
  NodePool& pool = MakeReadyPool(options, /*peer_max_streams=*/1);
  AcquireNow(pool);
  RecordingWaiter& waiter = NewWaiter();
  pool.Acquire(waiter);

  factory_.conn(0).PeerMaxStreams(5);

  EXPECT_THAT(waiter.ready_on(), ElementsAre(&factory_.conn(0)));
  EXPECT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kReady);
}

// A waiter whose callback runs `then` once, to exercise callbacks that call back into the pool.
class ReentrantWaiter : public RecordingWaiter {
 public:
  using RecordingWaiter::RecordingWaiter;
  void OnStreamReady(PoolConnection* conn) override {
    RecordingWaiter::OnStreamReady(conn);
    RunThen();
  }
  void OnAcquireFailed(const absl::Status& status) override {
    RecordingWaiter::OnAcquireFailed(status);
    RunThen();
  }
  std::function<void()> then;

 private:
  void RunThen() {
    if (!then) return;
    auto fn = std::move(then);
    then = nullptr;
    fn();
  }
};

TEST_F(NodePoolTest, WaiterMayReleaseItsSlotFromItsCallback) {
  NodePool& pool = MakeBusyPool();
  std::vector<int> order;
  ReentrantWaiter first(1, &order);
  RecordingWaiter& second = NewWaiter(2, &order);
  first.then = [&] { pool.ReleaseUnused(first.ready_on().back()); };
  pool.Acquire(first);
  pool.Acquire(second);

  factory_.conn(0).StreamClosed();

  EXPECT_THAT(order, ElementsAre(1, 2));
  EXPECT_EQ(pool.stats().streams_in_flight, 1u);
  EXPECT_EQ(budget_.used, 0u);
}

TEST_F(NodePoolTest, AcquireFromAWaiterCallbackDoesNotOvertakeOlderWaiters) {
  NodePoolOptions options = DefaultOptions();
  options.max_connections = 1;
  options.max_streams_per_connection = 10;
  NodePool& pool = MakeReadyPool(options, /*peer_max_streams=*/1);
  AcquireNow(pool);
  std::vector<int> order;
  ReentrantWaiter first(1, &order);
  RecordingWaiter& second = NewWaiter(2, &order);
  RecordingWaiter& newcomer = NewWaiter(3, &order);
  first.then = [&] { pool.Acquire(newcomer); };
  pool.Acquire(first);
  pool.Acquire(second);

  factory_.conn(0).PeerMaxStreams(3);  // two slots free at once

  EXPECT_THAT(order, ElementsAre(1, 2));  // `second` waited longer than `newcomer`
  EXPECT_EQ(newcomer.calls(), 0);
  EXPECT_EQ(pool.stats().waiting, 1u);
}

TEST_F(NodePoolTest, WaiterMayAcquireAgainFromItsTimeoutCallback) {
  NodePool& pool = MakePool();
  pool.Start();
  ReentrantWaiter waiter;
  waiter.then = [&] { EXPECT_EQ(pool.Acquire(waiter).outcome, NodePool::AcquireOutcome::kQueued); };
  pool.Acquire(waiter);

  loop_.Advance(1s);
  EXPECT_EQ(waiter.failures().size(), 1u);
  EXPECT_EQ(budget_.used, 1u);
  loop_.Advance(1s);

  EXPECT_EQ(waiter.failures().size(), 2u);
  EXPECT_EQ(budget_.used, 0u);
}

TEST_F(NodePoolTest, DestructorAbortsConnections) {
  NodePoolOptions options = DefaultOptions();
  options.max_streams_per_connection = 1;
  NodePool& pool = MakeReadyPool(options);
  AcquireNow(pool);
  RecordingWaiter& waiter = NewWaiter();
  pool.Acquire(waiter);
  ASSERT_EQ(factory_.made(), 2u);

  pool_.reset();

  EXPECT_EQ(factory_.conn(0).abort_calls(), 1);
  EXPECT_EQ(factory_.conn(1).abort_calls(), 1);
  EXPECT_EQ(budget_.used, 0u);
  EXPECT_EQ(waiter.calls(), 0);
}

// Health probes never wait behind app calls (docs/security.md).

TEST_F(NodePoolTest, ProbeTakesAFreeSlotAheadOfQueuedCalls) {
  NodePoolOptions options = DefaultOptions();
  options.max_connections = 2;
  options.max_streams_per_connection = 1;
  NodePool& pool = MakeReadyPool(options);
  AcquireNow(pool);  // the only ready connection is now busy
  RecordingWaiter& app = NewWaiter(1);
  ASSERT_EQ(pool.Acquire(app).outcome, NodePool::AcquireOutcome::kQueued);  // opens conn 1
  RecordingWaiter& probe = NewWaiter(2);
  probe.set_probe();
  // Conn 0 is at upstream.max_streams_per_connection, but the node allows more: the headroom.
  NodePool::AcquireResult result = pool.Acquire(probe);
  EXPECT_EQ(result.outcome, NodePool::AcquireOutcome::kReady);
  EXPECT_EQ(result.connection, &factory_.conn(0));
  EXPECT_EQ(app.calls(), 0);  // the app call still waits for its connection
  EXPECT_EQ(budget_.used, 1u);
}

TEST_F(NodePoolTest, ProbeAtTheNodesOwnLimitWaitsAheadOfAppCalls) {
  NodePool& pool = MakeBusyPool(DefaultOptions(), /*peer_max_streams=*/1);
  std::vector<int> order;
  RecordingWaiter& app1 = NewWaiter(1, &order);
  RecordingWaiter& app2 = NewWaiter(2, &order);
  RecordingWaiter& probe = NewWaiter(3, &order);
  probe.set_probe();
  ASSERT_EQ(pool.Acquire(app1).outcome, NodePool::AcquireOutcome::kQueued);
  ASSERT_EQ(pool.Acquire(app2).outcome, NodePool::AcquireOutcome::kQueued);
  ASSERT_EQ(pool.Acquire(probe).outcome, NodePool::AcquireOutcome::kQueued);
  EXPECT_EQ(budget_.used, 2u) << "a probe takes no place in upstream.max_pending";
  factory_.conn(0).StreamClosed();
  EXPECT_THAT(order, ElementsAre(3));  // the probe first, though it came last
  factory_.conn(0).StreamClosed();
  EXPECT_THAT(order, ElementsAre(3, 1));
  EXPECT_EQ(pool.stats().waiting, 1u);
}

TEST_F(NodePoolTest, ProbeIsNotRefusedWhenTheQueueIsFull) {
  NodePoolOptions options = DefaultOptions();
  options.max_connections = 1;
  options.max_streams_per_connection = 1;
  budget_.limit = 1;
  NodePool& pool = MakeReadyPool(options, /*peer_max_streams=*/1);
  AcquireNow(pool);
  RecordingWaiter& app = NewWaiter(1);
  ASSERT_EQ(pool.Acquire(app).outcome, NodePool::AcquireOutcome::kQueued);
  RecordingWaiter& overflow = NewWaiter(2);
  EXPECT_EQ(pool.Acquire(overflow).outcome, NodePool::AcquireOutcome::kFailed);
  RecordingWaiter& probe = NewWaiter(3);
  probe.set_probe();
  EXPECT_EQ(pool.Acquire(probe).outcome, NodePool::AcquireOutcome::kQueued);
}

TEST_F(NodePoolTest, QueuedProbeTimesOutAndCancelsLikeAnyWaiter) {
  NodePoolOptions options = DefaultOptions();
  options.max_connections = 1;
  options.max_streams_per_connection = 1;
  NodePool& pool = MakeReadyPool(options, /*peer_max_streams=*/1);
  AcquireNow(pool);
  RecordingWaiter& probe = NewWaiter(1);
  probe.set_probe();
  ASSERT_EQ(pool.Acquire(probe).outcome, NodePool::AcquireOutcome::kQueued);
  EXPECT_EQ(pool.LongestWait(), Duration::zero());
  loop_.Advance(options.acquire_timeout);
  ASSERT_EQ(probe.failures().size(), 1u);
  EXPECT_EQ(probe.failures()[0].code(), absl::StatusCode::kUnavailable);
  RecordingWaiter& probe2 = NewWaiter(2);
  probe2.set_probe();
  ASSERT_EQ(pool.Acquire(probe2).outcome, NodePool::AcquireOutcome::kQueued);
  pool.CancelWait(probe2);
  factory_.conn(0).StreamClosed();
  EXPECT_EQ(probe2.calls(), 0);
  EXPECT_EQ(pool.stats().waiting, 0u);
}

// Fair sharing between app connections (ShareAccount, upstream.max_connection_share).

TEST_F(NodePoolTest, QueueServesAccountsInTurnNotInArrivalOrder) {
  NodePool& pool = MakeBusyPool();
  ShareAccount& a = NewAccount();
  ShareAccount& b = NewAccount();
  std::vector<int> order;
  for (int i = 1; i <= 3; ++i) {
    RecordingWaiter& w = NewWaiter(i, &order);  // 1, 2, 3: connection a
    w.set_account(&a);
    ASSERT_EQ(pool.Acquire(w).outcome, NodePool::AcquireOutcome::kQueued);
  }
  RecordingWaiter& lone = NewWaiter(10, &order);  // connection b, after a's three
  lone.set_account(&b);
  ASSERT_EQ(pool.Acquire(lone).outcome, NodePool::AcquireOutcome::kQueued);
  EXPECT_EQ(a.queued, 3u);
  EXPECT_EQ(b.queued, 1u);
  for (int i = 0; i < 4; ++i) {
    factory_.conn(0).StreamClosed();
    for (auto& waiter : waiters_) pool.ReleaseShare(*waiter);  // each call ends at once
  }
  EXPECT_THAT(order, ElementsAre(1, 10, 2, 3));
  EXPECT_EQ(a.queued + b.queued, 0u);
  EXPECT_EQ(budget_.used, 0u);
}

TEST_F(NodePoolTest, OneAccountsDeepQueueDelaysAnotherByOneTurnAtMost) {
  NodePool& pool = MakeBusyPool();
  ShareAccount& flood = NewAccount();
  ShareAccount& app = NewAccount();
  for (int i = 0; i < 500; ++i) {
    RecordingWaiter& w = NewWaiter();
    w.set_account(&flood);
    ASSERT_EQ(pool.Acquire(w).outcome, NodePool::AcquireOutcome::kQueued);
  }
  RecordingWaiter& single = NewWaiter();
  single.set_account(&app);
  ASSERT_EQ(pool.Acquire(single).outcome, NodePool::AcquireOutcome::kQueued);
  factory_.conn(0).StreamClosed();  // the flood's turn
  EXPECT_EQ(single.calls(), 0);
  factory_.conn(0).StreamClosed();  // the app's
  EXPECT_EQ(single.ready_on().size(), 1u);
}

TEST_F(NodePoolTest, AnAccountAtItsStreamShareWaitsWhileOthersGoAhead) {
  NodePoolOptions options = DefaultOptions();
  options.max_connections = 1;
  options.max_streams_per_connection = 4;
  options.max_connection_share = 0.5;  // 2 of the 4 slots per connection
  NodePool& pool = MakeReadyPool(options);
  EXPECT_EQ(pool.StreamShareCap(), 2u);
  ShareAccount& a = NewAccount();
  ShareAccount& b = NewAccount();
  RecordingWaiter& a1 = NewWaiter(1);
  RecordingWaiter& a2 = NewWaiter(2);
  RecordingWaiter& a3 = NewWaiter(3);
  RecordingWaiter& b1 = NewWaiter(4);
  for (RecordingWaiter* w : {&a1, &a2, &a3}) w->set_account(&a);
  b1.set_account(&b);
  EXPECT_EQ(pool.Acquire(a1).outcome, NodePool::AcquireOutcome::kReady);
  EXPECT_EQ(pool.Acquire(a2).outcome, NodePool::AcquireOutcome::kReady);
  EXPECT_EQ(a.streams, 2u);
  // A free slot, but a is at its share: its third call waits, b's goes ahead.
  EXPECT_EQ(pool.Acquire(a3).outcome, NodePool::AcquireOutcome::kQueued);
  EXPECT_EQ(pool.Acquire(b1).outcome, NodePool::AcquireOutcome::kReady);
  EXPECT_EQ(pool.stats().streams_in_flight, 3u);
  // One of a's calls ends: its stream closes, then the call lets go of its share.
  factory_.conn(0).StreamClosed();
  EXPECT_EQ(a3.calls(), 0);
  pool.ReleaseShare(a1);
  EXPECT_EQ(a3.calls(), 0) << "served from inside ReleaseShare";
  loop_.Advance(Duration::zero());
  EXPECT_EQ(a3.ready_on().size(), 1u);
  EXPECT_EQ(a.streams, 2u);
}

TEST_F(NodePoolTest, AnAccountPastItsQueueShareIsRefusedNamingTheKey) {
  NodePoolOptions options = DefaultOptions();
  options.max_connections = 1;
  options.max_streams_per_connection = 1;
  options.max_connection_share = 0.5;
  budget_.limit = 4;  // 2 queue places per account
  NodePool& pool = MakeReadyPool(options);
  AcquireNow(pool);
  ShareAccount& a = NewAccount();
  ShareAccount& b = NewAccount();
  for (int i = 0; i < 2; ++i) {
    RecordingWaiter& w = NewWaiter();
    w.set_account(&a);
    ASSERT_EQ(pool.Acquire(w).outcome, NodePool::AcquireOutcome::kQueued);
  }
  RecordingWaiter& third = NewWaiter();
  third.set_account(&a);
  NodePool::AcquireResult refused = pool.Acquire(third);
  ASSERT_EQ(refused.outcome, NodePool::AcquireOutcome::kFailed);
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.status.message()), HasSubstr("upstream.max_connection_share"));
  RecordingWaiter& other = NewWaiter();
  other.set_account(&b);
  EXPECT_EQ(pool.Acquire(other).outcome, NodePool::AcquireOutcome::kQueued);
}

TEST_F(NodePoolTest, AWaiterGoneWhileHoldingASlotGivesItsShareBack) {
  NodePool& pool = MakeReadyPool();
  ShareAccount& a = NewAccount();
  {
    RecordingWaiter w;
    w.set_account(&a);
    ASSERT_EQ(pool.Acquire(w).outcome, NodePool::AcquireOutcome::kReady);
    EXPECT_EQ(a.streams, 1u);
  }
  EXPECT_EQ(a.streams, 0u);
  RecordingWaiter w2;
  w2.set_account(&a);
  ASSERT_EQ(pool.Acquire(w2).outcome, NodePool::AcquireOutcome::kReady);
  pool.ReleaseShare(w2);
  pool.ReleaseShare(w2);  // idempotent
  EXPECT_EQ(a.streams, 0u);
}

}  // namespace
}  // namespace qpool::pool

namespace qpool::pool {
namespace {

TEST_F(NodePoolTest, LongestWaitIsTheOldestWaitersWaitSoFar) {
  NodePool& pool = MakePool();
  pool.Start();
  EXPECT_EQ(pool.LongestWait(), Duration::zero());
  RecordingWaiter& first = NewWaiter();
  RecordingWaiter& second = NewWaiter();
  pool.Acquire(first);
  loop_.Advance(300ms);
  pool.Acquire(second);
  loop_.Advance(200ms);
  EXPECT_EQ(pool.LongestWait(), Duration(500ms));
  pool.CancelWait(first);
  EXPECT_EQ(pool.LongestWait(), Duration(200ms));
}

TEST_F(NodePoolTest, ConnectionsListsEachConnectionWithStateStreamsAndCap) {
  NodePool& pool = MakeReadyPool(DefaultOptions(), /*peer_max_streams=*/1);
  AcquireNow(pool);  // the first connection is now at its cap (peer allows 1)
  RecordingWaiter& waiter = NewWaiter();
  pool.Acquire(waiter);  // opens a second connection
  const std::vector<NodePool::ConnectionInfo> rows = pool.Connections();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].state, ConnectionState::kConnecting);
  EXPECT_EQ(rows[1].state, ConnectionState::kBusy);
  EXPECT_EQ(rows[1].streams, 1u);
  EXPECT_EQ(rows[1].stream_cap, 1u);
}

}  // namespace
}  // namespace qpool::pool

// --- Recycling -------------------------------------------------------------------------------

namespace qpool::pool {
namespace {

class RecyclingTest : public NodePoolTest {
 protected:
  // DefaultOptions() with max_connection_age on.
  static NodePoolOptions AgeOptions(Duration age) {
    NodePoolOptions options = DefaultOptions();
    options.max_connection_age = age;
    return options;
  }
};

TEST_F(RecyclingTest, AgeLimitsStayWithinTenPercentOfMaxConnectionAge) {
  NodePoolOptions options = AgeOptions(100s);
  options.max_connections = 1;
  NodePool& pool = MakePool(options, &seeded_);
  pool.Start();
  Duration shortest = Duration::max();
  Duration longest = Duration::zero();
  constexpr int kConnections = 200;
  for (int i = 0; i < kConnections; ++i) {
    ASSERT_EQ(factory_.made(), static_cast<size_t>(i + 1));
    FakeConnection& conn = factory_.conn(i);
    conn.Connect();
    // The maintenance timer is the only one armed: it fires at this connection's age limit.
    const Duration age = loop_.NextTimerIn();
    shortest = std::min(shortest, age);
    longest = std::max(longest, age);
    EXPECT_GE(age, Duration(90s)) << "connection " << i;
    EXPECT_LT(age, Duration(110s)) << "connection " << i;
    loop_.Advance(age);
    ASSERT_EQ(pool.StateOf(&conn), ConnectionState::kDraining) << "connection " << i;
    ASSERT_EQ(conn.drain_calls(), 1);
    conn.Close();  // the drain finished; the replacement opens
  }
  // Spread over the range, not one fixed factor.
  EXPECT_LT(shortest, Duration(92s));
  EXPECT_GT(longest, Duration(108s));
}

TEST_F(RecyclingTest, ConnectionAtItsAgeDrainsAndAReplacementOpens) {
  NodePool& pool = MakePool(AgeOptions(10min), &no_jitter_);
  pool.Start();
  factory_.conn(0).Connect();

  loop_.Advance(10min - 1ms);
  EXPECT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kReady);
  EXPECT_EQ(factory_.conn(0).drain_calls(), 0);
  EXPECT_EQ(factory_.made(), 1u);

  loop_.Advance(1ms);
  EXPECT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kDraining);
  EXPECT_EQ(factory_.conn(0).drain_calls(), 1);
  EXPECT_EQ(factory_.conn(0).abort_calls(), 0);
  ASSERT_EQ(factory_.made(), 2u);  // min_connections 1: the replacement
  EXPECT_EQ(pool.StateOf(&factory_.conn(1)), ConnectionState::kConnecting);
  factory_.conn(1).Connect();
  EXPECT_EQ(AcquireNow(pool), &factory_.conn(1));

  factory_.conn(0).Close();
  EXPECT_THAT(observer_.closed, ElementsAre(CloseReason::kRecycled));
}

TEST_F(RecyclingTest, BusyConnectionAtItsAgeDrainsWithoutFailingItsStreams) {
  NodePool& pool = MakePool(AgeOptions(10min), &no_jitter_);
  pool.Start();
  factory_.conn(0).Connect();
  AcquireNow(pool);
  AcquireNow(pool);
  ASSERT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kBusy);

  loop_.Advance(10min);

  EXPECT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kDraining);
  EXPECT_EQ(factory_.conn(0).drain_calls(), 1);  // GOAWAY once they end; never an abort
  EXPECT_EQ(factory_.conn(0).abort_calls(), 0);
  EXPECT_EQ(pool.stats().streams_in_flight, 2u);
  // The two streams finish on the draining connection; new calls go to the replacement.
  ASSERT_EQ(factory_.made(), 2u);
  factory_.conn(1).Connect();
  EXPECT_EQ(AcquireNow(pool), &factory_.conn(1));
  factory_.conn(0).StreamClosed();
  factory_.conn(0).StreamClosed();
  EXPECT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kDraining);
  EXPECT_EQ(pool.stats().streams_in_flight, 1u);
  EXPECT_EQ(factory_.conn(0).abort_calls(), 0);
  factory_.conn(0).Close();
  EXPECT_THAT(observer_.closed, ElementsAre(CloseReason::kRecycled));
}

TEST_F(RecyclingTest, RecycleAllDrainsEachConnectionWithinTheSpreadWithoutFailingItsStreams) {
  NodePoolOptions options = DefaultOptions();
  options.min_connections = 2;
  NodePool& pool = MakePool(options, &no_jitter_);  // each draw 0.5: half the spread
  pool.Start();
  ASSERT_EQ(factory_.made(), 2u);
  factory_.conn(0).Connect();  // conn(1) is still connecting
  AcquireNow(pool);

  pool.RecycleAll(2s);  // new TLS material, say
  loop_.Advance(1s - 1ms);
  EXPECT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kReady);
  loop_.Advance(1ms);
  EXPECT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kDraining);
  EXPECT_EQ(factory_.conn(0).drain_calls(), 1);
  EXPECT_EQ(factory_.conn(0).abort_calls(), 0);
  EXPECT_EQ(pool.stats().streams_in_flight, 1u);  // its stream runs on

  // The one that was connecting when the material changed is recycled as soon as it is up.
  factory_.conn(1).Connect();
  loop_.Advance(0ms);
  EXPECT_EQ(pool.StateOf(&factory_.conn(1)), ConnectionState::kDraining);
  EXPECT_EQ(factory_.conn(1).abort_calls(), 0);
  // Replacements, made after the change, are left alone.
  ASSERT_GE(factory_.made(), 3u);
  factory_.conn(2).Connect();
  loop_.Advance(10s);
  EXPECT_EQ(pool.StateOf(&factory_.conn(2)), ConnectionState::kReady);
  factory_.conn(0).StreamClosed();
  factory_.conn(0).Close();
  EXPECT_THAT(observer_.closed, ElementsAre(CloseReason::kRecycled));
}

TEST_F(RecyclingTest, AtMaxConnectionsOneQueuedCallsWaitForTheReplacement) {
  NodePoolOptions options = AgeOptions(10min);
  options.max_connections = 1;
  NodePool& pool = MakePool(options, &no_jitter_);
  pool.Start();
  factory_.conn(0).Connect();
  AcquireNow(pool);  // in flight while the connection reaches its age
  loop_.Advance(10min);
  ASSERT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kDraining);
  EXPECT_EQ(factory_.made(), 1u);  // at the bound: no replacement while it drains

  RecordingWaiter& waiter = NewWaiter();
  EXPECT_EQ(pool.Acquire(waiter).outcome, NodePool::AcquireOutcome::kQueued);
  loop_.Advance(900ms);  // within acquire_timeout (1s)
  EXPECT_EQ(waiter.calls(), 0);

  factory_.conn(0).StreamClosed();  // the in-flight call ends; the drained connection closes
  factory_.conn(0).Close();
  ASSERT_EQ(factory_.made(), 2u);
  factory_.conn(1).Connect();

  EXPECT_THAT(waiter.ready_on(), ElementsAre(&factory_.conn(1)));
  EXPECT_TRUE(waiter.failures().empty());
  EXPECT_LE(pool.stats().total(), 1u);
}

TEST_F(RecyclingTest, AtMaxConnectionsOneQueuedCallsTimeOutAfterAcquireTimeoutAsUsual) {
  NodePoolOptions options = AgeOptions(10min);
  options.max_connections = 1;
  NodePool& pool = MakePool(options, &no_jitter_);
  pool.Start();
  factory_.conn(0).Connect();
  AcquireNow(pool);  // a long call keeps the drained connection open
  loop_.Advance(10min);
  RecordingWaiter& waiter = NewWaiter();
  ASSERT_EQ(pool.Acquire(waiter).outcome, NodePool::AcquireOutcome::kQueued);

  loop_.Advance(1s);

  ASSERT_EQ(waiter.failures().size(), 1u);
  EXPECT_EQ(waiter.failures()[0].code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(waiter.failures()[0].message()), HasSubstr("upstream.acquire_timeout"));
  EXPECT_EQ(pool.stats().streams_in_flight, 1u);  // the long call is still in flight
}

TEST_F(RecyclingTest, MaxRequestsDrainsRightAfterTheNthStreamIsHandedOut) {
  NodePoolOptions options = DefaultOptions();
  options.max_streams_per_connection = 10;
  options.max_requests_per_connection = 3;
  NodePool& pool = MakeReadyPool(options);
  EXPECT_EQ(AcquireNow(pool), &factory_.conn(0));
  EXPECT_EQ(AcquireNow(pool), &factory_.conn(0));
  EXPECT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kReady);

  EXPECT_EQ(AcquireNow(pool), &factory_.conn(0));  // the third is still handed out

  EXPECT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kDraining);
  // Drain() waits for a later turn of the loop, so the caller opens its stream first.
  EXPECT_EQ(factory_.conn(0).drain_calls(), 0);
  loop_.RunPosted();
  EXPECT_EQ(factory_.conn(0).drain_calls(), 1);
  EXPECT_EQ(pool.stats().streams_in_flight, 3u);
  ASSERT_EQ(factory_.made(), 2u);  // the replacement
  factory_.conn(1).Connect();
  EXPECT_EQ(AcquireNow(pool), &factory_.conn(1));
  for (int i = 0; i < 3; ++i) factory_.conn(0).StreamClosed();
  factory_.conn(0).Close();
  EXPECT_THAT(observer_.closed, ElementsAre(CloseReason::kRecycled));
}

TEST_F(RecyclingTest, MaxRequestsCountsStreamsHandedToWaiters) {
  NodePoolOptions options = DefaultOptions();
  options.max_streams_per_connection = 10;
  options.max_requests_per_connection = 1;
  NodePool& pool = MakePool(options);
  pool.Start();
  RecordingWaiter& first = NewWaiter();
  RecordingWaiter& second = NewWaiter();
  pool.Acquire(first);
  pool.Acquire(second);
  ASSERT_EQ(factory_.made(), 2u);  // a connecting connection takes at most 1 stream here

  factory_.conn(0).Connect();

  EXPECT_THAT(first.ready_on(), ElementsAre(&factory_.conn(0)));
  EXPECT_EQ(second.calls(), 0);  // conn(0) took its one stream and drains
  EXPECT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kDraining);
  factory_.conn(1).Connect();
  EXPECT_THAT(second.ready_on(), ElementsAre(&factory_.conn(1)));
}

TEST_F(RecyclingTest, IdleTimeoutClosesOnlyConnectionsAboveMinConnections) {
  NodePoolOptions options = DefaultOptions();
  options.max_streams_per_connection = 1;
  options.idle_timeout = 5min;
  NodePool& pool = MakeReadyPool(options);
  AcquireNow(pool);
  RecordingWaiter& a = NewWaiter();
  RecordingWaiter& b = NewWaiter();
  pool.Acquire(a);
  factory_.conn(1).Connect();
  pool.Acquire(b);
  factory_.conn(2).Connect();
  ASSERT_EQ(pool.stats().busy, 3u);
  loop_.Advance(10min);  // busy connections are not idle, however long
  EXPECT_EQ(pool.stats().draining, 0u);
  for (size_t i = 0; i < 3; ++i) factory_.conn(i).StreamClosed();

  loop_.Advance(5min - 1ms);
  EXPECT_EQ(pool.stats().draining, 0u);
  loop_.Advance(1ms);

  EXPECT_EQ(pool.stats().draining, 2u);  // 3 up, min_connections 1
  EXPECT_EQ(pool.stats().ready, 1u);
  int drained = 0;
  for (size_t i = 0; i < 3; ++i) {
    drained += factory_.conn(i).drain_calls();
    if (pool.StateOf(&factory_.conn(i)) == ConnectionState::kDraining) factory_.conn(i).Close();
  }
  EXPECT_EQ(drained, 2);
  EXPECT_THAT(observer_.closed, ElementsAre(CloseReason::kIdle, CloseReason::kIdle));
  loop_.Advance(1h);  // the last one stays: it is the floor
  EXPECT_EQ(pool.stats().ready, 1u);
  EXPECT_EQ(pool.stats().draining, 0u);
  EXPECT_EQ(factory_.made(), 3u);
}

TEST_F(RecyclingTest, IdlePeriodRestartsWhenTheConnectionCarriesAStream) {
  NodePoolOptions options = DefaultOptions();
  options.min_connections = 0;
  options.idle_timeout = 5min;
  NodePool& pool = MakePool(options);
  RecordingWaiter& waiter = NewWaiter();
  pool.Acquire(waiter);  // min_connections 0: the first call opens the connection
  factory_.conn(0).Connect();
  factory_.conn(0).StreamClosed();  // idle from now
  loop_.Advance(4min);
  AcquireNow(pool);
  factory_.conn(0).StreamClosed();  // idle again, from 4min

  loop_.Advance(5min - 1ms);  // 9min: 5min after the first idle start, not after the last
  EXPECT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kReady);
  loop_.Advance(1ms);
  EXPECT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kDraining);
  EXPECT_EQ(factory_.made(), 1u);  // min_connections 0: no replacement
}

TEST_F(RecyclingTest, ZeroTurnsRecyclingOff) {
  NodePool& pool = MakeReadyPool();  // DefaultOptions(): age, requests and idle all 0
  for (int i = 0; i < 1000; ++i) {
    AcquireNow(pool);
    factory_.conn(0).StreamClosed();
  }
  loop_.Advance(24h);
  EXPECT_EQ(pool.StateOf(&factory_.conn(0)), ConnectionState::kReady);
  EXPECT_EQ(factory_.conn(0).drain_calls(), 0);
  EXPECT_EQ(loop_.NextTimerIn(), Duration::max());
}

TEST_F(RecyclingTest, ShutdownStopsTheMaintenanceTimer) {
  NodePoolOptions options = AgeOptions(10min);
  options.idle_timeout = 5min;
  NodePool& pool = MakeReadyPool(options);
  ASSERT_NE(loop_.NextTimerIn(), Duration::max());
  pool.Shutdown();
  EXPECT_EQ(loop_.NextTimerIn(), Duration::max());
  factory_.conn(0).Close();
  EXPECT_THAT(observer_.closed, ElementsAre(CloseReason::kShutdown));
}

TEST_F(RecyclingTest, CloseReasonsReachTheObserver) {
  NodePool& pool = MakeReadyPool();
  factory_.conn(0).GoAway();
  factory_.conn(0).Close();  // the drain after the peer's GOAWAY finished
  ASSERT_EQ(factory_.made(), 2u);
  factory_.conn(1).Connect();
  factory_.conn(1).Close(absl::UnavailableError("connection reset by peer"));
  ASSERT_EQ(factory_.made(), 3u);
  factory_.conn(2).Connect();
  pool.Shutdown();
  factory_.conn(2).Close();

  EXPECT_THAT(observer_.closed,
              ElementsAre(CloseReason::kGoAway, CloseReason::kError, CloseReason::kShutdown));
  EXPECT_STREQ(CloseReasonName(CloseReason::kRecycled), "recycled");
  EXPECT_STREQ(CloseReasonName(CloseReason::kIdle), "idle");
}

// --- node set changes (config reload, DNS discovery) ---------------------------------------

TEST_F(NodePoolTest, RetireLetsCallsInFlightFinishThenDrainsEachConnection) {
  NodePool& pool = MakeReadyPool();
  PoolConnection* first = AcquireNow(pool);
  AcquireNow(pool);  // the first connection is at its cap of 2
  ASSERT_EQ(first, &factory_.conn(0));

  pool.Retire();

  EXPECT_TRUE(pool.retired());
  EXPECT_FALSE(pool.gone());
  loop_.RunPosted();
  EXPECT_EQ(factory_.conn(0).drain_calls(), 0) << "drained with streams still open";
  factory_.conn(0).StreamClosed();
  loop_.RunPosted();
  EXPECT_EQ(factory_.conn(0).drain_calls(), 0);
  factory_.conn(0).StreamClosed();
  loop_.RunPosted();
  EXPECT_EQ(factory_.conn(0).drain_calls(), 1);
  EXPECT_EQ(pool.stats().draining, 1u);
  factory_.conn(0).Close();
  EXPECT_TRUE(pool.gone());
  EXPECT_EQ(factory_.made(), 1u) << "a retired pool reopened a connection for min_connections";
  EXPECT_THAT(observer_.closed, ElementsAre(CloseReason::kShutdown));
}

TEST_F(NodePoolTest, RetireStillServesCallsAlreadyQueued) {
  NodePoolOptions options = DefaultOptions();
  options.max_connections = 1;
  NodePool& pool = MakeReadyPool(options);
  AcquireNow(pool);
  AcquireNow(pool);
  RecordingWaiter& queued = NewWaiter();
  ASSERT_EQ(pool.Acquire(queued).outcome, NodePool::AcquireOutcome::kQueued);

  pool.Retire();
  factory_.conn(0).StreamClosed();

  EXPECT_THAT(queued.ready_on(), ElementsAre(&factory_.conn(0)));
  EXPECT_TRUE(queued.failures().empty());
  factory_.conn(0).StreamClosed();
  factory_.conn(0).StreamClosed();
  loop_.RunPosted();
  EXPECT_EQ(factory_.conn(0).drain_calls(), 1);
}

TEST_F(NodePoolTest, NeverConnectedUntilItOpensItsFirstConnection) {
  NodePoolOptions options = DefaultOptions();
  options.min_connections = 0;  // a REST pool's default: nothing opens before the first call
  NodePool& pool = MakePool(options);
  pool.Start();
  EXPECT_TRUE(pool.never_connected());
  EXPECT_EQ(factory_.made(), 0u);

  RecordingWaiter& first = NewWaiter();
  ASSERT_EQ(pool.Acquire(first).outcome, NodePool::AcquireOutcome::kQueued);

  EXPECT_EQ(factory_.made(), 1u);
  EXPECT_FALSE(pool.never_connected()) << "a connect under way is not a fresh pool any more";
  factory_.conn(0).Connect();
  EXPECT_FALSE(pool.never_connected());
}

TEST_F(NodePoolTest, UpdateOptionsRaisesTheConnectionBoundForWaitingCalls) {
  NodePoolOptions options = DefaultOptions();
  options.max_connections = 1;
  NodePool& pool = MakeReadyPool(options);
  AcquireNow(pool);
  AcquireNow(pool);
  RecordingWaiter& queued = NewWaiter();
  ASSERT_EQ(pool.Acquire(queued).outcome, NodePool::AcquireOutcome::kQueued);
  EXPECT_EQ(factory_.made(), 1u);

  options.max_connections = 2;
  options.node_name = "ignored";
  pool.UpdateOptions(options);

  EXPECT_EQ(factory_.made(), 2u) << "the raised bound opens a connection for the waiting call";
  factory_.conn(1).Connect();
  EXPECT_THAT(queued.ready_on(), ElementsAre(&factory_.conn(1)));
  EXPECT_EQ(pool.options().node_name, "qdrant-0:6334");
}

TEST_F(NodePoolTest, UpdateOptionsLoweringTheBoundDrainsIdleConnectionsAboveIt) {
  NodePoolOptions options = DefaultOptions();
  options.min_connections = 3;
  NodePool& pool = MakePool(options);
  pool.Start();
  for (size_t i = 0; i < 3; ++i) factory_.conn(i).Connect();
  PoolConnection* busy = AcquireNow(pool);

  options.min_connections = 1;
  options.max_connections = 1;
  pool.UpdateOptions(options);
  loop_.RunPosted();

  EXPECT_EQ(pool.stats().draining, 2u);
  EXPECT_EQ(pool.StateOf(busy), ConnectionState::kReady) << "the connection with a call stays";
}

}  // namespace
}  // namespace qpool::pool
