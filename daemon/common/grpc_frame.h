// The gRPC length-prefixed message frame, as it travels in HTTP/2 DATA: a flag byte (1 when the
// message is compressed with the call's grpc-encoding), a 4-byte big-endian length, the message.
//
//   std::string frame = GrpcFrame(request.SerializeAsString());   // 00 00 00 00 2a ...
//   size_t length = GrpcFrameLength(frame);                        // 42
//
// Thread-safety: pure functions.
#ifndef QPOOL_DAEMON_COMMON_GRPC_FRAME_H_
#define QPOOL_DAEMON_COMMON_GRPC_FRAME_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace qpool {

inline constexpr size_t kGrpcFramePrefixBytes = 5;

// The message length a frame's prefix announces; `frame` holds at least kGrpcFramePrefixBytes.
inline size_t GrpcFrameLength(std::string_view frame) {
  const auto byte = [&frame](size_t i) {
    return static_cast<size_t>(static_cast<uint8_t>(frame[i]));
  };
  return (byte(1) << 24) | (byte(2) << 16) | (byte(3) << 8) | byte(4);
}

// A frame around `message`.
inline std::string GrpcFrame(std::string_view message, bool compressed = false) {
  const auto length = static_cast<uint32_t>(message.size());
  std::string frame = {static_cast<char>(compressed ? 1 : 0), static_cast<char>(length >> 24),
                       static_cast<char>(length >> 16), static_cast<char>(length >> 8),
                       static_cast<char>(length)};
  frame.append(message);
  return frame;
}

}  // namespace qpool

#endif  // QPOOL_DAEMON_COMMON_GRPC_FRAME_H_
