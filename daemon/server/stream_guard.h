// Per-stream guards against app clients that stop reading or writing, or send oversize messages
// (docs/security.md): the stall watch behind server.stream_idle_timeout, the gRPC length-prefix
// check behind server.max_message_size, and the names of the reasons a stream is ended for (the
// `reason` label of qpool_downstream_stream_resets_total).
//
//   StreamStallWatch watch;            // one per call
//   watch.OnProgress();                // a request DATA chunk arrived, a response DATA frame left
//   if (watch.Stalled(waiting_on_app, now, timeout)) ResetStream(...);   // the periodic sweep
//
// Thread-safety: none; a watch belongs to one call, on one worker's thread.
#ifndef QPOOL_DAEMON_SERVER_STREAM_GUARD_H_
#define QPOOL_DAEMON_SERVER_STREAM_GUARD_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "daemon/common/event_loop.h"

namespace qpool::server {

// Why qpoold reset an app stream on both sides.
enum class StreamResetReason : uint8_t {
  kBufferLimit,  // the connection held more unread response bytes than
                 // server.connection_buffer_limit: its stream holding the most is reset
  kStreamIdle,   // the stream waited on the app with no progress for server.stream_idle_timeout
  kMessageSize,  // a request message over server.max_message_size: answered RESOURCE_EXHAUSTED,
                 // or reset when the response had started
};
inline constexpr size_t kStreamResetReasonCount = 3;

inline constexpr std::string_view StreamResetReasonName(StreamResetReason reason) {
  constexpr std::array<std::string_view, kStreamResetReasonCount> kNames = {
      "buffer_limit", "stream_idle", "message_size"};
  return kNames[static_cast<size_t>(reason)];
}

// Tells a stream that waits on the app and gets nothing from it from one that is merely slow on
// the upstream side. The data path only bumps a counter; the sweep compares it with what it saw
// last time, so no clock is read per frame.
class StreamStallWatch {
 public:
  // The app sent request bytes, or took response bytes.
  void OnProgress() { progress_++; }

  // Called by the periodic sweep. `waiting_on_app`: the stream can only move if the app acts
  // (its request is not complete and the app may send, or response bytes wait for it to read).
  // True once the stream has waited on the app with no progress for at least `timeout`
  // (measured from the first sweep that saw it so: up to one sweep period late).
  bool Stalled(bool waiting_on_app, MonoTime now, Duration timeout) {
    if (!waiting_on_app || progress_ != seen_) {
      seen_ = progress_;
      stalled_since_ = MonoTime{};
      return false;
    }
    if (stalled_since_ == MonoTime{}) {
      stalled_since_ = now;
      return false;
    }
    return now - stalled_since_ >= timeout;
  }

 private:
  uint64_t progress_ = 0;
  uint64_t seen_ = 0;
  MonoTime stalled_since_{};  // zero: not seen stalled
};

// Follows the 5-byte gRPC length prefixes in one direction's bytes (server.max_message_size):
// reports a message whose declared length is over the limit as soon as its prefix is complete,
// before any of its body is passed on. Costs a compare per chunk plus a few per message; body
// bytes are skipped, not looked at.
class GrpcMessageSizeGuard {
 public:
  // Feeds the next `len` bytes; false once a message declared more than `limit` bytes (then
  // `declared()` is its length, and further calls keep returning false).
  bool Feed(const uint8_t* data, size_t len, uint32_t limit) {
    while (len > 0 && !over_) {
      if (body_left_ > 0) {
        const size_t skip = body_left_ < len ? static_cast<size_t>(body_left_) : len;
        body_left_ -= skip;
        data += skip;
        len -= skip;
        continue;
      }
      prefix_[prefix_have_++] = *data++;
      len--;
      if (prefix_have_ < 5) continue;
      prefix_have_ = 0;
      declared_ = (uint64_t{prefix_[1]} << 24) | (uint64_t{prefix_[2]} << 16) |
                  (uint64_t{prefix_[3]} << 8) | prefix_[4];
      if (declared_ > limit) over_ = true;
      body_left_ = declared_;
    }
    return !over_;
  }
  uint64_t declared() const { return declared_; }

 private:
  uint8_t prefix_[5] = {};
  uint8_t prefix_have_ = 0;
  bool over_ = false;
  uint64_t body_left_ = 0;
  uint64_t declared_ = 0;
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_STREAM_GUARD_H_
