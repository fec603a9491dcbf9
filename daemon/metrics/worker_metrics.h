// What one I/O worker counts, per node and per call, for /metrics. The worker thread writes
// (RelaxedCounter: no locks, no read-modify-write); the admin thread reads and sums over workers at
// scrape time. The objects live in the Proxy, so they outlive the workers that write them.
//
//   WorkerMetrics& m = context.metrics;  // a CallContext or ConnectionContext
//   m.RecordCall(MethodClass::kRead, /*grpc_code=*/0, call_duration);   // at a call's end
//   m.node(0).attempt_duration.Observe(attempt);                          // at an attempt's end
//   PoolMetricsObserver observer(m.node(0), loop, on_change);             // passed to NodePool
#ifndef QPOOL_DAEMON_METRICS_WORKER_METRICS_H_
#define QPOOL_DAEMON_METRICS_WORKER_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "daemon/common/event_loop.h"
#include "daemon/metrics/counters.h"
#include "daemon/metrics/method_class.h"
#include "daemon/pool/node_pool.h"
#include "daemon/retry/method_class.h"
#include "daemon/retry/retry_context.h"
#include "daemon/retry/retry_policy.h"
#include "daemon/tls/failure_reason.h"

namespace qpool::metrics {

// Why a retryable failure was not retried (docs/retries.md): qpool_retries_refused_total{reason}.
using retry::kRetryRefusalCount;
using retry::RetryRefusal;  // declared with the retry policy
// "max_attempts", "deadline", "budget", "in_flight".
const char* RetryRefusalName(RetryRefusal refusal);

// Which replay-buffer limit kept a request from being copied: per call or all calls together.
using retry::kReplayLimitCount;
using retry::ReplayLimit;                        // declared with the retry context
const char* ReplayLimitName(ReplayLimit limit);  // "per_call", "total"

inline constexpr size_t kRetryClassCount = 4;   // retry::RetryClass
inline constexpr size_t kRetryReasonCount = 5;  // retry::RetryReason, kNone included (unused)

// gRPC status codes 0..16, and one more slot for calls that ended with no status at all (a
// RST_STREAM from either side, or the app's connection lost).
inline constexpr size_t kGrpcCodeCount = 17;
inline constexpr size_t kNoStatusSlot = kGrpcCodeCount;
inline constexpr size_t kCodeSlots = kGrpcCodeCount + 1;
// "OK", "CANCELLED", ... "UNAUTHENTICATED"; "RESET" for kNoStatusSlot.
const char* CodeSlotName(size_t slot);

// REST calls: HTTP statuses 100..599, and one more slot for a request that ended with no status
// (the app's or Qdrant's connection lost mid-answer).
inline constexpr int kMinHttpStatus = 100;
inline constexpr size_t kHttpStatusSlots = 500 + 1;
inline constexpr size_t kNoHttpStatusSlot = 500;
// "200", "503", ...; "none" for kNoHttpStatusSlot.
std::string HttpStatusSlotName(size_t slot);

// One worker's counters for one upstream node.
struct NodeMetrics {
  RelaxedCounter connects;  // connections that finished the HTTP/2 handshake
  // Connects that failed or timed out, by tls::ConnectFailureSlot (a TLS reason, "connect",
  // "timeout", "other").
  std::array<RelaxedCounter, tls::kConnectFailureSlots> connect_failures;
  uint64_t ConnectFailures() const {
    uint64_t total = 0;
    for (const RelaxedCounter& c : connect_failures) total += c.Get();
    return total;
  }
  // TLS (upstream.tls): failed handshakes by tls::FailureReason, handshakes done, of which
  // resumed, and connections made without verifying the node (upstream.tls.verify: false).
  std::array<RelaxedCounter, tls::kFailureReasonCount> tls_failures;
  RelaxedCounter tls_handshakes;
  RelaxedCounter tls_resumptions;
  RelaxedCounter tls_unverified_connects;
  // Connections gone after they were up, by pool::CloseReason (as the pool classified it).
  std::array<RelaxedCounter, pool::kCloseReasonCount> disconnects;
  DurationHistogram connect_duration{WaitBounds()};  // connect start -> peer SETTINGS
  DurationHistogram wait_duration{WaitBounds()};     // per stream acquired; 0 when not queued
  RelaxedCounter queue_overflows;                    // upstream.max_pending reached
  RelaxedCounter acquire_timeouts;                   // upstream.acquire_timeout passed
  DurationHistogram attempt_duration{CallDurationBounds()};  // upstream stream open -> closed
  // This worker's retry budget for the node (tokens left), mirrored after each change.
  std::atomic<double> retry_tokens{0};
  // Health: the fast tier (HTTP/2 PING on idle connections) and passive ejection.
  RelaxedCounter pings_ok;      // PING acknowledged within health.fast_timeout
  RelaxedCounter pings_failed;  // not acknowledged: the connection was closed and replaced
  RelaxedCounter ejections;     // this worker's OutlierDetector ejected the node
  // Readiness mirrors, written by the worker after connection events, read by /readyz.
  // live: this worker has a connection to the node up (ready or busy).
  // failing: no connection up, and this worker's last connect to the node failed.
  // A worker that never tried (its share of min_connections is 0, no traffic) is neither.
  std::atomic<bool> live{false};
  std::atomic<bool> failing{false};
  // This worker's view: up, or may still connect.
  bool UsableHere() const {
    return live.load(std::memory_order_relaxed) || !failing.load(std::memory_order_relaxed);
  }
};

// The most node slots a process holds: nodes in the set plus removed ones still draining
// (upstream.nodes, DNS discovery). A node set change that needs more is refused.
inline constexpr size_t kMaxNodeSlots = 64;

class WorkerMetrics {
 public:
  // Slots 0..max(node_count, rest_node_count)-1 hold fresh counters; more come with ResetNode().
  // Every slot has both a node's counters (node(i)) and its REST pool's (rest_node(i)); the REST
  // ones are shown while rest.listen is on. The two counts are kept for callers that think in
  // gRPC nodes and REST endpoints (at start, one REST endpoint per node).
  explicit WorkerMetrics(size_t node_count, size_t rest_node_count = 0);

  // Worker thread: one finished call. `grpc_code` < 0 or > 16 for "no status" (reset).
  void RecordCall(MethodClass method_class, int grpc_code, std::chrono::nanoseconds duration) {
    const size_t klass = static_cast<size_t>(method_class);
    const size_t slot = grpc_code >= 0 && grpc_code < static_cast<int>(kGrpcCodeCount)
                            ? static_cast<size_t>(grpc_code)
                            : kNoStatusSlot;
    calls_[klass][slot].Add();
    call_duration_[klass].Observe(duration);
  }
  // Worker thread: one finished REST call. `http_status` outside 100..599 counts as "none".
  void RecordRestCall(MethodClass method_class, unsigned http_status,
                      std::chrono::nanoseconds duration) {
    const size_t klass = static_cast<size_t>(method_class);
    const size_t slot =
        http_status >= 100 && http_status < 600 ? http_status - kMinHttpStatus : kNoHttpStatusSlot;
    rest_calls_[klass][slot].Add();
    rest_call_duration_[klass].Observe(duration);
  }
  // Worker thread: a retry started, a retryable failure not retried, a request not copied.
  void RecordRetry(retry::RetryClass retry_class, retry::RetryReason reason) {
    retries_[static_cast<size_t>(retry_class)][static_cast<size_t>(reason)].Add();
  }
  void RecordRetryRefused(RetryRefusal refusal) {
    retries_refused_[static_cast<size_t>(refusal)].Add();
  }
  // A hedge started (won false), or a hedge answered first (won true).
  void RecordHedge(bool won) { (won ? hedges_won_ : hedges_).Add(); }
  void RecordReplayRefused(ReplayLimit limit) {
    replay_refusals_[static_cast<size_t>(limit)].Add();
  }
  void AddRequestBytes(uint64_t n) { request_bytes_.Add(n); }
  // A call routed in panic mode: no node was both healthy and not ejected, so all were eligible.
  void AddPanicRoute() { panic_routes_.Add(); }
  // Round trip of an acknowledged health PING (fast tier).
  void ObservePing(std::chrono::nanoseconds took) { ping_duration_.Observe(took); }
  void AddResponseBytes(uint64_t n) { response_bytes_.Add(n); }

  // Node slot `i`'s counters (i < node_count()). Any thread.
  NodeMetrics& node(size_t i) { return slot(i).node; }
  const NodeMetrics& node(size_t i) const { return slot(i).node; }
  size_t node_count() const { return node_count_.load(std::memory_order_acquire); }
  // Node slot `i`'s REST pool: connects, connect failures, disconnects, waits, overflows and
  // acquire timeouts (written by the REST side's PoolMetricsObserver), TLS handshakes (by its
  // connections); read by scrapes. Any thread.
  NodeMetrics& rest_node(size_t i) { return slot(i).rest; }
  const NodeMetrics& rest_node(size_t i) const { return slot(i).rest; }
  size_t rest_node_count() const { return node_count(); }
  // Gives slot `i` (< kMaxNodeSlots) fresh counters (gRPC and REST), for a node that takes it:
  // the node set changed (config reload, DNS). The old counters stay allocated until the
  // WorkerMetrics goes, so a scrape that read the old pointer reads valid memory. Called by the
  // one thread that changes node sets (the control thread), while no worker writes slot `i` (it
  // is free).
  void ResetNode(size_t i);

  // Any thread.
  uint64_t calls(MethodClass method_class, size_t slot) const {
    return calls_[static_cast<size_t>(method_class)][slot].Get();
  }
  const DurationHistogram& call_duration(MethodClass method_class) const {
    return call_duration_[static_cast<size_t>(method_class)];
  }
  uint64_t rest_calls(MethodClass method_class, size_t slot) const {
    return rest_calls_[static_cast<size_t>(method_class)][slot].Get();
  }
  const DurationHistogram& rest_call_duration(MethodClass method_class) const {
    return rest_call_duration_[static_cast<size_t>(method_class)];
  }
  uint64_t retries(retry::RetryClass retry_class, retry::RetryReason reason) const {
    return retries_[static_cast<size_t>(retry_class)][static_cast<size_t>(reason)].Get();
  }
  uint64_t retries_refused(RetryRefusal refusal) const {
    return retries_refused_[static_cast<size_t>(refusal)].Get();
  }
  uint64_t hedges() const { return hedges_.Get(); }
  uint64_t hedges_won() const { return hedges_won_.Get(); }
  uint64_t replay_refusals(ReplayLimit limit) const {
    return replay_refusals_[static_cast<size_t>(limit)].Get();
  }
  uint64_t request_bytes() const { return request_bytes_.Get(); }
  uint64_t response_bytes() const { return response_bytes_.Get(); }
  uint64_t panic_routes() const { return panic_routes_.Get(); }
  const DurationHistogram& ping_duration() const { return ping_duration_; }

 private:
  std::array<std::array<RelaxedCounter, kCodeSlots>, kMethodClassCount> calls_;
  std::array<DurationHistogram, kMethodClassCount> call_duration_;
  std::array<std::array<RelaxedCounter, kHttpStatusSlots>, kMethodClassCount> rest_calls_;
  std::array<DurationHistogram, kMethodClassCount> rest_call_duration_;
  std::array<std::array<RelaxedCounter, kRetryReasonCount>, kRetryClassCount> retries_;
  std::array<RelaxedCounter, kRetryRefusalCount> retries_refused_;
  std::array<RelaxedCounter, kReplayLimitCount> replay_refusals_;
  RelaxedCounter hedges_;
  RelaxedCounter hedges_won_;
  RelaxedCounter request_bytes_;   // gRPC message bytes (DATA payload) from apps
  RelaxedCounter response_bytes_;  // gRPC message bytes (DATA payload) from upstream, to apps
  RelaxedCounter panic_routes_;
  DurationHistogram ping_duration_{CallDurationBounds()};
  // A node slot's counters: the node's (gRPC pool, calls, health) and its REST pool's.
  struct SlotMetrics {
    NodeMetrics node;
    NodeMetrics rest;
  };
  SlotMetrics& slot(size_t i) const { return *slots_[i].load(std::memory_order_acquire); }

  std::array<std::atomic<SlotMetrics*>, kMaxNodeSlots> slots_{};
  std::atomic<size_t> node_count_{0};
  std::vector<std::unique_ptr<SlotMetrics>> owned_;  // control thread only
};

// The node is usable when some worker has a connection to it up, or when no worker has seen a
// connect fail since its last success (it may still connect): one worker's failure outweighs the
// other workers' not having tried. Any thread.
bool NodeUsable(const std::vector<const WorkerMetrics*>& workers, size_t node);

// The pool's metric hooks for one node of one worker. `on_change` runs (synchronously, on the
// worker thread) after an event that may change the node's readiness; the worker re-evaluates on
// a later turn of its loop, when the pool is done with the event.
//
// Connect latency pairs starts and ends in order (the hooks do not name the connection): exact
// when one connect per node and worker is in flight at a time, as it is except under bursts; the
// sum over a burst stays exact.
class PoolMetricsObserver : public pool::PoolObserver {
 public:
  PoolMetricsObserver(NodeMetrics& metrics, EventLoop& loop, std::function<void()> on_change)
      : metrics_(metrics), loop_(loop), on_change_(std::move(on_change)) {}

  void OnConnectionState(const pool::ConnectionState* from,
                         const pool::ConnectionState* to) override;
  void OnConnectFailed(const absl::Status& reason) override;
  void OnConnectionClosed(pool::CloseReason reason, const absl::Status& status) override;
  void OnStreamAcquired(Duration waited) override { metrics_.wait_duration.Observe(waited); }
  void OnQueueOverflow() override { metrics_.queue_overflows.Add(); }
  void OnAcquireTimeout() override { metrics_.acquire_timeouts.Add(); }

 private:
  NodeMetrics& metrics_;
  EventLoop& loop_;
  std::function<void()> on_change_;
  std::deque<MonoTime> connecting_since_;
};

}  // namespace qpool::metrics

#endif  // QPOOL_DAEMON_METRICS_WORKER_METRICS_H_
