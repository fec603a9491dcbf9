#include "daemon/rest/rest_exchange.h"

#include <sys/socket.h>

#include <array>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <cerrno>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "daemon/rest/rest_attempts.h"

namespace qpool::rest {
namespace {

namespace http = boost::beast::http;
using boost::asio::ip::tcp;
using boost::system::error_code;

// An answer's headers from Qdrant, at most: generous, Qdrant's are a few hundred bytes.
constexpr uint32_t kMaxResponseHeaderBytes = 1 << 20;

// True when the peer of an idle connection has closed it (end of stream or an error waiting):
// one non-blocking peek, nothing consumed.
bool PeerClosed(tcp::socket& socket) {
  char byte;
  const ssize_t n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

}  // namespace

void RestExchange::Start(size_t node) {
  const RestRequest& request = parts_.reader.request();
  node_ = node;
  generation_++;
  // The previous try's io when no operation of it is pending any more (its buffers are reused),
  // else a new one. A request held whole is not copied: its head is written from the app's
  // request with this node's Host (WriteRequest); a streamed one (one try, no hedge) gets a copy
  // with its Host for Beast's serializer.
  if (io_ == nullptr || io_.use_count() != 1) io_ = std::make_shared<Io>();
  io_->serializer.reset();
  io_->response.reset();
  io_->tail_written = false;
  if (request.streaming) {
    io_->request.emplace(ToBeastRequest(request.head));
    io_->request->set(http::field::host, parts_.context.node_name(node_));
  } else {
    io_->request.reset();
  }
  pool::NodePool& pool = parts_.context.pool(node_);
  const pool::NodePool::AcquireResult result = pool.Acquire(*this);
  switch (result.outcome) {
    case pool::NodePool::AcquireOutcome::kReady:
      OnReady(result.connection);
      return;
    case pool::NodePool::AcquireOutcome::kQueued:
      queued_on_ = &pool;
      return;
    case pool::NodePool::AcquireOutcome::kFailed:
      OnRefused(result.status);
      return;
  }
}

void RestExchange::OnStreamReady(pool::PoolConnection* conn) { OnReady(conn); }

void RestExchange::OnAcquireFailed(const absl::Status& status) { OnRefused(status); }

void RestExchange::OnRefused(const absl::Status& status) {
  queued_on_ = nullptr;
  if (parts_.app.closed) return;
  // Nothing was sent. A node that cannot be reached at all is tried again (another one, or this
  // one after a backoff) within max_attempts or the deadline; any other refusal is answered.
  const bool unreachable =
      status.code() == absl::StatusCode::kUnavailable && !parts_.context.pool(node_).usable();
  parts_.attempts.OnNotStarted(slot_, static_cast<int>(node_), status, unreachable);
}

void RestExchange::OnReady(pool::PoolConnection* conn) {
  queued_on_ = nullptr;
  auto* connection = static_cast<RestUpstreamConnection*>(conn);
  upstream_ = connection->shared_from_this();
  upstream_->BeginExchange();
  if (parts_.app.closed) {
    End(/*reusable=*/true, /*failed=*/false);
    return;
  }
  parts_.attempts.OnSent(slot_, static_cast<int>(node_));
  const RestRequest& request = parts_.reader.request();
  if (request.OnceOnly() && upstream_->exchanges() > 1 && PeerClosed(upstream_->socket())) {
    // The node closed this idle connection (or went away) before the request was written: nothing
    // was sent, the request goes again.
    const std::string message = absl::StrCat("REST node ", parts_.context.node_name(node_),
                                             " had closed the idle connection");
    End(false, true);
    parts_.attempts.OnLost(slot_, /*never_reached=*/true, message);
    return;
  }
  if (request.streaming && request.expect_continue) {
    // A streamed body is one exchange, in slot 0: this one.
    parts_.reader.ContinueThen([this] { WriteRequest(); });
    return;
  }
  WriteRequest();
}

void RestExchange::WriteRequest() {
  if (parts_.app.closed || upstream_ == nullptr) return;
  RestRequest& request = parts_.reader.request();
  Io& io = *io_;
  const uint64_t generation = ++generation_;
  auto on_written = [self = owner_.Hold(), this, generation, io = io_, conn = upstream_](
                        error_code ec, size_t) {
    if (generation != generation_ || parts_.app.closed) return;
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      // Nothing of an answer yet: on a reused connection the server had closed it idle.
      const bool never_reached = upstream_->exchanges() > 1;
      const std::string message =
          absl::StrCat("lost the connection to REST node ", parts_.context.node_name(node_),
                       " while sending the request: ", ec.message());
      End(false, true);
      parts_.attempts.OnLost(slot_, never_reached, message);
      return;
    }
    if (parts_.reader.request().streaming) {
      // Sent: the rest of the body reuses the buffer chunk by chunk.
      parts_.reader.request().body.clear();
      parts_.reader.ReleaseReplay();
      if (!io->serializer->is_done()) {
        RelayRequestChunk();
        return;
      }
    }
    ReadResponseHeader();
  };
  const std::string& body = request.body;
  if (!request.streaming) {
    // The whole request is here (framed by its Content-Length, or bodiless): its head (with this
    // node's Host in place of the app's, the request itself untouched) and body in one send. A
    // retry or a hedge writes the same request again.
    SerializeRequestHead(request.head, io.head, parts_.context.node_name(node_));
    if (!request.tail.empty()) {
      // Trailer fields: the body as one chunk, then the last chunk with them.
      if (!body.empty()) AppendChunkHeader(body.size(), io.head);
      const std::array<boost::asio::const_buffer, 3> buffers{
          boost::asio::buffer(io.head), boost::asio::buffer(body.data(), body.size()),
          boost::asio::buffer(request.tail)};
      if (upstream_->cleartext()) {
        WriteBuffers(upstream_->socket(), buffers, std::move(on_written));
      } else {
        boost::asio::async_write(upstream_->stream(), buffers, std::move(on_written));
      }
      return;
    }
    if (upstream_->cleartext()) {
      WriteHeadAndBody(upstream_->socket(), boost::asio::buffer(io.head),
                       boost::asio::buffer(body.data(), body.size()), std::move(on_written));
    } else {
      // TLS: the bytes go through the connection's stream, which encrypts them.
      const std::array<boost::asio::const_buffer, 2> buffers{
          boost::asio::buffer(io.head), boost::asio::buffer(body.data(), body.size())};
      boost::asio::async_write(upstream_->stream(), buffers, std::move(on_written));
    }
    return;
  }
  io.serializer.emplace(*io.request);
  auto& request_body = io.request->body();
  request_body.data = body.empty() ? nullptr : request.body.data();
  request_body.size = body.size();
  request_body.more = !request.parser->is_done();
  if (upstream_->cleartext()) {
    WriteAll(upstream_->socket(), *io.serializer, std::move(on_written));
  } else {
    http::async_write(upstream_->stream(), *io.serializer, std::move(on_written));
  }
}

void RestExchange::RelayRequestChunk() {
  RestRequest& request = parts_.reader.request();
  request.body.resize(kChunkBytes);
  auto& body = request.parser->body();
  body.data = request.body.data();
  body.size = kChunkBytes;
  parts_.timers.ArmPhase(parts_.context.limits.keepalive_timeout, SessionPhase::kBody);
  const uint64_t generation = generation_;
  auto self = owner_.Hold();
  http::async_read(
      parts_.app.socket, parts_.app.in_buffer, *request.parser,
      [self, this, generation](error_code ec, size_t) {
        if (generation != generation_ || parts_.app.closed) return;
        parts_.timers.CancelPhase();
        if (ec == http::error::need_buffer) ec = {};
        if (ec) {
          owner_.EndUpstream(/*failed=*/false);  // Qdrant has half a request: that connection goes
          if (ec == http::error::body_limit) {
            owner_.LocalReply(413,
                              absl::StrCat("request body larger than rest.max_body_bytes (",
                                           parts_.context.limits.max_body_bytes, " bytes)"),
                              /*close=*/true, std::nullopt);
          } else {
            owner_.Close();
          }
          return;
        }
        RestRequest& request = parts_.reader.request();
        const size_t got = kChunkBytes - request.parser->body().size;
        if (request.parser->is_done() && request.head.has_trailers) {
          WriteRequestTail(got);
          return;
        }
        auto& body = io_->request->body();
        // No bytes: no data chunk (Beast's serializer would frame an empty buffer as "0\r\n\r\n").
        body.data = got != 0 ? request.body.data() : nullptr;
        body.size = got;
        body.more = !request.parser->is_done();
        http::async_write(
            upstream_->stream(), *io_->serializer,
            [self, this, generation, io = io_, conn = upstream_](error_code ec, size_t) {
              if (generation != generation_ || parts_.app.closed) return;
              if (ec == http::error::need_buffer) ec = {};
              if (ec) {
                const std::string message = absl::StrCat(
                    "lost the connection to REST node ", parts_.context.node_name(node_),
                    " while sending the request body: ", ec.message());
                owner_.EndUpstream(/*failed=*/true);
                owner_.LocalReply(502, message, /*close=*/true, std::nullopt);
                return;
              }
              if (io->serializer->is_done()) {
                std::string& body = parts_.reader.request().body;
                body.clear();
                body.shrink_to_fit();
                ReadResponseHeader();
              } else {
                RelayRequestChunk();
              }
            });
      });
}

void RestExchange::WriteRequestTail(size_t got) {
  RestRequest& request = parts_.reader.request();
  Io& io = *io_;
  io.head.clear();  // a streamed request's head went out with its serializer: free for this
  request.tail.clear();
  if (got != 0) {
    AppendChunkHeader(got, io.head);
    request.tail.append("\r\n", 2);
  }
  AppendLastChunk(request.head.trailers, request.tail);
  const std::array<boost::asio::const_buffer, 3> buffers{
      boost::asio::buffer(io.head), boost::asio::buffer(request.body.data(), got),
      boost::asio::buffer(request.tail)};
  const uint64_t generation = generation_;
  boost::asio::async_write(
      upstream_->stream(), buffers,
      [self = owner_.Hold(), this, generation, io = io_, conn = upstream_](error_code ec, size_t) {
        if (generation != generation_ || parts_.app.closed) return;
        if (ec) {
          const std::string message =
              absl::StrCat("lost the connection to REST node ", parts_.context.node_name(node_),
                           " while sending the request body: ", ec.message());
          owner_.EndUpstream(/*failed=*/true);
          owner_.LocalReply(502, message, /*close=*/true, std::nullopt);
          return;
        }
        io->tail_written = true;
        std::string& body = parts_.reader.request().body;
        body.clear();
        body.shrink_to_fit();
        ReadResponseHeader();
      });
}

void RestExchange::ReadResponseHeader() {
  Io& io = *io_;
  io.response.emplace(io.response_head);
  io.response->header_limit(kMaxResponseHeaderBytes);
  // Streamed through, never held whole: no limit.
  io.response->body_limit(std::numeric_limits<std::uint64_t>::max());
  if (parts_.reader.request().head_only) io.response->skip(true);
  const uint64_t generation = generation_;
  auto on_header = [self = owner_.Hold(), this, generation, io = io_, conn = upstream_](
                       const error_code& ec, size_t) {
    if (generation != generation_ || parts_.app.closed) return;
    OnResponseHeader(ec);
  };
  if (!upstream_->cleartext()) {
    // TLS: Beast reads through the connection's stream, which decrypts (never inline).
    http::async_read_header(upstream_->stream(), upstream_->buffer(), *io.response,
                            std::move(on_header));
    return;
  }
  // A head parsed at once from what the connection had buffered (an interim 100 answer's final
  // one, or bytes a server sent unasked) is taken up from the event loop: this may run inside the
  // attempt controller's StartAttempt, which the answer must not re-enter.
  head_read_inline_ = true;
  ReadUntil(upstream_->reader(), *io.response, HeaderDone{},
            [this, on_header = std::move(on_header)](const error_code& ec, size_t) mutable {
              if (head_read_inline_) {
                boost::asio::post(parts_.context.io, [on_header = std::move(on_header),
                                                      ec]() mutable { on_header(ec, 0); });
                return;
              }
              on_header(ec, 0);
            });
  head_read_inline_ = false;
}

void RestExchange::OnResponseHeader(const error_code& ec) {
  ResponseParser& parser = *io_->response;
  if (ec) {
    // Closed before any byte of the answer on a connection that carried a request before: the
    // server closed it idle as the request went out, and never processed it.
    // (A reset counts too: the server's kernel resets a connection closed with our request
    // unread in it.)
    const bool nothing = !parser.got_some() && upstream_->buffer().size() == 0 &&
                         (ec == http::error::end_of_stream || ec == boost::asio::error::eof ||
                          ec == boost::asio::error::connection_reset);
    // A request that must not run twice was written on a connection still open (OnReady looked):
    // the node may have taken it before it closed (it crashed or was killed while working on
    // it), so it is not replayed.
    const bool never_reached =
        nothing && upstream_->exchanges() > 1 && !parts_.reader.request().OnceOnly();
    const std::string message =
        absl::StrCat("REST node ", parts_.context.node_name(node_),
                     " closed the connection before answering: ", ec.message());
    End(false, true);
    parts_.attempts.OnLost(slot_, never_reached, message);
    return;
  }
  const HttpHead& response = parser.head();
  const unsigned status = response.status;
  if (status >= 100 && status < 200) {
    if (status == 101) {  // no protocol switch through qpoold
      owner_.EndUpstream(/*failed=*/true);
      owner_.LocalReply(502, "REST node switched protocols (101); qpoold does not pass upgrades",
                        /*close=*/true, std::nullopt);
      return;
    }
    ReadResponseHeader();  // an interim answer: the final one follows
    return;
  }
  std::optional<int> retry_after;
  if (const std::optional<std::string_view> after = response.fields.Get(http::field::retry_after)) {
    uint32_t seconds = 0;
    if (absl::SimpleAtoi(absl::string_view(after->data(), after->size()), &seconds)) {
      retry_after = static_cast<int>(std::min<uint32_t>(seconds, 1u << 30));
    }
  }
  // Forwarded (ForwardAnswer), held for a retry, or dropped (the exchange lost a race).
  parts_.attempts.OnAnswerHead(slot_, status, retry_after);
}

bool RestExchange::RequestSent() const {
  return !parts_.reader.request().streaming || io_->tail_written ||
         (io_->serializer && io_->serializer->is_done());
}

void RestExchange::End(bool reusable, bool failed) {
  generation_++;
  if (queued_on_ != nullptr) {
    queued_on_->CancelWait(*this);
    queued_on_ = nullptr;
  }
  if (upstream_ == nullptr) return;
  std::shared_ptr<RestUpstreamConnection> upstream = std::move(upstream_);
  upstream->EndExchange(reusable, failed);
}

}  // namespace qpool::rest
