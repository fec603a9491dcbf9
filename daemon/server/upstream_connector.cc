#include "daemon/server/upstream_connector.h"

#include <boost/asio/connect.hpp>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/server/connection_context.h"
#include "daemon/tls/client_tls.h"

namespace qpool::server {

using boost::asio::ip::tcp;

UpstreamConnector::UpstreamConnector(boost::asio::io_context& io) : resolver_(io), deadline_(io) {}

UpstreamConnector::~UpstreamConnector() = default;

void UpstreamConnector::Start(const config::NodeAddress& node, size_t node_index,
                              tcp::socket& socket, absl::Duration timeout,
                              const ConnectionHost& host, std::shared_ptr<void> keep_alive,
                              Callbacks callbacks) {
  socket_ = &socket;
  host_ = &host;
  node_index_ = node_index;
  callbacks_ = std::move(callbacks);
  active_ = true;
  deadline_.expires_after(absl::ToChronoNanoseconds(timeout));
  deadline_.async_wait([this, keep_alive, timeout](const boost::system::error_code& ec) {
    if (ec || !active_) return;
    Fail(tls::WithConnectFailure(absl::UnavailableError(absl::StrCat(
                                     "connect timed out after ", absl::FormatDuration(timeout),
                                     " (upstream.connect_timeout)")),
                                 tls::ConnectFailure::kTimeout));
  });
  resolver_.async_resolve(
      node.host, std::to_string(node.port),
      [this, keep_alive, host_name = node.host](const boost::system::error_code& ec,
                                                tcp::resolver::results_type results) {
        if (!active_) return;
        if (ec) {
          Fail(tls::WithConnectFailure(
              absl::UnavailableError(absl::StrCat("resolve ", host_name, ": ", ec.message())),
              tls::ConnectFailure::kConnect));
          return;
        }
        boost::asio::async_connect(
            *socket_, results,
            [this, keep_alive](const boost::system::error_code& ec, const tcp::endpoint&) {
              OnTcpConnected(ec);
            });
      });
}

void UpstreamConnector::OnTcpConnected(const boost::system::error_code& ec) {
  if (!active_) return;
  if (ec) {
    Fail(tls::WithConnectFailure(absl::UnavailableError(absl::StrCat("connect: ", ec.message())),
                                 tls::ConnectFailure::kConnect));
    return;
  }
  std::unique_ptr<tls::TlsEngine> engine;
  if (std::shared_ptr<const tls::ClientContext> tls_context = host_->TlsContextOf(node_index_)) {
    absl::StatusOr<std::unique_ptr<tls::TlsEngine>> made = tls_context->NewEngine();
    if (!made.ok()) {
      Fail(tls::WithFailureReason(absl::UnavailableError(made.status().message()),
                                  tls::FailureReason::kHandshake));
      return;
    }
    engine = *std::move(made);
  }
  callbacks_.connected(std::move(engine));
}

void UpstreamConnector::Fail(const absl::Status& reason) {
  active_ = false;
  deadline_.cancel();
  callbacks_.failed(reason);
}

void UpstreamConnector::Finished() {
  active_ = false;
  deadline_.cancel();
}

void UpstreamConnector::Cancel() {
  active_ = false;
  deadline_.cancel();
  resolver_.cancel();
}

}  // namespace qpool::server
