// Cost of one acquire + release on NodePool, the pool's hot path (issue 2: p99 < 2 µs).
//
// The pool runs with fake connections and the unit tests' FakeEventLoop, so this measures the
// pool's own bookkeeping (list moves, waiter queue, acquire timer re-arming), not sockets or
// nghttp2. The fake timer's Arm() is a std::map insert plus a std::function, which is in the same
// range as an Asio steady_timer's heap insert; treat the queued numbers as indicative of it.
//
// Two paths:
//   Immediate: a ready connection has spare streams; Acquire() returns kReady and the release
//              (OnStreamClosed) puts the slot back.
//   Queued:    the only stream is taken; Acquire() queues the waiter (and arms the acquire timer),
//              then the holder's release hands the slot to the waiter (OnStreamReady). The waiter
//              then holds it, ready for the next iteration.
//
// How the numbers are made, honestly:
//   * BM_*Mean: no per-operation clock. Google Benchmark's time per iteration is the mean cost of
//     one acquire+release pair.
//   * BM_*Latency: each pair is timed on its own with steady_clock (vDSO, TSC clocksource on the
//     reference machine) and kept; the counters p50_ns, p99_ns, p999_ns and max_ns are order
//     statistics over every pair of the final run (no sampling, no batching, nothing dropped).
//     They include one clock read per pair, whose own cost is reported as clock_ns (the median of
//     back-to-back reads) and is NOT subtracted, so the percentiles err on the high side. This
//     benchmark's time per iteration is inflated by that clock read; use BM_*Mean for the mean.
//   Single-threaded, as a NodePool is: it belongs to one I/O worker.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "daemon/pool/node_pool.h"
#include "tests/unit/fake_event_loop.h"

namespace qpool::pool {
namespace {

using SteadyClock = std::chrono::steady_clock;

class BenchConnection : public PoolConnection {
 public:
  explicit BenchConnection(PoolConnectionEvents& events) : events_(events) {}
  void Drain() override {}
  void Abort() override {
    if (done_) return;
    done_ = true;
    events_.OnClosed(this, absl::CancelledError("benchmark over"));
  }
  PoolConnectionEvents& events() { return events_; }

 private:
  PoolConnectionEvents& events_;
  bool done_ = false;
};

class BenchFactory : public ConnectionFactory {
 public:
  std::shared_ptr<PoolConnection> Connect(PoolConnectionEvents& events) override {
    auto conn = std::make_shared<BenchConnection>(events);
    made.push_back(conn);
    return conn;
  }
  std::vector<std::shared_ptr<BenchConnection>> made;
};

// Remembers the connection it was handed, so the benchmark can release it.
class BenchWaiter : public StreamWaiter {
 public:
  void OnStreamReady(PoolConnection* conn) override { conn_ = conn; }
  void OnAcquireFailed(const absl::Status& status) override { std::abort(); }
  PoolConnection* conn_ = nullptr;
};

// A pool of `connections` ready connections with `cap` streams each.
struct Bench {
  Bench(uint32_t connections, uint32_t cap) {
    NodePoolOptions options;
    options.node_name = "bench:6334";
    options.min_connections = connections;
    options.max_connections = connections;
    options.max_streams_per_connection = cap;
    pool = std::make_unique<NodePool>(options, budget, factory, loop, random, nullptr);
    pool->Start();
    for (auto& conn : factory.made) conn->events().OnConnected(conn.get(), UINT32_MAX);
  }
  void Release(PoolConnection* conn) {
    static_cast<BenchConnection*>(conn)->events().OnStreamClosed(conn);
  }

  testing::FakeEventLoop loop;
  testing::FakeRandom random;
  PendingBudget budget{1024, 0};
  BenchFactory factory;
  std::unique_ptr<NodePool> pool;
};

// Immediate path: 4 connections, 100 streams each, 50 streams already in flight.
struct ImmediateBench : Bench {
  ImmediateBench() : Bench(4, 100) {
    for (int i = 0; i < 50; ++i) held.push_back(pool->Acquire(waiter).connection);
  }
  void AcquireRelease() {
    NodePool::AcquireResult result = pool->Acquire(waiter);
    if (result.outcome != NodePool::AcquireOutcome::kReady) std::abort();
    Release(result.connection);
  }
  BenchWaiter waiter;
  std::vector<PoolConnection*> held;
};

// Queued path: 1 connection with 1 stream, always taken; every acquire queues and is served by
// the holder's release.
struct QueuedBench : Bench {
  QueuedBench() : Bench(1, 1) { holder = pool->Acquire(waiters[0]).connection; }
  void AcquireRelease() {
    BenchWaiter& waiter = waiters[next];
    next ^= 1;
    if (pool->Acquire(waiter).outcome != NodePool::AcquireOutcome::kQueued) std::abort();
    Release(holder);  // hands the slot to `waiter`
    holder = waiter.conn_;
    if (holder == nullptr) std::abort();
    waiter.conn_ = nullptr;
  }
  BenchWaiter waiters[2];
  int next = 1;
  PoolConnection* holder = nullptr;
};

// The median cost of one steady_clock::now(), the overhead inside each latency sample.
double ClockReadNs() {
  std::vector<int64_t> samples(10001);
  for (auto& sample : samples) {
    const auto a = SteadyClock::now();
    const auto b = SteadyClock::now();
    sample = std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count();
  }
  std::nth_element(samples.begin(), samples.begin() + samples.size() / 2, samples.end());
  return static_cast<double>(samples[samples.size() / 2]);
}

template <typename Fixture>
void RunMean(benchmark::State& state) {
  Fixture fixture;
  for (auto _ : state) fixture.AcquireRelease();
  state.SetItemsProcessed(state.iterations());
}

template <typename Fixture>
void RunLatency(benchmark::State& state) {
  Fixture fixture;
  std::vector<int64_t> latencies_ns;
  latencies_ns.reserve(state.max_iterations);
  for (auto _ : state) {
    const auto start = SteadyClock::now();
    fixture.AcquireRelease();
    const auto end = SteadyClock::now();
    latencies_ns.push_back(
        std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count());
  }
  if (latencies_ns.empty()) return;
  std::sort(latencies_ns.begin(), latencies_ns.end());
  auto percentile = [&](double p) {
    const size_t rank = static_cast<size_t>(p * static_cast<double>(latencies_ns.size() - 1));
    return static_cast<double>(latencies_ns[rank]);
  };
  state.counters["p50_ns"] = percentile(0.50);
  state.counters["p99_ns"] = percentile(0.99);
  state.counters["p999_ns"] = percentile(0.999);
  state.counters["max_ns"] = static_cast<double>(latencies_ns.back());
  state.counters["clock_ns"] = ClockReadNs();
}

void BM_ImmediateMean(benchmark::State& state) { RunMean<ImmediateBench>(state); }
void BM_ImmediateLatency(benchmark::State& state) { RunLatency<ImmediateBench>(state); }
void BM_QueuedMean(benchmark::State& state) { RunMean<QueuedBench>(state); }
void BM_QueuedLatency(benchmark::State& state) { RunLatency<QueuedBench>(state); }

BENCHMARK(BM_ImmediateMean);
BENCHMARK(BM_ImmediateLatency);
BENCHMARK(BM_QueuedMean);
BENCHMARK(BM_QueuedLatency);

}  // namespace
}  // namespace qpool::pool

BENCHMARK_MAIN();
