// The connect phase of one upstream connection: resolve the node's name, connect TCP, and make
// the TLS engine when the node's slot has a TLS context (ConnectionHost::TlsContextOf, read once
// TCP is up), all inside upstream.connect_timeout. The deadline goes on covering the TLS and
// HTTP/2 handshakes that follow, until the owner calls Finished().
//
//   connector_.Start(node, node_index, socket_, timeout, host, shared_from_this(),
//                    {/*connected=*/[this](auto engine) { ... }, /*failed=*/[this](auto s) { ...
//                    }});
//   connector_.Finished();   // SETTINGS arrived: the connection is up
//   connector_.Cancel();     // the connection closed: nothing more is reported
//
// It asks its owner for nothing but the two callbacks, and reports each failure once, as a status
// carrying its tls::ConnectFailure (kConnect, kTimeout) or tls::FailureReason (the TLS engine could
// not be made), the way the pool's connect-failure metrics read them.
// Thread-safety: none; it lives on its connection's worker thread.
#ifndef QPOOL_DAEMON_SERVER_UPSTREAM_CONNECTOR_H_
#define QPOOL_DAEMON_SERVER_UPSTREAM_CONNECTOR_H_

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstddef>
#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "daemon/config/config.h"

namespace qpool::tls {
class TlsEngine;  // client_tls.h
}  // namespace qpool::tls

namespace qpool::server {

class ConnectionHost;  // connection_context.h

class UpstreamConnector {
 public:
  // What the connector reports to its owner; at most one of them runs, and neither after
  // Finished() or Cancel().
  struct Callbacks {
    // TCP is up (the socket connected); `engine` is the TLS engine to start, null for cleartext.
    std::function<void(std::unique_ptr<tls::TlsEngine> engine)> connected;
    // Resolving, connecting or making the TLS engine failed, or the deadline passed.
    std::function<void(const absl::Status& reason)> failed;
  };

  explicit UpstreamConnector(boost::asio::io_context& io);
  ~UpstreamConnector();

  UpstreamConnector(const UpstreamConnector&) = delete;
  UpstreamConnector& operator=(const UpstreamConnector&) = delete;

  // Connects `socket` (not open yet; it must outlive the connector) to `node`, node slot
  // `node_index` of `host` (for its TLS context). `keep_alive` (the owner) is held by every pending
  // handler. Reports later, never from inside Start.
  void Start(const config::NodeAddress& node, size_t node_index,
             boost::asio::ip::tcp::socket& socket, absl::Duration timeout,
             const ConnectionHost& host, std::shared_ptr<void> keep_alive, Callbacks callbacks);
  // The handshakes are done: the deadline no longer applies.
  void Finished();
  // The owner closed: stops resolving and the deadline; nothing more is reported.
  void Cancel();

 private:
  void OnTcpConnected(const boost::system::error_code& ec);
  // Reports `reason` through callbacks_.failed, once.
  void Fail(const absl::Status& reason);

  boost::asio::ip::tcp::resolver resolver_;
  boost::asio::steady_timer deadline_;
  boost::asio::ip::tcp::socket* socket_ = nullptr;
  const ConnectionHost* host_ = nullptr;
  size_t node_index_ = 0;
  Callbacks callbacks_;
  bool active_ = false;  // between Start() and Finished() / Cancel() / a report of failure
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_UPSTREAM_CONNECTOR_H_
