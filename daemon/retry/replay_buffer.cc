#include "daemon/retry/replay_buffer.h"

namespace qpool::retry {

void ReplayBuffer::Keep(const uint8_t* data, size_t n) {
  if (!intact_ || n == 0) return;
  const int64_t total =
      limits_.total_bytes != nullptr ? limits_.total_bytes->load(std::memory_order_relaxed) : 0;
  ReplayLimit refused;
  if (bytes_.size() + n > limits_.per_call) {
    refused = ReplayLimit::kPerCall;
  } else if (total + static_cast<int64_t>(n) > limits_.total) {
    refused = ReplayLimit::kTotal;
  } else {
    bytes_.Append(data, n);
    return;
  }
  Release();
  if (events_ != nullptr) events_->OnReplayRefused(refused);
}

}  // namespace qpool::retry
