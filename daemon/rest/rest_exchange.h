// Where a REST request goes upstream: one try of the request in flight on one node, as
// RestAttempts decides it (the primary in slot 0, a hedge racing it in slot 1). Its place in the
// node's REST pool queue (NodePool::Acquire: upstream.acquire_timeout, max_pending), then a
// keep-alive connection of the pool (RestUpstreamConnection): the request written (a request held
// whole with this node's Host, in one send; a streamed body relayed from the app in 64 KiB
// chunks, with its trailers), then the answer's head read. What happens is reported to
// RestAttempts (OnSent, OnNotStarted, OnLost, OnAnswerHead); an answer it forwards is relayed to
// the app by the session's AnswerWriter, which reads its body through ReadAnswerBody.
//
//   exchange.Start(node);   // -> attempts.OnSent(slot, node) ... OnAnswerHead(slot, 200, ...)
//   exchange.End(/*reusable=*/true, /*failed=*/false);   // the connection back to its pool
//
// A pending read or write holds the session (shared) and the exchange's Io and connection, so an
// exchange ended with an operation pending can start another try at once; the handlers of an
// ended try see another generation() and do nothing.
//
// What it asks of its session (RestExchangeOwner): a reference for a pending operation, and, when
// the request cannot go on, the end of upstream, qpoold's own answer or the close. It reads a
// streamed body on the session's app connection (AppConnection, under the phase timer of
// SessionTimers), takes the request from the RequestReader, reports to RestAttempts, and gets its
// pools and node names from the RestSessionContext; all are passed in at construction.
//
// Ownership: part of a RestSession (two, by value); holds its connection (shared with the pool)
// from the pool's grant to End. Thread-safety: none; the session's thread.
#ifndef QPOOL_DAEMON_REST_REST_EXCHANGE_H_
#define QPOOL_DAEMON_REST_REST_EXCHANGE_H_

#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/system/error_code.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "daemon/pool/node_pool.h"
#include "daemon/rest/app_connection.h"
#include "daemon/rest/fast_io.h"
#include "daemon/rest/http_util.h"
#include "daemon/rest/request_reader.h"
#include "daemon/rest/session_context.h"
#include "daemon/rest/session_timers.h"
#include "daemon/rest/upstream.h"
#include "daemon/rest/upstream_stream.h"

namespace qpool::rest {

class RestAttempts;

// What a RestExchange asks of its session.
class RestExchangeOwner {
 public:
  // A reference that keeps the session (and the exchange) alive while a read or write is pending.
  virtual std::shared_ptr<void> Hold() = 0;
  // Ends the request's exchanges and attempts (RestSession::EndUpstream).
  virtual void EndUpstream(bool failed) = 0;
  // qpoold's own answer to the request; `close`: the connection closes after it.
  virtual void LocalReply(unsigned status, const std::string& message, bool close,
                          std::optional<int> retry_after_seconds) = 0;
  // The app connection closes now.
  virtual void Close() = 0;

 protected:
  ~RestExchangeOwner() = default;
};

// The parts of its session an exchange works with, besides its owner.
struct RestExchangeParts {
  AppConnection& app;
  RequestReader& reader;  // the request in flight; 100 Continue
  SessionTimers& timers;  // the phase timer, while a streamed body is read
  RestAttempts& attempts;
  const RestSessionContext& context;
};

class RestExchange final : public pool::StreamWaiter {
 public:
  using ResponseParser = HeadParser</*kIsRequest=*/false>;

  RestExchange(RestExchangeOwner& owner, const RestExchangeParts& parts, int slot)
      : slot_(slot), owner_(owner), parts_(parts) {}

  // pool::StreamWaiter: the pool's grant or refusal of a connection.
  void OnStreamReady(pool::PoolConnection* conn) override;
  void OnAcquireFailed(const absl::Status& status) override;

  // A new try of the request to `node`: a connection from its pool, now or later, then the
  // request; reports to RestAttempts.
  void Start(size_t node);
  // Writes the request on the connection had, then reads the answer's head. (A streamed request
  // with Expect: 100-continue comes back here once the app has its 100 Continue.)
  void WriteRequest();
  // Ends the try: leaves the pool's queue, or gives its connection back to its pool (reusable)
  // or closes it. No-op for an idle slot.
  void End(bool reusable, bool failed);

  // The answer's parser: its head read (OnAnswerHead), its body not yet.
  ResponseParser& response() { return *io_->response; }
  // Reads the answer's body into response().body() until `done(parser)`, then handler(ec, 0):
  // TLS through the connection's stream (what arrived goes on), cleartext through its reader.
  // The pending read holds the exchange's Io and connection.
  template <class Done, class Handler>
  void ReadAnswerBody(Done done, Handler&& handler);
  // The request went out whole: held whole (sent before the answer was read), or streamed to its
  // end.
  bool RequestSent() const;

  int slot() const { return slot_; }
  size_t node() const { return node_; }
  uint64_t generation() const { return generation_; }

 private:
  using Request = boost::beast::http::request<boost::beast::http::buffer_body>;
  using RequestSerializer = boost::beast::http::request_serializer<boost::beast::http::buffer_body>;

  // What the reads and writes work on. A pending operation holds it (shared) until it completes,
  // so an ended try's slot can start another at once.
  struct Io {
    std::string head;                // a request held whole: its head as this node gets it
    std::optional<Request> request;  // a streamed request as this node gets it (its own Host)
    std::optional<RequestSerializer> serializer;  // a streamed request's
    HttpHead response_head;  // the answer's head (response's), reused from answer to answer
    std::optional<ResponseParser> response;
    bool tail_written = false;  // a streamed request's last chunk (with trailers) went out
  };

  void OnReady(pool::PoolConnection* conn);
  void OnRefused(const absl::Status& status);
  // A streamed body: the app's next chunk read, then written upstream. One exchange, in slot 0
  // (no retry, no hedge).
  void RelayRequestChunk();
  // A streamed request's end when it has trailer fields: its last `got` bytes as a chunk, then the
  // last chunk with the trailers (Beast's serializer writes no trailers).
  void WriteRequestTail(size_t got);
  void ReadResponseHeader();
  void OnResponseHeader(const boost::system::error_code& ec);

  const int slot_;
  RestExchangeOwner& owner_;
  const RestExchangeParts parts_;
  size_t node_ = 0;
  pool::NodePool* queued_on_ = nullptr;
  std::shared_ptr<RestUpstreamConnection> upstream_;
  std::shared_ptr<Io> io_;
  uint64_t generation_ = 0;        // handlers of an ended try see another generation
  bool head_read_inline_ = false;  // inside ReadResponseHeader's ReadUntil call
};

template <class Done, class Handler>
void RestExchange::ReadAnswerBody(Done done, Handler&& handler) {
  auto on_read = [handler = std::forward<Handler>(handler), io = io_, conn = upstream_](
                     boost::system::error_code ec, size_t bytes) mutable { handler(ec, bytes); };
  if (!upstream_->cleartext()) {
    // TLS: the same through the connection's stream, which decrypts: what arrived goes on.
    ReadUntil(StreamReader<RestStream>(upstream_->stream(), upstream_->buffer()), *io_->response,
              done, std::move(on_read));
    return;
  }
  // Cleartext: the connection's reader (its idle watch's read, taken over, or a read of its own).
  ReadUntil(upstream_->reader(), *io_->response, done, std::move(on_read));
}

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_REST_EXCHANGE_H_
