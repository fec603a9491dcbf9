#include "daemon/server/ping_keepalive.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "daemon/metrics/worker_metrics.h"

namespace qpool::server {

PingKeepalive::PingKeepalive(EventLoop& loop, const PingSchedule& schedule, size_t node,
                             metrics::WorkerMetrics& metrics, Actions actions)
    : loop_(loop),
      schedule_(schedule),
      node_(node),
      metrics_(metrics),
      actions_(std::move(actions)),
      timer_(loop.CreateTimer()) {}

PingKeepalive::~PingKeepalive() = default;

void PingKeepalive::Start() {
  const Duration interval = schedule_.PingInterval(node_);
  if (interval > Duration::zero()) Arm(interval);
}

void PingKeepalive::Stop() {
  timer_->Cancel();
  ping_outstanding_ = false;
}

void PingKeepalive::Arm(Duration after) {
  frame_seen_ = false;
  timer_->Arm(after, [this] { OnTimer(); });
}

void PingKeepalive::OnTimer() {
  if (ping_outstanding_) {
    ping_outstanding_ = false;
    metrics_.node(node_).pings_failed.Add();
    actions_.close(absl::UnavailableError(absl::StrCat(
        "no PING ack within ", absl::FormatDuration(absl::FromChrono(schedule_.PingTimeout())),
        " (health.fast_timeout): connection closed, the pool replaces it")));
    return;
  }
  const Duration interval = schedule_.PingInterval(node_);
  if (frame_seen_ || !actions_.send_ping()) {
    Arm(interval);  // not idle (or no PING possible now): look again one interval later
    return;
  }
  ping_outstanding_ = true;
  ping_sent_at_ = loop_.Now();
  Arm(schedule_.PingTimeout());
}

void PingKeepalive::OnPingAck() {
  if (!ping_outstanding_) return;
  ping_outstanding_ = false;
  metrics_.node(node_).pings_ok.Add();
  metrics_.ObservePing(loop_.Now() - ping_sent_at_);
  Arm(schedule_.PingInterval(node_));
}

}  // namespace qpool::server
