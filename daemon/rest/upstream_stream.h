// The byte stream of one upstream REST connection: its TCP socket, or TLS over that socket
// (upstream.tls). Either way it is an Asio AsyncReadStream and AsyncWriteStream, so Beast reads
// and writes HTTP/1.1 on it without knowing which; a cleartext stream passes each operation
// straight to the socket.
//
//   RestStream stream(io);
//   ... connect stream.socket(), run the TLS handshake on it, then:
//   stream.UseTls(std::move(engine));                  // from now on bytes go through TLS
//   http::async_write(stream, serializer, handler);    // as on a socket
//
// TLS runs on tls::TlsEngine (memory buffers, the same engine as the gRPC connections): a read
// decrypts what the engine holds, and reads the socket only when no whole record is buffered; a
// write encrypts the caller's bytes and writes the records whole before it completes. TLS
// records that carry no application data (TLS 1.3 session tickets) are taken in along the way.
//
// Contract: at most one read and one write in flight, as for a socket (HTTP/1.1 never has more);
// the owner keeps the stream alive until its handlers have run (the connection's shared_ptr).
// Thread-safety: none; one worker's thread.
#ifndef QPOOL_DAEMON_REST_UPSTREAM_STREAM_H_
#define QPOOL_DAEMON_REST_UPSTREAM_STREAM_H_

#include <algorithm>
#include <array>
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "daemon/tls/client_tls.h"

namespace qpool::rest {

class RestStream {
 public:
  using executor_type = boost::asio::ip::tcp::socket::executor_type;
  using error_code = boost::system::error_code;

  explicit RestStream(boost::asio::io_context& io) : socket_(io) {}

  executor_type get_executor() { return socket_.get_executor(); }
  boost::asio::ip::tcp::socket& socket() { return socket_; }

  // Bytes go through `engine` from now on (its handshake is done).
  void UseTls(std::unique_ptr<tls::TlsEngine> engine) {
    engine_ = std::move(engine);
    raw_ = std::make_unique<std::array<uint8_t, kRawBytes>>();
  }
  tls::TlsEngine* tls() const { return engine_.get(); }
  // Why the last TLS read or write failed (a read reports EPROTO to Beast), for messages.
  const absl::Status& tls_error() const { return tls_error_; }

  // AsyncReadStream.
  template <typename MutableBuffers, typename Handler>
  void async_read_some(const MutableBuffers& buffers, Handler&& handler) {
    if (engine_ == nullptr) {
      socket_.async_read_some(buffers, std::forward<Handler>(handler));
      return;
    }
    TlsRead(FirstBuffer(buffers), std::decay_t<Handler>(std::forward<Handler>(handler)),
            /*in_completion=*/false);
  }

  // AsyncWriteStream.
  template <typename ConstBuffers, typename Handler>
  void async_write_some(const ConstBuffers& buffers, Handler&& handler) {
    if (engine_ == nullptr) {
      socket_.async_write_some(buffers, std::forward<Handler>(handler));
      return;
    }
    TlsWrite(buffers, std::decay_t<Handler>(std::forward<Handler>(handler)));
  }

  // TLS only, while the connection is idle and its socket turned readable: takes in what arrived
  // without a reader. true when it was only TLS housekeeping (a session ticket) and the
  // connection stays usable; false when the peer closed it; an error when TLS failed or the peer
  // sent application bytes nobody asked for.
  absl::StatusOr<bool> TakeIdleInput();

  // TLS, between exchanges (no read or write in flight but the idle watch, which is cancelled):
  // hands the socket and the engine to tls::CloseGracefully, which sends a close_notify and closes
  // the socket within tls::kCloseNotifyTimeout. The stream is closed from then on.
  void CloseGracefully();

 private:
  // A TLS record is at most 16 KiB of payload plus its framing.
  static constexpr size_t kRawBytes = 17 * 1024;
  // Plaintext encrypted per write: bounds the records buffered for the socket.
  static constexpr size_t kMaxWriteBytes = 64 * 1024;

  template <typename MutableBuffers>
  static boost::asio::mutable_buffer FirstBuffer(const MutableBuffers& buffers) {
    for (auto it = boost::asio::buffer_sequence_begin(buffers);
         it != boost::asio::buffer_sequence_end(buffers); ++it) {
      boost::asio::mutable_buffer buffer(*it);
      if (buffer.size() != 0) return buffer;
    }
    return {};
  }

  // Completes `handler` with (ec, n): at once when called from a completion handler, else on a
  // later turn of the loop (a handler never runs inside the call that started its operation).
  template <typename Handler>
  void Complete(Handler handler, error_code ec, size_t n, bool in_completion) {
    if (in_completion) {
      handler(ec, n);
      return;
    }
    boost::asio::post(socket_.get_executor(),
                      [handler = std::move(handler), ec, n]() mutable { handler(ec, n); });
  }

  template <typename Handler>
  void TlsRead(boost::asio::mutable_buffer buffer, Handler handler, bool in_completion) {
    if (buffer.size() == 0) {
      Complete(std::move(handler), {}, 0, in_completion);
      return;
    }
    absl::StatusOr<size_t> n = engine_->Read(static_cast<uint8_t*>(buffer.data()), buffer.size());
    if (!n.ok()) {
      tls_error_ = n.status();
      // A clean close_notify reads as the end of the stream, as a TCP FIN does.
      const bool closed = absl::StrContains(n.status().message(), "closed the TLS connection");
      Complete(std::move(handler),
               closed ? error_code(boost::asio::error::eof)
                      : error_code(EPROTO, boost::system::system_category()),
               0, in_completion);
      return;
    }
    if (*n > 0) {
      Complete(std::move(handler), {}, *n, in_completion);
      return;
    }
    socket_.async_read_some(
        boost::asio::buffer(*raw_),
        [this, buffer, handler = std::move(handler)](const error_code& ec, size_t got) mutable {
          if (ec) {
            handler(ec, 0);
            return;
          }
          engine_->FeedInput(raw_->data(), got);
          TlsRead(buffer, std::move(handler), /*in_completion=*/true);
        });
  }

  template <typename ConstBuffers, typename Handler>
  void TlsWrite(const ConstBuffers& buffers, Handler handler) {
    size_t taken = 0;
    for (auto it = boost::asio::buffer_sequence_begin(buffers);
         it != boost::asio::buffer_sequence_end(buffers) && taken < kMaxWriteBytes; ++it) {
      boost::asio::const_buffer buffer(*it);
      const size_t n = std::min(buffer.size(), kMaxWriteBytes - taken);
      if (n == 0) continue;
      if (absl::Status status = engine_->Write(static_cast<const uint8_t*>(buffer.data()), n);
          !status.ok()) {
        tls_error_ = status;
        Complete(std::move(handler), error_code(EPROTO, boost::system::system_category()), 0,
                 false);
        return;
      }
      taken += n;
    }
    out_.clear();
    engine_->TakeOutput(out_);
    if (out_.empty()) {
      Complete(std::move(handler), {}, taken, false);
      return;
    }
    boost::asio::async_write(
        socket_, boost::asio::buffer(out_),
        [taken, handler = std::move(handler)](const error_code& ec, size_t) mutable {
          handler(ec, ec ? 0 : taken);
        });
  }

  boost::asio::ip::tcp::socket socket_;
  std::unique_ptr<tls::TlsEngine> engine_;               // null: cleartext
  std::unique_ptr<std::array<uint8_t, kRawBytes>> raw_;  // ciphertext read from the socket
  // Ciphertext being written; records the engine made while reading (a TLS 1.3 key update's
  // answer) go out with the next write.
  std::vector<uint8_t> out_;
  absl::Status tls_error_;
};

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_UPSTREAM_STREAM_H_
