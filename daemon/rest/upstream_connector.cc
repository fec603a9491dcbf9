#include "daemon/rest/upstream_connector.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/write.hpp>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace qpool::rest {

using boost::asio::ip::tcp;
using boost::system::error_code;

RestConnector::RestConnector(boost::asio::io_context& io, const config::NodeAddress& node,
                             const std::string& node_name, Duration connect_timeout,
                             RestStream& stream, std::shared_ptr<const tls::ClientContext> tls,
                             metrics::NodeMetrics* metrics, RestConnectorOwner& owner)
    : node_(node),
      node_name_(node_name),
      connect_timeout_(connect_timeout),
      stream_(stream),
      tls_context_(std::move(tls)),
      metrics_(metrics),
      owner_(owner),
      resolver_(io),
      timer_(io) {}

void RestConnector::Start(std::shared_ptr<void> keep) {
  timer_.expires_after(connect_timeout_);
  timer_.async_wait([this, keep](const error_code& ec) {
    if (ec || done_) return;
    Fail(tls::WithConnectFailure(
        absl::UnavailableError(absl::StrCat(
            "REST connect to ", node_name_, " timed out after ",
            std::chrono::duration_cast<std::chrono::milliseconds>(connect_timeout_).count(),
            " ms (upstream.connect_timeout)")),
        tls::ConnectFailure::kTimeout));
  });
  resolver_.async_resolve(node_.host, std::to_string(node_.port),
                          [this, keep](const error_code& ec, tcp::resolver::results_type results) {
                            OnResolved(keep, ec, std::move(results));
                          });
}

void RestConnector::OnResolved(std::shared_ptr<void> keep, const error_code& ec,
                               tcp::resolver::results_type results) {
  if (done_) return;
  if (ec) {
    Fail(tls::WithConnectFailure(absl::UnavailableError(absl::StrCat(
                                     "cannot resolve REST node ", node_name_, ": ", ec.message())),
                                 tls::ConnectFailure::kConnect));
    return;
  }
  boost::asio::async_connect(
      stream_.socket(), results,
      [this, keep = std::move(keep)](const error_code& ec, const tcp::endpoint&) {
        if (done_) return;
        if (ec) {
          Fail(tls::WithConnectFailure(
              absl::UnavailableError(
                  absl::StrCat("REST connect to ", node_name_, " failed: ", ec.message())),
              tls::ConnectFailure::kConnect));
          return;
        }
        OnTcpConnected(keep);
      });
}

void RestConnector::OnTcpConnected(std::shared_ptr<void> keep) {
  error_code ignored;
  stream_.socket().set_option(tcp::no_delay(true), ignored);
  if (tls_context_ == nullptr) {
    // Cleartext: the session reads and writes the socket itself (fast_io), whose writes never
    // block the worker. A TLS connection stays blocking: its bytes go through RestStream only.
    stream_.socket().non_blocking(true, ignored);
    Up();
    return;
  }
  absl::StatusOr<std::unique_ptr<tls::TlsEngine>> engine = tls_context_->NewEngine();
  if (!engine.ok()) {
    Fail(tls::WithFailureReason(absl::UnavailableError(engine.status().message()),
                                tls::FailureReason::kHandshake));
    return;
  }
  handshake_ = *std::move(engine);
  HandshakeStep(std::move(keep));
}

void RestConnector::HandshakeStep(std::shared_ptr<void> keep) {
  if (done_) return;
  absl::StatusOr<bool> done = handshake_->Handshake();
  if (!done.ok()) {
    Fail(tls::WithFailureReason(
        absl::UnavailableError(
            absl::StrCat("REST node ", node_name_, ": ", done.status().message())),
        tls::FailureReasonOf(done.status()).value_or(tls::FailureReason::kHandshake)));
    return;
  }
  handshake_bytes_.clear();
  handshake_->TakeOutput(handshake_bytes_);
  auto next = [this, keep, finished = *done]() {
    if (finished) {
      Up();
      return;
    }
    // The node's next flight.
    handshake_bytes_.resize(17 * 1024);
    stream_.socket().async_read_some(
        boost::asio::buffer(handshake_bytes_), [this, keep](const error_code& ec, size_t n) {
          if (done_) return;
          if (ec) {
            Fail(tls::WithFailureReason(
                absl::UnavailableError(absl::StrCat("REST node ", node_name_,
                                                    ": TLS handshake: the node closed the "
                                                    "connection (",
                                                    ec.message(), ")")),
                tls::FailureReason::kHandshake));
            return;
          }
          handshake_->FeedInput(handshake_bytes_.data(), n);
          HandshakeStep(keep);
        });
  };
  if (handshake_bytes_.empty()) {
    next();
    return;
  }
  boost::asio::async_write(
      stream_.socket(), boost::asio::buffer(handshake_bytes_),
      [this, next](const error_code& ec, size_t) {
        if (done_) return;
        if (ec) {
          Fail(tls::WithFailureReason(
              absl::UnavailableError(absl::StrCat("REST node ", node_name_,
                                                  ": TLS handshake: write failed: ", ec.message())),
              tls::FailureReason::kHandshake));
          return;
        }
        next();
      });
}

void RestConnector::Up() {
  if (done_) return;
  done_ = true;
  timer_.cancel();
  if (handshake_ != nullptr) {
    if (metrics_ != nullptr) {
      metrics_->tls_handshakes.Add();
      if (handshake_->resumed()) metrics_->tls_resumptions.Add();
      if (!tls_context_->verify()) metrics_->tls_unverified_connects.Add();
    }
    SPDLOG_DEBUG("upstream REST {}: TLS up ({})", node_name_, handshake_->PeerSummary());
    std::vector<uint8_t>().swap(handshake_bytes_);
  }
  owner_.OnConnectorUp(std::move(handshake_));
}

void RestConnector::Fail(const absl::Status& reason) {
  if (done_) return;
  Stop();
  owner_.OnConnectorFailed(reason);
}

void RestConnector::Stop() {
  done_ = true;
  timer_.cancel();
  resolver_.cancel();
}

}  // namespace qpool::rest
