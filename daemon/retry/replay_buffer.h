// The replay copy of one request: every request byte sent upstream, kept until the commit point
// (the first response headers that are not a whole answer) so that a failed attempt can be sent
// again. At most `limits.per_call` bytes per call and `limits.total` for all calls of the process
// together; a request that would pass either limit goes on without a copy, and is never retried
// (the refusal is reported once). Usable by any front door: it holds bytes, not frames.
//
//   ReplayBuffer replay(context.replay, context.events);
//   replay.Keep(sent, n);          // after each write upstream
//   if (replay.intact()) ...       // the request can be sent again
//   body.PrependFrom(replay.bytes());  // a retry resends the copy first
//   replay.Release();              // commit point
//
// Thread-safety: none; one call, one worker thread. `limits.total_bytes` is shared (atomic).
#ifndef QPOOL_DAEMON_RETRY_REPLAY_BUFFER_H_
#define QPOOL_DAEMON_RETRY_REPLAY_BUFFER_H_

#include <cstddef>
#include <cstdint>

#include "daemon/common/byte_queue.h"
#include "daemon/retry/retry_context.h"

namespace qpool::retry {

class ReplayBuffer {
 public:
  // `limits` and `events` (may be null) must outlive the buffer.
  ReplayBuffer(const ReplayLimits& limits, RetryEvents* events)
      : limits_(limits), events_(events), bytes_(limits.total_bytes) {}
  ReplayBuffer(const ReplayBuffer&) = delete;
  ReplayBuffer& operator=(const ReplayBuffer&) = delete;

  // Copies `n` bytes just sent, unless the copy is gone or they would pass a limit: then the copy
  // goes for good and the limit is reported (RetryEvents::OnReplayRefused).
  void Keep(const uint8_t* data, size_t n);
  // True while the copy holds every byte sent since the last rewind: the request can be replayed.
  bool intact() const { return intact_; }
  // The commit point, or an answer settled: the copy goes and nothing more is kept.
  void Release() {
    intact_ = false;
    bytes_.Clear();
  }
  // The copy itself: a retry moves it back in front of the unsent bytes (ByteQueue::PrependFrom),
  // a hedge copies it, and the method classifier reads its first message.
  ByteQueue& bytes() { return bytes_; }
  const ByteQueue& bytes() const { return bytes_; }
  size_t size() const { return bytes_.size(); }

 private:
  const ReplayLimits& limits_;
  RetryEvents* const events_;
  ByteQueue bytes_;
  bool intact_ = true;
};

}  // namespace qpool::retry

#endif  // QPOOL_DAEMON_RETRY_REPLAY_BUFFER_H_
