// Bytes waiting for a socket, and how far they have been written: an H2Transport's gathered
// HTTP/2 frames, and over TLS its records. Writes never block; what the socket does not take now
// stays for the next write.
//
//   buffer.Append(data, n);
//   boost::system::error_code ec = buffer.WriteTo(socket);   // would_block is not an error
//   if (buffer.pending() > 0) ...                              // wait until writable
//
// Thread-safety: none; a value owned by one transport.
#ifndef QPOOL_DAEMON_SERVER_WIRE_BUFFER_H_
#define QPOOL_DAEMON_SERVER_WIRE_BUFFER_H_

#include <boost/asio/ip/tcp.hpp>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace qpool::server {

class WireBuffer {
 public:
  // Bytes appended and not written yet.
  size_t pending() const { return bytes_.size() - offset_; }
  const uint8_t* unsent() const { return bytes_.data() + offset_; }
  void Append(const uint8_t* data, size_t n) { bytes_.insert(bytes_.end(), data, data + n); }
  // For a producer that appends to a vector itself (tls::TlsEngine::TakeOutput).
  std::vector<uint8_t>& bytes() { return bytes_; }
  void Clear() {
    bytes_.clear();
    offset_ = 0;
  }

  // Writes what is pending with one non-blocking write_some; returns its error, with would_block
  // (the socket is full) reported as none.
  boost::system::error_code WriteTo(boost::asio::ip::tcp::socket& socket) {
    boost::system::error_code ec;
    const size_t n = socket.write_some(boost::asio::buffer(unsent(), pending()), ec);
    if (ec == boost::asio::error::would_block) ec = {};
    offset_ += n;
    if (offset_ == bytes_.size()) Clear();
    return ec;
  }

  // Gives the storage back when nothing is pending and it grew beyond `capacity` bytes (0: always).
  void ShrinkTo(size_t capacity) {
    if (pending() == 0 && bytes_.capacity() > capacity) {
      std::vector<uint8_t>().swap(bytes_);
      offset_ = 0;
    }
  }

 private:
  std::vector<uint8_t> bytes_;
  size_t offset_ = 0;  // bytes_[0, offset_) are written
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_WIRE_BUFFER_H_
