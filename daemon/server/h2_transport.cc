#include "daemon/server/h2_transport.h"

#include <boost/asio/post.hpp>

#include "absl/strings/str_cat.h"
#include "daemon/tls/client_tls.h"

namespace qpool::server {

using boost::asio::ip::tcp;

namespace {

absl::Status WriteError(const boost::system::error_code& ec) {
  return absl::UnavailableError(absl::StrCat("write: ", ec.message()));
}

}  // namespace

H2Transport::H2Transport(ConnectionContext& context, tcp::socket socket)
    : socket_(std::move(socket)), context_(context) {}

H2Transport::~H2Transport() = default;

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
  const absl::Status started = tls_.Start(std::move(engine));
  if (!started.ok()) {
    CloseTransport(started);
    return;
  }
  StartReading();
  Flush();
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
    if (!Receive(buffer.data(), n)) return;
    if (n < buffer.size()) break;
  }
  Flush();
  WaitReadable();
}

bool H2Transport::Receive(const uint8_t* data, size_t n) {
  // One read (or one TLS record's plaintext) into nghttp2; false when reading stops.
  auto feed = [this](const uint8_t* bytes, size_t len) {
    in_read_ = true;
    const ssize_t rv = nghttp2_session_mem_recv(session_, bytes, len);
    in_read_ = false;
    if (closed_) return false;  // a callback closed us
    if (close_pending_) {
      FlushAndClose(close_reason_);
      return false;
    }
    if (rv < 0) {
      OnProtocolError(static_cast<int>(rv));
      return false;
    }
    return true;
  };
  if (!tls_.active()) {
    if (session_ == nullptr && !CreateSessionLate()) return false;
    return feed(data, n);
  }
  absl::StatusOr<bool> handshake_done = tls_.TakeInput(data, n);
  if (!handshake_done.ok()) {
    CloseTransport(handshake_done.status());
    return false;
  }
  if (tls_.handshaking()) return true;  // the caller's Flush() sends what the handshake wrote
  if (*handshake_done) {
    OnTlsHandshakeDone();
    if (closed_) return false;
  }
  if (session_ == nullptr) return true;
  // Whole records now buffered in the engine, decrypted and fed to nghttp2.
  absl::StatusOr<bool> fed = tls_.Decrypt(feed);
  if (!fed.ok()) {
    CloseTransport(fed.status());
    return false;
  }
  return *fed;
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
  if (session_ == nullptr && !tls_.active()) return;  // a TLS handshake has bytes to send
  // The wire bytes: the gathered frames, or with TLS the records made of them.
  WireBuffer& wire = tls_.active() ? tls_.records() : out_;
  for (;;) {
    // Gather what nghttp2 wants to send into one buffer, up to the batch limit.
    while (session_ != nullptr && out_.pending() + tls_.records().pending() < kMaxWriteBatch) {
      const uint8_t* data = nullptr;
      const ssize_t n = SendFrames(&data);
      if (closed_) return;  // a data source callback closed us
      if (n < 0) {
        CloseTransport(
            absl::InternalError(absl::StrCat("nghttp2 send: ", nghttp2_strerror(int(n)))));
        return;
      }
      if (n == 0) break;
      out_.Append(data, static_cast<size_t>(n));
    }
    if (tls_.active()) {
      // The gathered frames become TLS records (with whatever the engine has to say itself).
      const absl::Status sealed = tls_.Seal(out_);
      if (!sealed.ok()) {
        CloseTransport(sealed);
        return;
      }
    }
    if (wire.pending() == 0) break;
    if (const boost::system::error_code ec = wire.WriteTo(socket_)) {
      CloseTransport(WriteError(ec));
      return;
    }
    if (wire.pending() > 0) {
      // The socket is full: the rest when it is writable again.
      waiting_writable_ = true;
      socket_.async_wait(tcp::socket::wait_write,
                         [self = shared_from_this()](const boost::system::error_code& ec) {
                           self->OnWritable(ec);
                         });
      return;
    }
  }
  out_.ShrinkTo(kMaxWriteBatch * 2);
  tls_.records().ShrinkTo(kMaxWriteBatch * 2);
  if (session_ != nullptr && !nghttp2_session_want_read(session_) &&
      !nghttp2_session_want_write(session_)) {
    CloseTransport(absl::OkStatus());
  }
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
  while (session_ != nullptr && out_.pending() < kMaxWriteBatch) {
    const uint8_t* data = nullptr;
    const ssize_t n = SendFrames(&data);
    if (closed_ || n <= 0) break;
    out_.Append(data, static_cast<size_t>(n));
  }
  WireBuffer& wire = tls_.active() ? tls_.records() : out_;
  if (!closed_ && wire.pending() > 0) {
    if (const boost::system::error_code ec = wire.WriteTo(socket_)) CloseTransport(WriteError(ec));
  }
  CloseTransport(reason);
}

void H2Transport::TrimIdleMemory() {
  if (out_.pending() + tls_.records().pending() != 0) return;
  out_.ShrinkTo(0);
  ReleaseIdleSessionPages();
}

void H2Transport::CloseTransport(const absl::Status& reason) {
  if (closed_) return;
  closed_ = true;
  boost::system::error_code ignored;
  if (reason.ok() && tls_.active() && !tls_.handshaking()) {
    // A gentle close over TLS (a drain finished): what is still owed (a GOAWAY) and a close_notify
    // go out on their own, bounded, while the owner reports the close now.
    socket_.cancel(ignored);  // our waits complete as aborted, and see closed_
    tls_.CloseGracefully(std::move(socket_));
  } else {
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }
  OnTransportClosed(reason);
}

}  // namespace qpool::server
