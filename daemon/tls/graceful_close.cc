#include "daemon/tls/graceful_close.h"

#include <array>
#include <boost/asio/buffer.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <utility>

namespace qpool::tls {
namespace {

using boost::asio::ip::tcp;

// One closing connection; alive while one of its operations is pending.
class GracefulClose : public std::enable_shared_from_this<GracefulClose> {
 public:
  GracefulClose(tcp::socket socket, std::unique_ptr<TlsEngine> engine, std::vector<uint8_t> out)
      : socket_(std::move(socket)),
        engine_(std::move(engine)),
        out_(std::move(out)),
        timer_(socket_.get_executor()) {}

  void Start(std::chrono::milliseconds timeout) {
    if (!engine_->Shutdown().ok()) {
      Finish();
      return;
    }
    engine_->TakeOutput(out_);
    auto self = shared_from_this();
    timer_.expires_after(timeout);
    timer_.async_wait([self](const boost::system::error_code& ec) {
      if (!ec) self->Finish();  // the peer took too long: close anyway
    });
    boost::asio::async_write(socket_, boost::asio::buffer(out_),
                             [self](const boost::system::error_code& ec, size_t) {
                               if (ec) {
                                 self->Finish();
                                 return;
                               }
                               boost::system::error_code ignored;
                               self->socket_.shutdown(tcp::socket::shutdown_send, ignored);
                               self->ReadToEnd();
                             });
  }

 private:
  // Reads and drops what the peer still sends (its close_notify, frames in flight) until its FIN:
  // closing with unread bytes would reset the connection, and the peer might lose our alert.
  void ReadToEnd() {
    if (done_) return;
    auto self = shared_from_this();
    socket_.async_read_some(boost::asio::buffer(scratch_),
                            [self](const boost::system::error_code& ec, size_t) {
                              if (ec) {
                                self->Finish();  // EOF (the peer closed), reset, or closed by us
                                return;
                              }
                              self->ReadToEnd();
                            });
  }

  void Finish() {
    if (done_) return;
    done_ = true;
    timer_.cancel();
    boost::system::error_code ignored;
    socket_.close(ignored);  // pending operations complete with operation_aborted
  }

  tcp::socket socket_;
  std::unique_ptr<TlsEngine> engine_;  // freed last: SSL_free sees our close_notify sent
  std::vector<uint8_t> out_;
  boost::asio::steady_timer timer_;
  std::array<uint8_t, 2048> scratch_;
  bool done_ = false;
};

}  // namespace

void CloseGracefully(tcp::socket socket, std::unique_ptr<TlsEngine> engine,
                     std::vector<uint8_t> unsent, std::chrono::milliseconds timeout) {
  if (engine == nullptr) {
    boost::system::error_code ignored;
    socket.close(ignored);
    return;
  }
  std::make_shared<GracefulClose>(std::move(socket), std::move(engine), std::move(unsent))
      ->Start(timeout);
}

}  // namespace qpool::tls
