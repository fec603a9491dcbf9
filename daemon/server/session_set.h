// A worker's gRPC app connections (DownstreamSession): it adopts each accepted one, holds it until
// it closes, drains or aborts them all, and runs the one sweep timer that enforces the
// connections' timeouts (server.handshake_timeout, server.idle_timeout,
// server.stream_idle_timeout). After a crowd of connections left, it gives free heap back to the
// OS.
//
//   SessionSet sessions(connection_context, [this] { return rest_->idle(); });
//   sessions.StartSweep();                       // on the worker's thread, once
//   sessions.Adopt(std::move(socket), refuse);   // each accepted connection
//   sessions.Remove(session);                    // ConnectionHost::OnSessionClosed
//   sessions.BeginDrain(on_idle); ...; sessions.CheckDrained();
//
// What it asks of its owner: the ConnectionContext its sessions get (io_context, loop, counters,
// the config in force), whose ConnectionHost forwards OnSessionClosed() to Remove(); and
// `others_idle`, whether the owner's other app connections (REST) are gone too, for the drain.
// Thread-safety: none; it belongs to one worker's thread, like its sessions.
#ifndef QPOOL_DAEMON_SERVER_SESSION_SET_H_
#define QPOOL_DAEMON_SERVER_SESSION_SET_H_

#include <boost/asio/ip/tcp.hpp>
#include <cstddef>
#include <functional>
#include <memory>
#include <unordered_map>

#include "daemon/common/event_loop.h"
#include "daemon/server/connection_context.h"

namespace qpool::config {
struct ServerConfig;  // config.h
}  // namespace qpool::config

namespace qpool::server {

// When to give free heap back to the OS. After a crowd of app connections leaves (a deploy, a
// load test), glibc keeps the freed memory in its arenas, and the sidecar's RSS stays at its
// peak: once a worker holds half the connections it held at its peak (of at least kMinPeak),
// the free pages go back, and the peak restarts from there.
class TrimWatermark {
 public:
  static constexpr size_t kMinPeak = 256;
  // A connection closed; `held` are left. True: trim now.
  bool Closed(size_t held);

 private:
  size_t peak_ = 0;  // most connections held after a close since the last trim
};

class SessionSet {
 public:
  // `context` must outlive the set; `others_idle` (may be empty: nothing else) is asked by
  // CheckDrained().
  SessionSet(ConnectionContext& context, std::function<bool()> others_idle);
  ~SessionSet();
  SessionSet(const SessionSet&) = delete;
  SessionSet& operator=(const SessionSet&) = delete;

  // The sweep period for `server`'s timeouts: a quarter of the shortest one, between 50 ms and
  // 1 s, so a timeout fires at most a period late; zero when all three are off (no sweep).
  static Duration SweepPeriod(const config::ServerConfig& server);

  // Arms the sweep timer (period from the config in force now), unless SweepPeriod() is zero.
  void StartSweep();
  // Takes an accepted app connection (bound to the context's io_context) and starts it; it is
  // refused with a GOAWAY when `refuse` (server.max_client_connections reached) or when draining.
  void Adopt(boost::asio::ip::tcp::socket socket, bool refuse);
  // Session `session` closed: lets go of it after the current event, then CheckDrained().
  void Remove(DownstreamSession* session);
  // Sends GOAWAY to every session; `on_idle` runs (on this thread, once) when a CheckDrained()
  // finds no session left and `others_idle()`. The owner calls CheckDrained() once its other
  // connections were told to drain, and whenever they may have become idle.
  void BeginDrain(std::function<void()> on_idle);
  void CheckDrained();
  // Aborts every session and stops the sweep (the worker stops).
  void Stop();
  size_t size() const { return sessions_.size(); }

 private:
  // Closes sessions past their handshake or idle timeout, frees idle ones' write buffers, and
  // resets streams stalled past server.stream_idle_timeout; then re-arms.
  void Sweep();

  ConnectionContext& context_;
  const std::function<bool()> others_idle_;
  std::unordered_map<DownstreamSession*, std::shared_ptr<DownstreamSession>> sessions_;
  std::unique_ptr<Timer> sweep_timer_;  // Sweep(); null when every timeout is off
  Duration sweep_period_{};
  TrimWatermark trim_;
  std::function<void()> on_drained_;
  bool draining_ = false;
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_SESSION_SET_H_
