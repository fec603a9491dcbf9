// A pooled HTTP/1.1 keep-alive connection to one Qdrant node's REST port. To the NodePool it is a
// connection whose peer allows one stream: the pool hands it to one request at a time, and it
// reports its life through PoolConnectionEvents like the HTTP/2 connections do.
//
// A request's exchange (RestExchange) that got the slot calls BeginExchange(), writes its request
// and reads the answer on stream() / buffer() itself (Beast; on a cleartext connection, socket()
// directly with fast_io's writes and reader() for the answer), then EndExchange(reusable). Between
// exchanges the connection watches its socket: readable while idle means the server closed it
// (Qdrant's keep-alive timeout) or sent bytes nobody asked for, and the connection goes (over
// TLS, a record with no application data, such as a TLS 1.3 session ticket, is taken in and the
// connection stays).
//
// The cleartext watch is an async_wait left pending into the next exchange, whose first answer
// read (reader()) takes it over instead of starting an Asio read of its own: when the socket
// turns readable, one non-blocking recv into buffer() feeds the answer. An exchange then costs
// its send, the wait's epoll_ctl and the one recv of the answer, with one Asio operation instead
// of two (a read started on its own would first try a recv that finds nothing: Boost 1.74's
// reactor marks a socket drained only after a read of 0 bytes). Over TLS the watch is the same
// wait (TakeIdleInput when it fires idle), and the answer is read through stream().
//
// Connecting is a part of its own (RestConnector, upstream_connector.h): resolve, TCP, and over
// TLS the handshake, within upstream.connect_timeout; the connection hears once that it is up
// (with the TLS engine) or failed (RestConnectorOwner).
//
// TLS (upstream.tls): the connection is up once the TLS handshake is done (ALPN http/1.1, or none
// from a server that does not negotiate it; the certificate verified); a failed handshake is a
// connect failure whose status carries its tls::FailureReason. The context is the one in force
// when the connect started: a context replaced later does not touch this connection (the pool
// recycles it). A gentle close (a drain: idle, aged, recycled, qpoold stopping) sends a TLS
// close_notify before the FIN, within tls::kCloseNotifyTimeout and without delaying the pool.
//
// Thread-safety: none; lives on one worker's thread.
#ifndef QPOOL_DAEMON_REST_UPSTREAM_H_
#define QPOOL_DAEMON_REST_UPSTREAM_H_

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "daemon/common/event_loop.h"
#include "daemon/config/config.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/pool/node_pool.h"
#include "daemon/pool/slot_pools.h"
#include "daemon/rest/fast_io.h"
#include "daemon/rest/inline_handler.h"
#include "daemon/rest/upstream_connector.h"
#include "daemon/rest/upstream_stream.h"
#include "daemon/tls/client_tls.h"
#include "daemon/tls/context_store.h"

namespace qpool::rest {

class RestUpstreamConnection : public pool::PoolConnection,
                               public RestConnectorOwner,
                               public std::enable_shared_from_this<RestUpstreamConnection> {
 public:
  // `tls`: the node's TLS context, null for cleartext. `metrics`: the REST endpoint's connection
  // counters (TLS handshakes, resumptions), or null.
  RestUpstreamConnection(boost::asio::io_context& io, const config::NodeAddress& node,
                         Duration connect_timeout, pool::PoolConnectionEvents& events,
                         std::shared_ptr<const tls::ClientContext> tls = nullptr,
                         metrics::NodeMetrics* metrics = nullptr);
  ~RestUpstreamConnection() override;

  // Resolves and connects; reports OnConnected (one stream) or OnConnectFailed later, never from
  // inside Connect.
  void Connect();

  // A request took the connection's slot (NodePool::Acquire): the idle watch stops.
  void BeginExchange();
  // The request is done with the connection. `reusable`: the answer was read whole, the request
  // sent whole, and both sides keep the connection alive; otherwise (or when draining) it closes.
  // `failed`: the exchange broke (lost, reset, timed out), as opposed to a close either side
  // asked for. Reports OnStreamClosed, or OnClosed when it closed.
  void EndExchange(bool reusable, bool failed = false);

  // Where the request and the answer go: the socket, or TLS over it.
  RestStream& stream() { return stream_; }
  // A cleartext connection (no TLS): its socket is non-blocking and carries the HTTP bytes
  // themselves, so the session may read and write socket() directly (fast_io). On a TLS
  // connection only stream() may carry them.
  bool cleartext() const { return stream_.tls() == nullptr; }
  // The TCP socket under stream(); for raw I/O only when cleartext().
  boost::asio::ip::tcp::socket& socket() { return stream_.socket(); }
  boost::beast::flat_buffer& buffer() { return buffer_; }

  // fast_io's ReadUntil source for a cleartext connection's answer: reads into buffer(), taking
  // over the idle watch's wait when it is still pending. A cheap handle; the connection outlives
  // its reads (the caller's handler holds it).
  class AnswerReader {
   public:
    explicit AnswerReader(RestUpstreamConnection& connection) : connection_(&connection) {}
    boost::beast::flat_buffer& buffer() const { return connection_->buffer_; }
    template <class Handler>
    void ReadSome(Handler&& handler) const {
      connection_->ReadSome(std::forward<Handler>(handler));
    }

   private:
    RestUpstreamConnection* connection_;
  };
  // Cleartext only, during an exchange.
  AnswerReader reader() { return AnswerReader(*this); }
  // Exchanges begun on this connection, the current one included: above 1, the connection was
  // reused, and a close before any byte of the answer means the server closed it idle.
  uint64_t exchanges() const { return exchanges_; }

  // pool::PoolConnection.
  void Drain() override;
  void Abort() override;

 private:
  // RestConnectorOwner: up (the idle watch starts, the pool hears of one stream), or not.
  void OnConnectorUp(std::unique_ptr<tls::TlsEngine> tls) override;
  void OnConnectorFailed(const absl::Status& reason) override;
  void WatchIdle();
  // The cleartext idle watch (the class comment): a wait that an exchange's read may take over.
  void WatchCleartext();
  void OnCleartextReadable(boost::system::error_code ec);
  // AnswerReader::ReadSome: appends what arrives next to buffer_ and calls handler(ec) from the
  // event loop.
  template <class Handler>
  void ReadSome(Handler&& handler);
  // Closes the socket and reports OnClosed(`reason`) (OnConnectFailed while still connecting).
  // `close_notify`: a gentle close of a TLS connection in a clean state (between exchanges): a
  // TLS close_notify goes out first (RestStream::CloseGracefully); the report is not delayed.
  void Close(const absl::Status& reason, bool close_notify = false);

  const std::string node_name_;
  pool::PoolConnectionEvents* events_;  // null once the final event was reported
  RestStream stream_;
  RestConnector connector_;  // until the connection is up (or failed)
  boost::beast::flat_buffer buffer_;
  bool connected_ = false;
  bool in_exchange_ = false;
  bool draining_ = false;
  uint64_t exchanges_ = 0;
  uint64_t watch_generation_ = 0;  // a stale idle-watch completion sees another generation

  // The cleartext watch's wait is pending.
  bool watch_pending_ = false;
  // The exchange's answer read that took over the pending wait: its completion reads once into
  // buffer_ and runs it. Sized for session.cc's ReadUntil handlers (a larger one does not
  // compile).
  InlineHandler<256> answer_read_;
};

template <class Handler>
void RestUpstreamConnection::ReadSome(Handler&& handler) {
  if (watch_pending_) {
    answer_read_.Emplace(std::forward<Handler>(handler));
    return;
  }
  SocketReader(stream_.socket(), buffer_).ReadSome(std::forward<Handler>(handler));
}

// Makes RestUpstreamConnections to one node's REST endpoint for one worker's REST pool.
// `tls`: the REST pools' TLS contexts (null, or a node without TLS: cleartext); `node_index`
// picks this node's. `metrics`: the endpoint's counters, or null. Both outlive the factory.
class RestConnectionFactory : public pool::SlotConnectionFactory {
 public:
  RestConnectionFactory(boost::asio::io_context& io, config::NodeAddress node,
                        Duration connect_timeout, const tls::ContextStore* tls = nullptr,
                        size_t node_index = 0, metrics::NodeMetrics* metrics = nullptr)
      : io_(io),
        node_(std::move(node)),
        connect_timeout_(connect_timeout),
        tls_(tls),
        node_index_(node_index),
        metrics_(metrics) {}
  std::shared_ptr<pool::PoolConnection> Connect(pool::PoolConnectionEvents& events) override;
  // A config reload kept the slot's node: connections opened from now on use its REST context
  // store (NodeSlot::rest_tls, null: cleartext) and index in it. The table must keep the store
  // alive while the factory uses it. The pool's thread only.
  void Update(const config::NodeSlot& slot) override {
    tls_ = slot.rest_tls.get();
    node_index_ = slot.tls_index;
  }

 private:
  boost::asio::io_context& io_;
  const config::NodeAddress node_;
  const Duration connect_timeout_;
  const tls::ContextStore* tls_;
  size_t node_index_;
  metrics::NodeMetrics* const metrics_;
};

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_UPSTREAM_H_
