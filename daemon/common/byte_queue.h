// A FIFO of bytes: what a call holds of one direction's body between the moment nghttp2 hands it
// over on one side and the moment the other side's data source takes it. Its size is bounded by
// the HTTP/2 stream window, since windows open only as bytes leave.
//
// Chunks are sized to what arrives (at least kMinChunk, at most kMaxChunk) and not zero-filled, so
// a small gRPC message costs one small allocation and an empty queue costs none.
// Used by the data path (server/) and the replay copy (retry/ReplayBuffer).
// Thread-safety: none; one call, one worker thread.
#ifndef QPOOL_DAEMON_COMMON_BYTE_QUEUE_H_
#define QPOOL_DAEMON_COMMON_BYTE_QUEUE_H_

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>

namespace qpool {

class ByteQueue {
 public:
  // Chunk sizes include the chunk header: a minimum chunk is 1 KiB in all, which glibc serves
  // from its per-thread cache.
  static constexpr size_t kMinChunk = 1024 - 32;
  static constexpr size_t kMaxChunk = 64 * 1024 - 32;

  // `gauge`, when given, follows the bytes held (shared by many queues: a process-wide total);
  // `local`, when given, too (a total of one thread's queues, such as an app connection's).
  explicit ByteQueue(std::atomic<int64_t>* gauge = nullptr, int64_t* local = nullptr)
      : gauge_(gauge), local_(local) {}
  ~ByteQueue() { Clear(); }
  ByteQueue(const ByteQueue&) = delete;
  ByteQueue& operator=(const ByteQueue&) = delete;

  void Append(const uint8_t* data, size_t len) {
    Track(static_cast<int64_t>(len));
    while (len > 0) {
      if (tail_ == nullptr || tail_->end == tail_->capacity) {
        AddChunk(std::clamp(len, kMinChunk, kMaxChunk));
      }
      const size_t n = std::min(len, tail_->capacity - tail_->end);
      std::memcpy(tail_->data() + tail_->end, data, n);
      tail_->end += n;
      data += n;
      len -= n;
      size_ += n;
    }
  }

  // Moves up to `max` bytes into `out`; returns how many.
  size_t Read(uint8_t* out, size_t max) {
    size_t copied = 0;
    while (copied < max && head_ != nullptr) {
      const size_t n = std::min(max - copied, head_->end - head_->begin);
      std::memcpy(out + copied, head_->data() + head_->begin, n);
      head_->begin += n;
      copied += n;
      if (head_->begin == head_->end) PopChunk();
    }
    size_ -= copied;
    Track(-static_cast<int64_t>(copied));
    return copied;
  }

  // Appends up to `max` bytes from the front to `out`, leaving the queue as it is; returns how
  // many.
  template <typename String>
  size_t CopyPrefix(size_t max, String& out) const {
    size_t copied = 0;
    for (const Chunk* chunk = head_; chunk != nullptr && copied < max; chunk = chunk->next) {
      const size_t n = std::min(max - copied, chunk->end - chunk->begin);
      out.append(reinterpret_cast<const char*>(chunk->data() + chunk->begin), n);
      copied += n;
    }
    return copied;
  }

  // Appends a copy of every byte of `other`, which stays as it is.
  void AppendCopyOf(const ByteQueue& other) {
    for (const Chunk* chunk = other.head_; chunk != nullptr; chunk = chunk->next) {
      Append(chunk->data() + chunk->begin, chunk->end - chunk->begin);
    }
  }

  // Moves every byte of `front` ahead of this queue's bytes; `front` ends empty.
  void PrependFrom(ByteQueue& front) {
    if (front.head_ == nullptr) return;
    front.tail_->next = head_;
    if (tail_ == nullptr) tail_ = front.tail_;
    head_ = front.head_;
    size_ += front.size_;
    Track(static_cast<int64_t>(front.size_));
    front.Track(-static_cast<int64_t>(front.size_));
    front.head_ = front.tail_ = nullptr;
    front.size_ = 0;
  }

  void Clear() {
    while (head_ != nullptr) PopChunk();
    Track(-static_cast<int64_t>(size_));
    size_ = 0;
  }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  struct Chunk {
    Chunk* next;
    size_t capacity;
    size_t begin;
    size_t end;
    uint8_t* data() { return reinterpret_cast<uint8_t*>(this + 1); }
    const uint8_t* data() const { return reinterpret_cast<const uint8_t*>(this + 1); }
  };
  static_assert(sizeof(Chunk) == 32);

  void Track(int64_t delta) {
    if (gauge_ != nullptr && delta != 0) gauge_->fetch_add(delta, std::memory_order_relaxed);
    if (local_ != nullptr) *local_ += delta;
  }

  void AddChunk(size_t capacity) {
    auto* chunk = static_cast<Chunk*>(::operator new(sizeof(Chunk) + capacity));
    *chunk = Chunk{nullptr, capacity, 0, 0};
    if (tail_ != nullptr) {
      tail_->next = chunk;
    } else {
      head_ = chunk;
    }
    tail_ = chunk;
  }

  void PopChunk() {
    Chunk* next = head_->next;
    ::operator delete(head_);
    head_ = next;
    if (head_ == nullptr) tail_ = nullptr;
  }

  std::atomic<int64_t>* const gauge_;
  int64_t* const local_;
  Chunk* head_ = nullptr;
  Chunk* tail_ = nullptr;
  size_t size_ = 0;
};

}  // namespace qpool

#endif  // QPOOL_DAEMON_COMMON_BYTE_QUEUE_H_
