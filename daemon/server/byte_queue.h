// A FIFO of bytes in fixed-size chunks: what a call holds of one direction's body between the
// moment nghttp2 hands it over on one side and the moment the other side's data source takes it.
// Its size is bounded by the HTTP/2 stream window, since windows open only as bytes leave.
// Thread-safety: none; one call, one worker thread.
#ifndef QPOOL_DAEMON_SERVER_BYTE_QUEUE_H_
#define QPOOL_DAEMON_SERVER_BYTE_QUEUE_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>

namespace qpool::server {

class ByteQueue {
 public:
  static constexpr size_t kChunkSize = 16 * 1024;

  void Append(const uint8_t* data, size_t len) {
    while (len > 0) {
      if (chunks_.empty() || chunks_.back().end == kChunkSize) {
        chunks_.push_back(Chunk{std::make_unique<uint8_t[]>(kChunkSize), 0, 0});
      }
      Chunk& tail = chunks_.back();
      const size_t n = std::min(len, kChunkSize - tail.end);
      std::memcpy(tail.data.get() + tail.end, data, n);
      tail.end += n;
      data += n;
      len -= n;
      size_ += n;
    }
  }

  // Moves up to `max` bytes into `out`; returns how many.
  size_t Read(uint8_t* out, size_t max) {
    size_t copied = 0;
    while (copied < max && !chunks_.empty()) {
      Chunk& head = chunks_.front();
      const size_t n = std::min(max - copied, head.end - head.begin);
      std::memcpy(out + copied, head.data.get() + head.begin, n);
      head.begin += n;
      copied += n;
      if (head.begin == head.end) chunks_.pop_front();
    }
    size_ -= copied;
    return copied;
  }

  void Clear() {
    chunks_.clear();
    size_ = 0;
  }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  struct Chunk {
    std::unique_ptr<uint8_t[]> data;
    size_t begin;
    size_t end;
  };
  std::deque<Chunk> chunks_;
  size_t size_ = 0;
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_BYTE_QUEUE_H_
