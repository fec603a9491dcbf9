#include "daemon/server/h2_transport.h"

#include <boost/asio/post.hpp>

#include "absl/strings/str_cat.h"
#include "daemon/tls/client_tls.h"
#include "daemon/tls/graceful_close.h"

namespace qpool::server {

using boost::asio::ip::tcp;

H2Transport::H2Transport(ConnectionContext& context, tcp::socket socket)
    : socket_(std::move(socket)), context_(context) {}

H2Transport::~H2Transport() {
  if (session_ != nullptr) nghttp2_session_del(session_);
}

nghttp2_option* H2Transport::NewSessionOption() {
  nghttp2_option* option;
  nghttp2_option_new(&option);
  nghttp2_option_set_no_auto_window_update(option, 1);
  return option;
}

void H2Transport::OpenConnectionWindow(int32_t window) {
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, window);
}

void* H2Transport::TakeDataChunk(nghttp2_session* session, int32_t stream_id, size_t len) {
  nghttp2_session_consume_connection(session, len);
  void* holder = nghttp2_session_get_stream_user_data(session, stream_id);
  if (holder == nullptr) nghttp2_session_consume_stream(session, stream_id, len);
  return holder;
}

void H2Transport::ScheduleFlush() {
  // While this transport handles a read, OnReadable() flushes it at the end anyway.
  if (flush_posted_ || closed_ || in_read_) return;
  flush_posted_ = true;
  boost::asio::post(context_.io, [self = shared_from_this()] {
    self->flush_posted_ = false;
    self->Flush();
  });
}

void H2Transport::StartReading() {
  boost::system::error_code ec;
  socket_.non_blocking(true, ec);
  socket_.set_option(tcp::no_delay(true), ec);
  WaitReadable();
}

void H2Transport::StartTls(std::unique_ptr<tls::TlsEngine> engine) {
  tls_ = std::move(engine);
  tls_handshaking_ = true;
  absl::StatusOr<bool> done = tls_->Handshake();  // the ClientHello
  if (!done.ok()) {
    CloseTransport(done.status());
    return;
  }
  StartReading();
  Flush();
}

bool H2Transport::OnTlsBytes(const uint8_t* data, size_t n) {
  tls_->FeedInput(data, n);
  if (tls_handshaking_) {
    absl::StatusOr<bool> done = tls_->Handshake();
    if (!done.ok()) {
      CloseTransport(done.status());
      return false;
    }
    if (!*done) return true;  // the caller's Flush() sends what the handshake wrote
    tls_handshaking_ = false;
    OnTlsHandshakeDone();
    if (closed_) return false;
  }
  // Whole records now buffered in the engine, decrypted and fed to nghttp2.
  uint8_t plain[16 * 1024];
  for (;;) {
    absl::StatusOr<size_t> got = tls_->Read(plain, sizeof(plain));
    if (!got.ok()) {
      CloseTransport(got.status());
      return false;
    }
    if (*got == 0 || session_ == nullptr) return true;
    in_read_ = true;
    const ssize_t rv = nghttp2_session_mem_recv(session_, plain, *got);
    in_read_ = false;
    if (closed_) return false;
    if (rv < 0) {
      OnProtocolError(static_cast<int>(rv));
      return false;
    }
  }
}

void H2Transport::WaitReadable() {
  if (reading_ || closed_) return;
  reading_ = true;
  socket_.async_wait(tcp::socket::wait_read,
                     [self = shared_from_this()](const boost::system::error_code& ec) {
                       self->reading_ = false;
                       self->OnReadable(ec);
                     });
}

void H2Transport::OnReadable(const boost::system::error_code& ec) {
  if (closed_) return;
  if (ec) {
    CloseTransport(absl::UnavailableError(absl::StrCat("wait for read: ", ec.message())));
    return;
  }
  std::vector<uint8_t>& buffer = context_.read_buffer;
  // A few reads per wake-up at most, so one busy connection cannot starve the others.
  for (int i = 0; i < 4; ++i) {
    boost::system::error_code read_ec;
    const size_t n = socket_.read_some(boost::asio::buffer(buffer), read_ec);
    if (read_ec == boost::asio::error::would_block) break;
    if (read_ec) {
      CloseTransport(read_ec == boost::asio::error::eof
                         ? absl::UnavailableError("peer closed the connection")
                         : absl::UnavailableError(absl::StrCat("read: ", read_ec.message())));
      return;
    }
    if (tls_ != nullptr) {
      if (!OnTlsBytes(buffer.data(), n)) return;
    } else {
      if (session_ == nullptr && !CreateSessionLate()) return;
      in_read_ = true;
      const ssize_t rv = nghttp2_session_mem_recv(session_, buffer.data(), n);
      in_read_ = false;
      if (closed_) return;  // a callback closed us
      if (close_pending_) {
        FlushAndClose(close_reason_);
        return;
      }
      if (rv < 0) {
        OnProtocolError(static_cast<int>(rv));
        return;
      }
    }
    if (n < buffer.size()) break;
  }
  Flush();
  WaitReadable();
}

bool H2Transport::CreateSessionLate() {
  CloseTransport(absl::InternalError("bytes arrived before the HTTP/2 session existed"));
  return false;
}

void H2Transport::OnProtocolError(int nghttp2_error) {
  // nghttp2 may have queued a GOAWAY for the peer; try to send it before closing.
  Flush();
  CloseTransport(absl::InvalidArgumentError(
      absl::StrCat("HTTP/2 protocol error: ", nghttp2_strerror(nghttp2_error))));
}

void H2Transport::Flush() {
  if (closed_ || waiting_writable_) return;
  if (session_ == nullptr && tls_ == nullptr) return;  // a TLS handshake has bytes to send
  for (;;) {
    // Gather what nghttp2 wants to send into one buffer, up to the batch limit.
    while (session_ != nullptr && Pending() < kMaxWriteBatch) {
      const uint8_t* data = nullptr;
      const ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (closed_) return;  // a data source callback closed us
      if (n < 0) {
        CloseTransport(
            absl::InternalError(absl::StrCat("nghttp2 send: ", nghttp2_strerror(int(n)))));
        return;
      }
      if (n == 0) break;
      out_.insert(out_.end(), data, data + n);
      frames_written_ = true;
    }
    if (tls_ != nullptr) {
      // The gathered frames become TLS records (with whatever the engine has to say itself).
      if (out_offset_ < out_.size()) {
        const absl::Status status =
            tls_->Write(out_.data() + out_offset_, out_.size() - out_offset_);
        out_.clear();
        out_offset_ = 0;
        if (!status.ok()) {
          CloseTransport(status);
          return;
        }
      }
      tls_->TakeOutput(tls_out_);
    }
    if (Pending() == 0) break;
    if (!WriteSome()) return;
    if (Pending() > 0) {
      WaitWritable();
      return;
    }
  }
  if (out_.capacity() > kMaxWriteBatch * 2) std::vector<uint8_t>().swap(out_);
  if (tls_out_.capacity() > kMaxWriteBatch * 2) std::vector<uint8_t>().swap(tls_out_);
  if (session_ != nullptr && !nghttp2_session_want_read(session_) &&
      !nghttp2_session_want_write(session_)) {
    CloseTransport(absl::OkStatus());
  }
}

bool H2Transport::WriteSome() {
  std::vector<uint8_t>& wire = tls_ != nullptr ? tls_out_ : out_;
  size_t& offset = tls_ != nullptr ? tls_out_offset_ : out_offset_;
  boost::system::error_code ec;
  const size_t n =
      socket_.write_some(boost::asio::buffer(wire.data() + offset, wire.size() - offset), ec);
  if (ec && ec != boost::asio::error::would_block) {
    CloseTransport(absl::UnavailableError(absl::StrCat("write: ", ec.message())));
    return false;
  }
  offset += n;
  if (offset == wire.size()) {
    wire.clear();
    offset = 0;
  }
  return true;
}

void H2Transport::WaitWritable() {
  waiting_writable_ = true;
  socket_.async_wait(
      tcp::socket::wait_write,
      [self = shared_from_this()](const boost::system::error_code& ec) { self->OnWritable(ec); });
}

void H2Transport::OnWritable(const boost::system::error_code& ec) {
  waiting_writable_ = false;
  if (closed_) return;
  if (ec) {
    CloseTransport(absl::UnavailableError(absl::StrCat("wait for write: ", ec.message())));
    return;
  }
  Flush();
}

void H2Transport::FlushAndClose(const absl::Status& reason) {
  if (closed_) return;
  if (in_read_) {
    close_pending_ = true;
    close_reason_ = reason;
    return;
  }
  // Gather what nghttp2 queued and write once; a peer that does not read loses the rest.
  while (session_ != nullptr && out_.size() - out_offset_ < kMaxWriteBatch) {
    const uint8_t* data = nullptr;
    const ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (closed_ || n <= 0) break;
    out_.insert(out_.end(), data, data + n);
  }
  if (!closed_ && out_offset_ < out_.size()) WriteSome();
  CloseTransport(reason);
}

void H2Transport::TrimIdleMemory() {
  if (Pending() != 0) return;
  if (out_.capacity() > 0) std::vector<uint8_t>().swap(out_);
  if (frames_written_ && session_ != nullptr && !nghttp2_session_want_write(session_)) {
    ReleaseIdlePages(session_pages_);
    frames_written_ = false;
  }
}

void H2Transport::CloseTransport(const absl::Status& reason) {
  if (closed_) return;
  closed_ = true;
  boost::system::error_code ignored;
  if (reason.ok() && tls_ != nullptr && !tls_handshaking_) {
    // A gentle close over TLS (a drain finished): what is still owed (a GOAWAY) and a close_notify
    // go out on their own, bounded, while the owner reports the close now.
    std::vector<uint8_t> unsent(tls_out_.begin() + static_cast<ptrdiff_t>(tls_out_offset_),
                                tls_out_.end());
    socket_.cancel(ignored);  // our waits complete as aborted, and see closed_
    tls::CloseGracefully(std::move(socket_), std::move(tls_), std::move(unsent));
  } else {
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }
  OnTransportClosed(reason);
}

}  // namespace qpool::server
