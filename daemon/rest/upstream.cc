#include "daemon/rest/upstream.h"

#include "absl/strings/str_cat.h"

namespace qpool::rest {

using boost::asio::ip::tcp;

RestUpstreamConnection::RestUpstreamConnection(boost::asio::io_context& io,
                                               const config::NodeAddress& node,
                                               Duration connect_timeout,
                                               pool::PoolConnectionEvents& events,
                                               std::shared_ptr<const tls::ClientContext> tls,
                                               metrics::NodeMetrics* metrics)
    : node_name_(node.ToString()),
      events_(&events),
      stream_(io),
      connector_(io, node, node_name_, connect_timeout, stream_, std::move(tls), metrics, *this) {}

RestUpstreamConnection::~RestUpstreamConnection() {
  boost::system::error_code ignored;
  stream_.socket().close(ignored);
}

void RestUpstreamConnection::Connect() { connector_.Start(shared_from_this()); }

void RestUpstreamConnection::OnConnectorUp(std::unique_ptr<tls::TlsEngine> tls) {
  if (events_ == nullptr) return;
  if (tls != nullptr) stream_.UseTls(std::move(tls));
  connected_ = true;
  WatchIdle();
  // HTTP/1.1: one request at a time on a connection.
  events_->OnConnected(this, 1);
}

void RestUpstreamConnection::OnConnectorFailed(const absl::Status& reason) {
  if (events_ == nullptr) return;
  boost::system::error_code ignored;
  stream_.socket().close(ignored);
  pool::PoolConnectionEvents* events = events_;
  events_ = nullptr;
  events->OnConnectFailed(this, reason);
}

void RestUpstreamConnection::WatchIdle() {
  if (stream_.tls() == nullptr) {
    WatchCleartext();
    return;
  }
  const uint64_t generation = ++watch_generation_;
  auto self = shared_from_this();
  // TLS: left pending through the next exchange (BeginExchange only changes the generation): the
  // answer's read then queues behind it and Asio tries no read before the answer is there.
  stream_.socket().async_wait(tcp::socket::wait_read, [self, generation](
                                                          const boost::system::error_code& ec) {
    if (generation != self->watch_generation_ || self->in_exchange_ || self->events_ == nullptr) {
      return;
    }
    if (ec == boost::asio::error::operation_aborted) return;
    if (!ec && self->stream_.tls() != nullptr) {
      // TLS: a session ticket or another record without application data keeps the connection.
      absl::StatusOr<bool> keep = self->stream_.TakeIdleInput();
      if (keep.ok() && *keep) {
        self->WatchIdle();
        return;
      }
      self->Close(keep.ok() ? absl::OkStatus()
                            : absl::UnavailableError(
                                  absl::StrCat("REST connection to ", self->node_name_,
                                               " broken while idle: ", keep.status().message())));
      return;
    }
    // Readable while idle: the server closed the connection (its keep-alive timeout), reset it,
    // or sent what nobody asked for. Either way it cannot carry a request any more.
    self->Close(ec ? absl::UnavailableError(absl::StrCat("REST connection to ", self->node_name_,
                                                         " lost while idle: ", ec.message()))
                   : absl::OkStatus());
  });
}

void RestUpstreamConnection::WatchCleartext() {
  if (watch_pending_) return;  // an exchange ended before it read: the watch goes on
  watch_pending_ = true;
  // The wait's completion must not keep the connection alive through the handler an exchange
  // left in answer_read_ (which holds the connection): destroyed unrun (the io_context went
  // away), it drops that handler.
  struct Owner {
    explicit Owner(std::shared_ptr<RestUpstreamConnection> c) : connection(std::move(c)) {}
    Owner(Owner&&) = default;
    Owner& operator=(Owner&&) = delete;
    ~Owner() {
      if (connection != nullptr) connection->answer_read_.Reset();
    }
    std::shared_ptr<RestUpstreamConnection> connection;
  };
  stream_.socket().async_wait(
      tcp::socket::wait_read,
      [owner = Owner(shared_from_this())](const boost::system::error_code& ec) mutable {
        std::shared_ptr<RestUpstreamConnection> self = std::move(owner.connection);
        self->OnCleartextReadable(ec);
      });
}

void RestUpstreamConnection::OnCleartextReadable(boost::system::error_code ec) {
  watch_pending_ = false;
  if (answer_read_) {
    // The exchange's read took the wait over: the one recv of what arrived (the socket is
    // non-blocking).
    if (!ec && events_ == nullptr) ec = boost::asio::error::operation_aborted;  // closed
    if (!ec) {
      const size_t bytes = stream_.socket().read_some(buffer_.prepare(ReadSize(buffer_)), ec);
      buffer_.commit(bytes);
      if (ec == boost::asio::error::would_block || ec == boost::asio::error::try_again) {
        WatchCleartext();  // readable with nothing to read after all: wait again
        return;
      }
    }
    answer_read_(ec);
    return;
  }
  // Readable during an exchange that has not read yet: its read finds what came.
  if (events_ == nullptr || ec == boost::asio::error::operation_aborted || in_exchange_) return;
  // Readable while idle: the server closed the connection (its keep-alive timeout), reset it,
  // or sent what nobody asked for. Either way it cannot carry a request any more.
  Close(ec ? absl::UnavailableError(absl::StrCat("REST connection to ", node_name_,
                                                 " lost while idle: ", ec.message()))
           : absl::OkStatus());
}

void RestUpstreamConnection::BeginExchange() {
  in_exchange_ = true;
  exchanges_++;
  watch_generation_++;  // the pending idle watch, if it completes, does nothing
}

void RestUpstreamConnection::EndExchange(bool reusable, bool failed) {
  if (!in_exchange_) return;
  in_exchange_ = false;
  if (events_ == nullptr) return;
  // Decided before the pool hears of the free slot: OnStreamClosed may hand the connection to the
  // next waiting request at once.
  if (!reusable || draining_ || !stream_.socket().is_open()) {
    // The slot goes with the connection (the pool forgets its streams on OnClosed). A drain after
    // a clean exchange is a gentle close.
    Close(failed
              ? absl::UnavailableError(absl::StrCat("REST exchange with ", node_name_, " failed"))
              : absl::OkStatus(),
          /*close_notify=*/reusable && !failed && draining_ && stream_.socket().is_open());
    return;
  }
  if (buffer_.size() != 0) {
    // What is left in the buffer belongs to no request: the server sent more than one answer.
    Close(absl::UnavailableError(
        absl::StrCat("REST node ", node_name_, " sent bytes after a complete answer")));
    return;
  }
  WatchIdle();
  auto self = shared_from_this();  // the pool may drop its reference in the call below
  events_->OnStreamClosed(this);
}

void RestUpstreamConnection::Drain() {
  if (events_ == nullptr) return;
  draining_ = true;
  if (!in_exchange_) Close(absl::OkStatus(), /*close_notify=*/true);
}

void RestUpstreamConnection::Abort() {
  if (events_ == nullptr) return;
  if (!connected_) {
    connector_.Fail(absl::CancelledError("REST connection aborted while connecting"));
    return;
  }
  Close(absl::CancelledError("REST connection aborted"));
}

void RestUpstreamConnection::Close(const absl::Status& reason, bool close_notify) {
  if (events_ == nullptr) return;
  watch_generation_++;
  if (!connected_) connector_.Stop();  // closed while connecting (a drain)
  if (close_notify && connected_ && stream_.tls() != nullptr) {
    stream_.CloseGracefully();
  } else {
    boost::system::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
  }
  pool::PoolConnectionEvents* events = events_;
  events_ = nullptr;
  events->OnClosed(this, reason);
}

std::shared_ptr<pool::PoolConnection> RestConnectionFactory::Connect(
    pool::PoolConnectionEvents& events) {
  auto conn = std::make_shared<RestUpstreamConnection>(
      io_, node_, connect_timeout_, events, tls_ != nullptr ? tls_->Get(node_index_) : nullptr,
      metrics_);
  conn->Connect();
  return conn;
}

}  // namespace qpool::rest
