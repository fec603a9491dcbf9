// The fast health tier of one upstream connection: an HTTP/2 PING when the connection received no
// frame for the node's PING interval (health.fast_interval, backed off after a GOAWAY
// too_many_pings), and the connection closed when that PING is not acknowledged within
// health.fast_timeout (the pool then opens a replacement when it needs one).
//
//   PingKeepalive keepalive(loop, probes, node_index, metrics,
//                           {/*send_ping=*/[&] { ... }, /*close=*/[&](absl::Status why) { ... }});
//   keepalive.Start();       // the HTTP/2 handshake is done
//   keepalive.OnFrame();     // from the connection's frame callback, for every frame
//   keepalive.OnPingAck();   // a PING ack arrived
//   keepalive.Stop();        // the connection closed
//
// It asks its connection for two things only (Actions): queue a PING, and close. It counts
// pings_ok / pings_failed and observes the PING's round trip in the worker's metrics. Time comes
// through the EventLoop seam, so tests drive it with FakeEventLoop
// (tests/unit/ping_keepalive_test.cc). Thread-safety: none; it lives on its connection's worker
// thread.
#ifndef QPOOL_DAEMON_SERVER_PING_KEEPALIVE_H_
#define QPOOL_DAEMON_SERVER_PING_KEEPALIVE_H_

#include <cstddef>
#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "daemon/common/event_loop.h"

namespace qpool::metrics {
class WorkerMetrics;  // worker_metrics.h
}  // namespace qpool::metrics

namespace qpool::server {

// Where a keepalive reads the PING timing in force, at each arming: the worker's NodeProbes (the
// interval per node slot, backed off on GOAWAY too_many_pings; reset at each reload), or a test's
// fake.
class PingSchedule {
 public:
  // How long a connection to node slot `node` stays quiet before a PING; zero: no PINGs.
  virtual Duration PingInterval(size_t node) const = 0;
  // How long a PING waits for its ack before the connection is closed (health.fast_timeout).
  virtual Duration PingTimeout() const = 0;

 protected:
  ~PingSchedule() = default;
};

class PingKeepalive {
 public:
  // What the keepalive asks of its connection.
  struct Actions {
    // Queues an HTTP/2 PING and has it sent soon; false when the session would not take one (the
    // keepalive looks again one interval later).
    std::function<bool()> send_ping;
    // No ack within the timeout: close the connection with `why` (UNAVAILABLE, for the log and
    // the pool). The keepalive arms nothing more.
    std::function<void(const absl::Status& why)> close;
  };

  // `loop`, `schedule` and `metrics` must outlive the keepalive; `node` is the connection's node
  // slot (for the schedule and the per-node counters).
  PingKeepalive(EventLoop& loop, const PingSchedule& schedule, size_t node,
                metrics::WorkerMetrics& metrics, Actions actions);
  ~PingKeepalive();

  PingKeepalive(const PingKeepalive&) = delete;
  PingKeepalive& operator=(const PingKeepalive&) = delete;

  // The connection is up: the first look comes one interval from now (never when PINGs are off).
  void Start();
  // A frame arrived: the connection is not idle.
  void OnFrame() { frame_seen_ = true; }
  // A PING ack arrived. Counts ours (pings_ok, the round trip) and rearms; ignores the acks of
  // PINGs the keepalive did not send (nghttp2 acks the peer's PINGs itself).
  void OnPingAck();
  // The connection closed: no timer runs from now on.
  void Stop();

 private:
  // (Re)arms the timer `after` from now.
  void Arm(Duration after);
  void OnTimer();

  EventLoop& loop_;
  const PingSchedule& schedule_;
  const size_t node_;
  metrics::WorkerMetrics& metrics_;
  const Actions actions_;
  std::unique_ptr<Timer> timer_;
  bool frame_seen_ = false;        // a frame arrived since the timer was last armed
  bool ping_outstanding_ = false;  // our PING waits for its ack
  MonoTime ping_sent_at_{};
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_PING_KEEPALIVE_H_
