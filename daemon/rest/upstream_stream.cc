#include "daemon/rest/upstream_stream.h"

#include "daemon/tls/graceful_close.h"

namespace qpool::rest {

absl::StatusOr<bool> RestStream::TakeIdleInput() {
  if (engine_ == nullptr) return absl::FailedPreconditionError("not a TLS stream");
  error_code ec;
  const size_t available = socket_.available(ec);
  if (ec) return false;
  if (available == 0) return false;  // readable with nothing to read: the peer's FIN
  const size_t got = socket_.read_some(boost::asio::buffer(*raw_), ec);
  if (ec) return false;
  engine_->FeedInput(raw_->data(), got);
  uint8_t probe[256];
  absl::StatusOr<size_t> n = engine_->Read(probe, sizeof(probe));
  if (!n.ok()) {
    if (absl::StrContains(n.status().message(), "closed the TLS connection")) return false;
    return n.status();
  }
  if (*n > 0) return absl::UnavailableError("the node sent bytes nobody asked for");
  return true;
}

void RestStream::CloseGracefully() {
  error_code ignored;
  socket_.cancel(ignored);  // the idle watch completes as aborted
  tls::CloseGracefully(std::move(socket_), std::move(engine_));
}

}  // namespace qpool::rest
