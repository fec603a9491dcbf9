// The timeouts the worker's sweep applies to an app connection (docs/security.md): no HTTP/2
// preface and SETTINGS within server.handshake_timeout, or no stream open for
// server.idle_timeout. The data path only sets flags; the sweep asks Check() what is due, and the
// connection closes itself for it (DownstreamSession::OnTimeout).
//
//   ConnectionTimeouts timeouts(loop.Now());
//   timeouts.OnHandshakeDone();                         // the app's first SETTINGS arrived
//   timeouts.OnStreamOpened();                          // request HEADERS
//   switch (timeouts.Check(now, busy, handshake_timeout, idle_timeout)) { ... }  // each sweep
//
// The idle time is measured from the first sweep that saw the connection idle, so a close comes
// up to one sweep period late, and costs no clock read on the data path.
// Thread-safety: none; it belongs to one connection, on one worker's thread.
#ifndef QPOOL_DAEMON_SERVER_CONNECTION_TIMEOUTS_H_
#define QPOOL_DAEMON_SERVER_CONNECTION_TIMEOUTS_H_

#include <cstdint>

#include "daemon/common/event_loop.h"

namespace qpool::server {

class ConnectionTimeouts {
 public:
  enum class Action : uint8_t { kNone, kHandshakeTimeout, kIdleTimeout };

  // `accepted_at`: when the connection was accepted (the handshake timeout counts from there).
  explicit ConnectionTimeouts(MonoTime accepted_at) : accepted_at_(accepted_at) {}

  // The app's preface and first SETTINGS arrived.
  void OnHandshakeDone() { handshake_done_ = true; }
  // A stream opened (since the last sweep).
  void OnStreamOpened() { stream_opened_ = true; }

  // What is due at `now`. `busy`: the connection has calls, or is draining (never idle then).
  // A zero timeout is off.
  Action Check(MonoTime now, bool busy, Duration handshake_timeout, Duration idle_timeout) {
    if (!handshake_done_) {
      if (handshake_timeout > Duration::zero() && now - accepted_at_ >= handshake_timeout) {
        return Action::kHandshakeTimeout;
      }
      return Action::kNone;
    }
    if (busy || stream_opened_) {
      stream_opened_ = false;
      idle_since_ = MonoTime{};
      return Action::kNone;
    }
    if (idle_since_ == MonoTime{}) {
      idle_since_ = now;
      return Action::kNone;
    }
    if (idle_timeout > Duration::zero() && now - idle_since_ >= idle_timeout) {
      return Action::kIdleTimeout;
    }
    return Action::kNone;
  }

 private:
  const MonoTime accepted_at_;
  MonoTime idle_since_{};        // the sweep first saw no stream open; zero: not idle
  bool handshake_done_ = false;  // the app's preface and first SETTINGS arrived
  bool stream_opened_ = false;   // a stream opened since the last sweep
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_CONNECTION_TIMEOUTS_H_
