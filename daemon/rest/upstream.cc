#include "daemon/rest/upstream.h"

#include <boost/asio/connect.hpp>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace qpool::rest {

using boost::asio::ip::tcp;

RestUpstreamConnection::RestUpstreamConnection(boost::asio::io_context& io,
                                               const config::NodeAddress& node,
                                               Duration connect_timeout,
                                               pool::PoolConnectionEvents& events)
    : node_name_(node.ToString()),
      node_(node),
      connect_timeout_(connect_timeout),
      events_(&events),
      resolver_(io),
      socket_(io),
      connect_timer_(io) {}

RestUpstreamConnection::~RestUpstreamConnection() {
  boost::system::error_code ignored;
  socket_.close(ignored);
}

void RestUpstreamConnection::Connect() {
  auto self = shared_from_this();
  connect_timer_.expires_after(connect_timeout_);
  connect_timer_.async_wait([self](const boost::system::error_code& ec) {
    if (ec || self->connected_ || self->events_ == nullptr) return;
    self->FailConnect(absl::UnavailableError(absl::StrCat(
        "REST connect to ", self->node_name_, " timed out after ",
        std::chrono::duration_cast<std::chrono::milliseconds>(self->connect_timeout_).count(),
        " ms (upstream.connect_timeout)")));
  });
  resolver_.async_resolve(
      node_.host, std::to_string(node_.port),
      [self](const boost::system::error_code& ec, tcp::resolver::results_type results) {
        self->OnResolved(ec, std::move(results));
      });
}

void RestUpstreamConnection::OnResolved(const boost::system::error_code& ec,
                                        tcp::resolver::results_type results) {
  if (events_ == nullptr) return;
  if (ec) {
    FailConnect(absl::UnavailableError(
        absl::StrCat("cannot resolve REST node ", node_name_, ": ", ec.message())));
    return;
  }
  auto self = shared_from_this();
  boost::asio::async_connect(
      socket_, results, [self](const boost::system::error_code& ec, const tcp::endpoint&) {
        if (self->events_ == nullptr) return;
        if (ec) {
          self->FailConnect(absl::UnavailableError(
              absl::StrCat("REST connect to ", self->node_name_, " failed: ", ec.message())));
          return;
        }
        self->connect_timer_.cancel();
        boost::system::error_code ignored;
        self->socket_.set_option(tcp::no_delay(true), ignored);
        self->socket_.non_blocking(true, ignored);  // fast_io's writes never block the worker
        self->connected_ = true;
        self->WatchIdle();
        // HTTP/1.1: one request at a time on a connection.
        self->events_->OnConnected(self.get(), 1);
      });
}

void RestUpstreamConnection::FailConnect(const absl::Status& reason) {
  if (events_ == nullptr) return;
  connect_timer_.cancel();
  resolver_.cancel();
  boost::system::error_code ignored;
  socket_.close(ignored);
  pool::PoolConnectionEvents* events = events_;
  events_ = nullptr;
  events->OnConnectFailed(this, reason);
}

void RestUpstreamConnection::WatchIdle() {
  const uint64_t generation = ++watch_generation_;
  auto self = shared_from_this();
  // Left pending through the next exchange (BeginExchange only changes the generation): the
  // answer's read then queues behind it and Asio tries no read before the answer is there.
  socket_.async_wait(tcp::socket::wait_read, [self,
                                              generation](const boost::system::error_code& ec) {
    if (generation != self->watch_generation_ || self->in_exchange_ || self->events_ == nullptr) {
      return;
    }
    if (ec == boost::asio::error::operation_aborted) return;
    // Readable while idle: the server closed the connection (its keep-alive timeout), reset it,
    // or sent what nobody asked for. Either way it cannot carry a request any more.
    self->Close(ec ? absl::UnavailableError(absl::StrCat("REST connection to ", self->node_name_,
                                                         " lost while idle: ", ec.message()))
                   : absl::OkStatus());
  });
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
  if (!reusable || draining_ || !socket_.is_open()) {
    // The slot goes with the connection (the pool forgets its streams on OnClosed).
    Close(failed
              ? absl::UnavailableError(absl::StrCat("REST exchange with ", node_name_, " failed"))
              : absl::OkStatus());
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
  if (!in_exchange_) Close(absl::OkStatus());
}

void RestUpstreamConnection::Abort() {
  if (events_ == nullptr) return;
  if (!connected_) {
    FailConnect(absl::CancelledError("REST connection aborted while connecting"));
    return;
  }
  Close(absl::CancelledError("REST connection aborted"));
}

void RestUpstreamConnection::Close(const absl::Status& reason) {
  if (events_ == nullptr) return;
  watch_generation_++;
  boost::system::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  pool::PoolConnectionEvents* events = events_;
  events_ = nullptr;
  events->OnClosed(this, reason);
}

std::shared_ptr<pool::PoolConnection> RestConnectionFactory::Connect(
    pool::PoolConnectionEvents& events) {
  auto conn = std::make_shared<RestUpstreamConnection>(io_, node_, connect_timeout_, events);
  conn->Connect();
  return conn;
}

}  // namespace qpool::rest
