// How a REST upstream connection (RestUpstreamConnection) comes up: the node's name resolved, a
// TCP connection (no delay; non-blocking when cleartext, for fast_io), and, when the node has a
// TLS context, the TLS handshake one flight at a time (ALPN http/1.1, or none from a server that
// does not negotiate it; the certificate verified) -- all within upstream.connect_timeout. It
// reports once to its owner (RestConnectorOwner): up, with the TLS engine that is to carry the
// connection's bytes (none for cleartext), or failed, with a status that carries its
// tls::ConnectFailure or tls::FailureReason. A TLS connection up counts its handshake (and a
// resumption, an unverified connect) in the endpoint's metrics.
//
//   RestConnector connector(io, node, connect_timeout, stream, tls, metrics, owner);
//   connector.Start(connection);   // -> owner.OnConnectorUp(engine) or OnConnectorFailed(status)
//   connector.Fail(absl::CancelledError("aborted"));   // gives up now: OnConnectorFailed
//   connector.Stop();              // gives up without a report (the owner closed)
//
// `keep` (Start) is held by its pending operations: the owner, which holds the connector by
// value, stays alive until they complete. Thread-safety: none; the connection's thread.
#ifndef QPOOL_DAEMON_REST_UPSTREAM_CONNECTOR_H_
#define QPOOL_DAEMON_REST_UPSTREAM_CONNECTOR_H_

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "daemon/common/event_loop.h"
#include "daemon/config/config.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/rest/upstream_stream.h"
#include "daemon/tls/client_tls.h"

namespace qpool::rest {

// What a RestConnector reports to its connection, once.
class RestConnectorOwner {
 public:
  // The connection is up. `tls`: the engine that carries its bytes from now on
  // (RestStream::UseTls); null for cleartext.
  virtual void OnConnectorUp(std::unique_ptr<tls::TlsEngine> tls) = 0;
  // It could not come up (resolve, connect, handshake, timeout, or Fail).
  virtual void OnConnectorFailed(const absl::Status& reason) = 0;

 protected:
  ~RestConnectorOwner() = default;
};

class RestConnector {
 public:
  // `stream`: the connection's, whose socket is connected. `tls`: the node's TLS context, null for
  // cleartext. `metrics`: the REST endpoint's counters, or null. `node_name`: for messages.
  RestConnector(boost::asio::io_context& io, const config::NodeAddress& node,
                const std::string& node_name, Duration connect_timeout, RestStream& stream,
                std::shared_ptr<const tls::ClientContext> tls, metrics::NodeMetrics* metrics,
                RestConnectorOwner& owner);
  RestConnector(const RestConnector&) = delete;
  RestConnector& operator=(const RestConnector&) = delete;

  // Resolves and connects; reports later, never from inside Start.
  void Start(std::shared_ptr<void> keep);
  // Gives up (when not done): the timer and the resolve stop, and the owner hears
  // OnConnectorFailed(reason) now.
  void Fail(const absl::Status& reason);
  // Gives up without a report: what is pending completes and does nothing.
  void Stop();

 private:
  void OnResolved(std::shared_ptr<void> keep, const boost::system::error_code& ec,
                  boost::asio::ip::tcp::resolver::results_type results);
  void OnTcpConnected(std::shared_ptr<void> keep);
  // The TLS handshake, one flight at a time: run the engine, write what it made, read the reply.
  void HandshakeStep(std::shared_ptr<void> keep);
  void Up();

  const config::NodeAddress node_;
  const std::string& node_name_;
  const Duration connect_timeout_;
  RestStream& stream_;
  const std::shared_ptr<const tls::ClientContext> tls_context_;
  metrics::NodeMetrics* const metrics_;
  RestConnectorOwner& owner_;
  boost::asio::ip::tcp::resolver resolver_;
  boost::asio::steady_timer timer_;            // upstream.connect_timeout
  std::unique_ptr<tls::TlsEngine> handshake_;  // during the TLS handshake only
  std::vector<uint8_t> handshake_bytes_;
  bool done_ = false;  // reported, or stopped: pending completions do nothing
};

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_UPSTREAM_CONNECTOR_H_
