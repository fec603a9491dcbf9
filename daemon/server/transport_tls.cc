#include "daemon/server/transport_tls.h"

#include <utility>
#include <vector>

#include "daemon/tls/client_tls.h"
#include "daemon/tls/graceful_close.h"

namespace qpool::server {

TransportTls::TransportTls() = default;
TransportTls::~TransportTls() = default;

absl::Status TransportTls::Start(std::unique_ptr<tls::TlsEngine> engine) {
  engine_ = std::move(engine);
  handshaking_ = true;
  return engine_->Handshake().status();  // the ClientHello
}

absl::StatusOr<bool> TransportTls::TakeInput(const uint8_t* data, size_t n) {
  engine_->FeedInput(data, n);
  if (!handshaking_) return false;
  absl::StatusOr<bool> done = engine_->Handshake();
  if (!done.ok()) return done.status();
  if (!*done) return false;  // the transport's next Seal() sends what the handshake wrote
  handshaking_ = false;
  return true;
}

absl::StatusOr<bool> TransportTls::Decrypt(
    absl::FunctionRef<bool(const uint8_t* plain, size_t n)> feed) {
  uint8_t plain[16 * 1024];
  for (;;) {
    absl::StatusOr<size_t> got = engine_->Read(plain, sizeof(plain));
    if (!got.ok()) return got.status();
    if (*got == 0) return true;
    if (!feed(plain, *got)) return false;
  }
}

absl::Status TransportTls::Seal(WireBuffer& frames) {
  if (frames.pending() > 0) {
    const absl::Status status = engine_->Write(frames.unsent(), frames.pending());
    frames.Clear();
    if (!status.ok()) return status;
  }
  engine_->TakeOutput(records_.bytes());
  return absl::OkStatus();
}

void TransportTls::CloseGracefully(boost::asio::ip::tcp::socket socket) {
  std::vector<uint8_t> unsent(records_.unsent(), records_.unsent() + records_.pending());
  tls::CloseGracefully(std::move(socket), std::move(engine_), std::move(unsent));
}

}  // namespace qpool::server
