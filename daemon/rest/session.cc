#include "daemon/rest/session.h"

#include <sys/socket.h>

#include <array>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <cerrno>
#include <limits>

#include "absl/base/optimization.h"
#include "absl/strings/str_cat.h"
#include "daemon/auth/api_keys.h"
#include "daemon/common/access_log.h"
#include "daemon/metrics/method_class.h"
#include "daemon/rest/fast_io.h"
#include "daemon/rest/http_util.h"
#include "daemon/rest/rest_worker.h"
#include "daemon/rest/upstream.h"
#include "spdlog/spdlog.h"

namespace qpool::rest {
namespace {

namespace http = boost::beast::http;
using boost::asio::ip::tcp;
using boost::system::error_code;

// Bytes moved per read and write once a body streams through.
constexpr size_t kChunkBytes = 64 * 1024;
// An answer's chunk buffer up to this size stays with the app connection for its next answers
// (the same bound as the read buffer's, ReadRequest): an idle connection holds little.
constexpr size_t kKeptChunkBytes = 16 * 1024;
// An answer's headers from Qdrant, at most: generous, Qdrant's are a few hundred bytes.
constexpr uint32_t kMaxResponseHeaderBytes = 1 << 20;

constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

// True when the peer of an idle connection has closed it (end of stream or an error waiting):
// one non-blocking peek, nothing consumed.
bool PeerClosed(tcp::socket& socket) {
  char byte;
  const ssize_t n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

std::string Millis(Duration d) {
  return absl::StrCat(std::chrono::duration_cast<std::chrono::milliseconds>(d).count(), " ms");
}

}  // namespace

RestSession::RestSession(RestWorker& worker, tcp::socket socket)
    : worker_(worker),
      socket_(std::move(socket)),
      in_buffer_(worker.limits().max_header_bytes + kChunkBytes),
      timer_(worker.io(),
             [this] {
               if (!closed_) OnTimer(timer_role_);
             }),
      deadline_timer_(worker.io(), [this] { OnDeadline(); }),
      attempts_(*worker.retry().context, worker.loop(), worker.random(), *this) {}

RestSession::~RestSession() { ReleaseReplay(); }

void RestSession::Start() {
  error_code ignored;
  socket_.set_option(tcp::no_delay(true), ignored);
  socket_.non_blocking(true, ignored);  // fast_io's writes: a full socket returns, never blocks
  ReadRequest();
}

void RestSession::Refuse(std::string message) {
  refuse_message_ = std::move(message);
  error_code ignored;
  socket_.non_blocking(true, ignored);
  ReadRequest();
}

void RestSession::BeginDrain() {
  draining_ = true;
  if (!request_active_) Close();
}

void RestSession::Abort() { Close(); }

// --- app side: the request -------------------------------------------------------------------

void RestSession::ReadRequest() {
  if (closed_) return;
  if (draining_) {
    Close();
    return;
  }
  parser_.emplace(request_head_);
  parser_->header_limit(worker_.limits().max_header_bytes);
  parser_->body_limit(worker_.limits().max_body_bytes);
  response_serializer_.reset();
  response_message_.reset();
  local_reply_.reset();
  chunk_size_ = 0;
  // A large body's buffer goes back to the allocator: idle keep-alive connections hold little.
  if (body_.capacity() > kChunkBytes) {
    std::string().swap(body_);
  } else {
    body_.clear();
  }
  if (in_buffer_.size() == 0 && in_buffer_.capacity() > 16 * 1024) in_buffer_.shrink_to_fit();
  route_ = nullptr;
  retry_class_ = retry::RetryClass::kNeverRepeat;
  answer_slot_ = 0;
  deadline_.reset();
  streaming_ = expect_continue_ = continue_sent_ = head_ = false;
  response_started_ = upstream_reusable_ = close_after_ = false;
  keep_alive_ = true;
  app_version_ = 11;
  if (in_buffer_.size() != 0) {  // a pipelined request is here already
    ReadHeader();
    return;
  }
  // Idle between requests, for keepalive_timeout. A connection that never sent a byte waits
  // without a buffer (async_wait); afterwards the buffer is there anyway, and a read is cheaper
  // than a wait (Asio re-registers the socket with epoll for every wait).
  ArmTimer(worker_.limits().keepalive_timeout, TimerRole::kIdle);
  auto self = shared_from_this();
  if (in_buffer_.capacity() == 0) {
    socket_.async_wait(tcp::socket::wait_read, [self](const error_code& ec) {
      if (self->closed_) return;
      self->CancelTimer();
      if (ec) {
        self->Close();
        return;
      }
      self->ReadHeader();
    });
    return;
  }
  socket_.async_read_some(in_buffer_.prepare(ReadSize(in_buffer_)),
                          [self](const error_code& ec, size_t bytes) {
                            self->in_buffer_.commit(bytes);
                            if (self->closed_) return;
                            self->CancelTimer();
                            if (ec) {
                              self->Close();  // the app closed its idle connection
                              return;
                            }
                            self->ReadHeader();
                          });
}

void RestSession::ReadHeader() {
  ArmTimer(worker_.limits().header_timeout, TimerRole::kHeader);
  auto self = shared_from_this();
  ReadUntil(socket_, in_buffer_, *parser_, HeaderDone{},
            [self](const error_code& ec, size_t) { self->OnRequestHeader(ec); });
}

void RestSession::OnRequestHeader(const error_code& ec) {
  if (closed_) return;
  CancelTimer();
  // The app's HTTP version, kept: the request goes on as HTTP/1.1 (BeginUpstream).
  app_version_ = request_head_.version == 10 ? 10 : 11;
  const RestLimits& limits = worker_.limits();
  if (ec) {
    if (ec == http::error::end_of_stream || ec == boost::asio::error::eof ||
        ec == boost::asio::error::connection_reset || ec == boost::asio::error::operation_aborted) {
      Close();  // the app went away between requests (or mid-headers)
      return;
    }
    request_active_ = true;
    request_started_ = worker_.loop().Now();
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
      LocalReply(431,
                 absl::StrCat("request headers larger than rest.max_header_bytes (",
                              limits.max_header_bytes, " bytes)"),
                 /*close=*/true);
    } else if (ec == http::error::body_limit) {
      LocalReply(413,
                 absl::StrCat("request body larger than rest.max_body_bytes (",
                              limits.max_body_bytes, " bytes)"),
                 /*close=*/true);
    } else {
      worker_.retry().protocol_errors->fetch_add(1, std::memory_order_relaxed);
      LocalReply(400, absl::StrCat("malformed HTTP/1.1 request: ", ec.message()), /*close=*/true);
    }
    return;
  }
  request_active_ = true;
  request_started_ = worker_.loop().Now();
  if (worker_.retry().calls_started != nullptr) {
    worker_.retry().calls_started->fetch_add(1, std::memory_order_relaxed);
  }
  HttpHead& request = request_head_;
  if (!refuse_message_.empty()) {
    LocalReply(503, refuse_message_, /*close=*/true);
    return;
  }
  if (request.version != 11 && request.version != 10) {
    // "PRI * HTTP/2.0" (an HTTP/2 client with prior knowledge) lands here.
    worker_.retry().protocol_errors->fetch_add(1, std::memory_order_relaxed);
    LocalReply(400,
               absl::StrCat("qpoold's REST port (rest.listen) speaks HTTP/1.1, got HTTP/",
                            request.version / 10, ".", request.version % 10,
                            "; gRPC goes to server.listen"),
               /*close=*/true);
    return;
  }
  const size_t fields = request.fields.size();
  if (fields > limits.max_headers) {
    LocalReply(431,
               absl::StrCat("request has ", fields, " header fields, more than rest.max_headers (",
                            limits.max_headers, ")"),
               /*close=*/true);
    return;
  }
  if (const std::optional<std::string_view> expect = request.fields.Get(http::field::expect)) {
    if (!boost::beast::iequals(BeastView(*expect), "100-continue")) {
      LocalReply(417, absl::StrCat("unsupported Expect: ", std::string(*expect)), true);
      return;
    }
    // qpoold answers 100 Continue itself when it is ready for the body; Qdrant gets the body
    // without the expectation.
    expect_continue_ = true;
    request.fields.Erase(http::field::expect);
  }
  keep_alive_ = request.KeepAlive();
  head_ = request.method == http::verb::head;
  const std::string_view target = request.target;
  const std::string_view verb = request.method_string;
  route_ = FindQdrantRestRoute(verb, PathOf(target));

  // The deadline: rest.request_timeout, or the request's own ?timeout= plus a second when that
  // asks Qdrant to work longer.
  Duration budget = limits.request_timeout;
  callers_deadline_ = false;
  if (std::optional<Duration> asked = QueryTimeout(target);
      asked && budget > Duration::zero() && *asked + std::chrono::seconds(1) > budget) {
    budget = *asked + std::chrono::seconds(1);
    callers_deadline_ = true;  // the app's own: a node that cannot be reached is waited for
  }
  if (budget > Duration::zero()) {
    deadline_ = worker_.loop().Now() + budget;
    deadline_budget_ = budget;
    deadline_timer_.ArmAt(*deadline_, *this);
  }
  if (parser_->is_done()) {  // no body
    BeginUpstream();
    return;
  }
  // The body is kept whole for a retry or a hedge when it fits the replay limits (the same as a
  // gRPC call's: retry.replay_buffer_per_call, retry.replay_buffer_total).
  const retry::ReplayLimits& replay = worker_.retry().context->replay;
  const auto length = parser_->content_length();
  const int64_t held = ReplayBytesHeld();
  std::optional<retry::ReplayLimit> refused;
  if (replay.per_call == 0 || (length && *length > replay.per_call)) {
    refused = retry::ReplayLimit::kPerCall;
  } else if (held + static_cast<int64_t>(length.value_or(kChunkBytes)) > replay.total) {
    refused = retry::ReplayLimit::kTotal;
  }
  if (refused) {
    StreamBody(*refused);  // read later, chunk by chunk, once an upstream connection is ours
    return;
  }
  if (length) body_.reserve(*length);
  ContinueThen(&RestSession::ReadBodyIntoReplay);
}

void RestSession::ContinueThen(void (RestSession::*next)()) {
  if (!expect_continue_ || continue_sent_) {
    (this->*next)();
    return;
  }
  continue_sent_ = true;
  auto self = shared_from_this();
  boost::asio::async_write(socket_, boost::asio::buffer(kContinue.data(), kContinue.size()),
                           [self, next](const error_code& ec, size_t) {
                             if (self->closed_) return;
                             if (ec) {
                               self->Close();
                               return;
                             }
                             ((*self).*next)();
                           });
}

int64_t RestSession::ReplayBytesHeld() const {
  const std::atomic<int64_t>* total = worker_.retry().context->replay.total_bytes;
  return total != nullptr ? total->load(std::memory_order_relaxed) : 0;
}

void RestSession::StreamBody(retry::ReplayLimit limit) {
  streaming_ = true;
  if (retry::RetryEvents* events = worker_.retry().context->events) events->OnReplayRefused(limit);
  BeginUpstream();
}

void RestSession::ReadBodyIntoReplay() {
  const size_t per_call = worker_.retry().context->replay.per_call;
  // One byte past the per-call limit tells a body that does not fit.
  const size_t room = per_call + 1 - std::min(body_.size(), per_call);
  const size_t chunk = std::min(kChunkBytes, room);
  const size_t old_size = body_.size();
  body_.resize(old_size + chunk);
  auto& body = parser_->body();
  body.data = body_.data() + old_size;
  body.size = chunk;
  ArmTimer(worker_.limits().keepalive_timeout, TimerRole::kBody);
  auto self = shared_from_this();
  ReadUntil(socket_, in_buffer_, *parser_, MessageDone{},
            [self, old_size, chunk](error_code ec, size_t) {
              if (self->closed_) return;
              self->CancelTimer();
              self->body_.resize(old_size + chunk - self->parser_->body().size);
              if (ec == http::error::need_buffer) ec = {};
              if (ec == http::error::body_limit) {
                self->LocalReply(413,
                                 absl::StrCat("request body larger than rest.max_body_bytes (",
                                              self->worker_.limits().max_body_bytes, " bytes)"),
                                 /*close=*/true);
                return;
              }
              if (ec == http::error::buffer_overflow) {
                // Only a chunked body's trailer section fills the buffer: it is parsed whole.
                self->LocalReply(431,
                                 absl::StrCat("request trailer fields larger than "
                                              "rest.max_header_bytes (",
                                              self->worker_.limits().max_header_bytes, " bytes)"),
                                 /*close=*/true);
                return;
              }
              if (ec) {
                self->Close();  // the app went away, or sent a broken body
                return;
              }
              const int64_t added = static_cast<int64_t>(self->body_.size() - old_size);
              const retry::ReplayLimits& replay = self->worker_.retry().context->replay;
              self->replay_held_ += added;
              if (replay.total_bytes != nullptr) {
                replay.total_bytes->fetch_add(added, std::memory_order_relaxed);
              }
              if (self->parser_->is_done()) {
                self->BeginUpstream();
              } else if (self->body_.size() > replay.per_call) {
                self->StreamBody(
                    retry::ReplayLimit::kPerCall);  // what was read goes first, the rest streams
              } else if (self->replay_held_ + self->ReplayBytesHeld() > replay.total) {
                self->StreamBody(retry::ReplayLimit::kTotal);
              } else {
                self->ReadBodyIntoReplay();
              }
            });
}

// --- upstream --------------------------------------------------------------------------------

void RestSession::BeginUpstream() {
  const retry::MethodClassifier& classifier = worker_.retry().context->classifier;
  if (!streaming_) {
    const std::string_view encoding =
        request_head_.fields.Get(http::field::content_encoding).value_or(std::string_view());
    retry_class_ = classifier.ClassifyRest(
        route_, classifier.RestNeedsBody(route_) ? std::string_view(body_) : std::string_view(),
        encoding);
  }
  // The request as Qdrant gets it: no hop-by-hop fields, HTTP/1.1 keep-alive, framed by length
  // when qpoold holds the whole body, chunked when it streams one of unknown length; qpoold's
  // API key, set once here, so every attempt of the request carries the key it started with.
  HttpHead& request = request_head_;
  SetApiKey(request.fields);
  const auto length = parser_->content_length();
  const bool chunked = parser_->chunked();
  const bool te_trailers = StripHopByHop(request.fields);
  request.version = 11;
  if (te_trailers) {
    // The app takes trailer fields, and qpoold passes them on: the next hop may send them too.
    request.fields.Set(http::field::te, "trailers");
    request.fields.Set(http::field::connection, "TE");
  }
  request_tail_.clear();
  if (!streaming_ && request.has_trailers) {
    // The held body goes as one chunk (when it has bytes) and the last chunk carries the
    // trailer fields on (WriteRequest).
    request.SetChunked();
    if (!body_.empty()) request_tail_.append("\r\n", 2);
    AppendLastChunk(request.trailers, request_tail_);
  } else if (!streaming_) {
    if (!body_.empty() || length || chunked) request.SetContentLength(body_.size());
  } else if (chunked) {
    request.SetChunked();
  } else if (length) {
    request.SetContentLength(*length);
  }
  attempts_.Begin(deadline_, callers_deadline_, retry_class_, /*replayable=*/!streaming_);
}

void RestSession::SetApiKey(HeaderFields& request) {
  const std::shared_ptr<const auth::ApiKeys> keys = worker_.host().RestApiKeys();
  if (keys == nullptr) return;
  const std::string_view key =
      keys->For(metrics::ClassifyRestRoute(route_) == metrics::MethodClass::kRead);
  if (key.empty()) return;
  const bool app_key = request.Get(std::string_view("api-key")).has_value();
  const std::optional<std::string_view> bearer = request.Get(http::field::authorization);
  const bool app_bearer =
      bearer && boost::beast::iequals(
                    boost::beast::string_view(bearer->data(), std::min<size_t>(bearer->size(), 7)),
                    "bearer ");
  if (worker_.host().RestKeyMode() == auth::KeyMode::kIfAbsent && (app_key || app_bearer)) {
    return;  // the app's own key (api-key, or Authorization: Bearer as Qdrant takes it) goes on
  }
  if (app_bearer) request.Erase(http::field::authorization);
  request.Set(std::string_view("api-key"), key);
}

void RestSession::StartExchange(int slot, int node, int avoid_node) {
  if (closed_) return;
  Exchange& ex = exchanges_[slot];
  pool::Balancer& balancer = worker_.balancer();
  if (node >= 0) {
    ex.node = static_cast<size_t>(node);
  } else {
    // The balancer's choice; a retry goes to another node when there is one to go to.
    std::optional<size_t> other;
    if (avoid_node >= 0) {
      other = balancer.PickOtherThan(pool::Protocol::kRest, static_cast<size_t>(avoid_node));
    }
    ex.node = other ? *other : balancer.Pick(pool::Protocol::kRest);
  }
  ex.generation++;
  // The previous try's io when no operation of it is pending any more (its buffers are reused),
  // else a new one. A request held whole is not copied: its head is written from the app's
  // request with this node's Host (WriteRequest); a streamed one (one try, no hedge) gets a copy
  // with its Host for Beast's serializer.
  if (ex.io == nullptr || ex.io.use_count() != 1) ex.io = std::make_shared<ExchangeIo>();
  ex.io->serializer.reset();
  ex.io->response.reset();
  ex.io->tail_written = false;
  if (streaming_) {
    ex.io->request.emplace(ToBeastRequest(request_head_));
    ex.io->request->set(http::field::host, worker_.node_name(ex.node));
  } else {
    ex.io->request.reset();
  }
  pool::NodePool& pool = worker_.pool(ex.node);
  const pool::NodePool::AcquireResult result = pool.Acquire(ex);
  switch (result.outcome) {
    case pool::NodePool::AcquireOutcome::kReady:
      OnExchangeReady(ex, result.connection);
      return;
    case pool::NodePool::AcquireOutcome::kQueued:
      ex.queued_on = &pool;
      return;
    case pool::NodePool::AcquireOutcome::kFailed:
      OnExchangeRefused(ex, result.status);
      return;
  }
}

void RestSession::Exchange::OnStreamReady(pool::PoolConnection* conn) {
  session_.OnExchangeReady(*this, conn);
}

void RestSession::Exchange::OnAcquireFailed(const absl::Status& status) {
  session_.OnExchangeRefused(*this, status);
}

void RestSession::OnExchangeRefused(Exchange& ex, const absl::Status& status) {
  ex.queued_on = nullptr;
  if (closed_) return;
  // Nothing was sent. A node that cannot be reached at all is tried again (another one, or this
  // one after a backoff) within max_attempts or the deadline; any other refusal is answered.
  const bool unreachable =
      status.code() == absl::StatusCode::kUnavailable && !worker_.pool(ex.node).usable();
  attempts_.OnNotStarted(ex.slot, static_cast<int>(ex.node), status, unreachable);
}

void RestSession::OnExchangeReady(Exchange& ex, pool::PoolConnection* conn) {
  ex.queued_on = nullptr;
  auto* connection = static_cast<RestUpstreamConnection*>(conn);
  ex.upstream = connection->shared_from_this();
  ex.upstream->BeginExchange();
  if (closed_) {
    EndExchange(ex, /*reusable=*/true, /*failed=*/false);
    return;
  }
  attempts_.OnSent(ex.slot, static_cast<int>(ex.node));
  if (OnceOnly() && ex.upstream->exchanges() > 1 && PeerClosed(ex.upstream->socket())) {
    // The node closed this idle connection (or went away) before the request was written: nothing
    // was sent, the request goes again.
    const std::string message =
        absl::StrCat("REST node ", worker_.node_name(ex.node), " had closed the idle connection");
    EndExchange(ex, false, true);
    attempts_.OnLost(ex.slot, /*never_reached=*/true, message);
    return;
  }
  if (streaming_ && expect_continue_) {
    ContinueThen(&RestSession::WriteFirstRequest);
    return;
  }
  WriteRequest(ex);
}

void RestSession::WriteRequest(Exchange& ex) {
  if (closed_ || ex.upstream == nullptr) return;
  ExchangeIo& io = *ex.io;
  const int slot = ex.slot;
  const uint64_t generation = ++ex.generation;
  auto self = shared_from_this();
  auto on_written = [self, slot, generation, io = ex.io, conn = ex.upstream](error_code ec,
                                                                             size_t) {
    Exchange& ex = self->exchanges_[slot];
    if (generation != ex.generation || self->closed_) return;
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      // Nothing of an answer yet: on a reused connection the server had closed it idle.
      const bool never_reached = ex.upstream->exchanges() > 1;
      const std::string message =
          absl::StrCat("lost the connection to REST node ", self->worker_.node_name(ex.node),
                       " while sending the request: ", ec.message());
      self->EndExchange(ex, false, true);
      self->attempts_.OnLost(slot, never_reached, message);
      return;
    }
    if (self->streaming_) {
      self->body_.clear();  // sent: the rest of the body reuses the buffer chunk by chunk
      self->ReleaseReplay();
      if (!io->serializer->is_done()) {
        self->RelayRequestChunk();
        return;
      }
    }
    self->ReadResponseHeader(ex);
  };
  if (!streaming_) {
    // The whole request is here (framed by its Content-Length, or bodiless): its head (with this
    // node's Host in place of the app's, the request itself untouched) and body in one send. A
    // retry or a hedge writes the same request again.
    SerializeRequestHead(request_head_, io.head, worker_.node_name(ex.node));
    if (!request_tail_.empty()) {
      // Trailer fields: the body as one chunk, then the last chunk with them.
      if (!body_.empty()) AppendChunkHeader(body_.size(), io.head);
      const std::array<boost::asio::const_buffer, 3> buffers{
          boost::asio::buffer(io.head), boost::asio::buffer(body_.data(), body_.size()),
          boost::asio::buffer(request_tail_)};
      if (ex.upstream->cleartext()) {
        WriteBuffers(ex.upstream->socket(), buffers, std::move(on_written));
      } else {
        boost::asio::async_write(ex.upstream->stream(), buffers, std::move(on_written));
      }
      return;
    }
    if (ex.upstream->cleartext()) {
      WriteHeadAndBody(ex.upstream->socket(), boost::asio::buffer(io.head),
                       boost::asio::buffer(body_.data(), body_.size()), std::move(on_written));
    } else {
      // TLS: the bytes go through the connection's stream, which encrypts them.
      const std::array<boost::asio::const_buffer, 2> buffers{
          boost::asio::buffer(io.head), boost::asio::buffer(body_.data(), body_.size())};
      boost::asio::async_write(ex.upstream->stream(), buffers, std::move(on_written));
    }
    return;
  }
  io.serializer.emplace(*io.request);
  auto& body = io.request->body();
  body.data = body_.empty() ? nullptr : body_.data();
  body.size = body_.size();
  body.more = !parser_->is_done();
  if (ex.upstream->cleartext()) {
    WriteAll(ex.upstream->socket(), *io.serializer, std::move(on_written));
  } else {
    http::async_write(ex.upstream->stream(), *io.serializer, std::move(on_written));
  }
}

void RestSession::RelayRequestChunk() {
  // A streamed body: one exchange, in slot 0 (no retry, no hedge).
  Exchange& ex = exchanges_[0];
  body_.resize(kChunkBytes);
  auto& body = parser_->body();
  body.data = body_.data();
  body.size = kChunkBytes;
  ArmTimer(worker_.limits().keepalive_timeout, TimerRole::kBody);
  const uint64_t generation = ex.generation;
  auto self = shared_from_this();
  http::async_read(socket_, in_buffer_, *parser_, [self, generation](error_code ec, size_t) {
    Exchange& ex = self->exchanges_[0];
    if (generation != ex.generation || self->closed_) return;
    self->CancelTimer();
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      self->EndUpstream(/*failed=*/false);  // Qdrant has half a request: that connection goes
      if (ec == http::error::body_limit) {
        self->LocalReply(413,
                         absl::StrCat("request body larger than rest.max_body_bytes (",
                                      self->worker_.limits().max_body_bytes, " bytes)"),
                         /*close=*/true);
      } else {
        self->Close();
      }
      return;
    }
    const size_t got = kChunkBytes - self->parser_->body().size;
    if (self->parser_->is_done() && self->request_head_.has_trailers) {
      self->WriteRequestTail(ex, got);
      return;
    }
    auto& body = ex.io->request->body();
    // No bytes: no data chunk (Beast's serializer would frame an empty buffer as "0\r\n\r\n").
    body.data = got != 0 ? self->body_.data() : nullptr;
    body.size = got;
    body.more = !self->parser_->is_done();
    http::async_write(ex.upstream->stream(), *ex.io->serializer,
                      [self, generation, io = ex.io, conn = ex.upstream](error_code ec, size_t) {
                        Exchange& ex = self->exchanges_[0];
                        if (generation != ex.generation || self->closed_) return;
                        if (ec == http::error::need_buffer) ec = {};
                        if (ec) {
                          const std::string message = absl::StrCat(
                              "lost the connection to REST node ", self->worker_.node_name(ex.node),
                              " while sending the request body: ", ec.message());
                          self->EndUpstream(/*failed=*/true);
                          self->LocalReply(502, message, /*close=*/true);
                          return;
                        }
                        if (io->serializer->is_done()) {
                          self->body_.clear();
                          self->body_.shrink_to_fit();
                          self->ReadResponseHeader(ex);
                        } else {
                          self->RelayRequestChunk();
                        }
                      });
  });
}

void RestSession::WriteRequestTail(Exchange& ex, size_t got) {
  ExchangeIo& io = *ex.io;
  io.head.clear();  // a streamed request's head went out with its serializer: free for this
  request_tail_.clear();
  if (got != 0) {
    AppendChunkHeader(got, io.head);
    request_tail_.append("\r\n", 2);
  }
  AppendLastChunk(request_head_.trailers, request_tail_);
  const std::array<boost::asio::const_buffer, 3> buffers{boost::asio::buffer(io.head),
                                                         boost::asio::buffer(body_.data(), got),
                                                         boost::asio::buffer(request_tail_)};
  const uint64_t generation = ex.generation;
  auto self = shared_from_this();
  boost::asio::async_write(
      ex.upstream->stream(), buffers,
      [self, generation, io = ex.io, conn = ex.upstream](error_code ec, size_t) {
        Exchange& ex = self->exchanges_[0];
        if (generation != ex.generation || self->closed_) return;
        if (ec) {
          const std::string message =
              absl::StrCat("lost the connection to REST node ", self->worker_.node_name(ex.node),
                           " while sending the request body: ", ec.message());
          self->EndUpstream(/*failed=*/true);
          self->LocalReply(502, message, /*close=*/true);
          return;
        }
        io->tail_written = true;
        self->body_.clear();
        self->body_.shrink_to_fit();
        self->ReadResponseHeader(ex);
      });
}

void RestSession::ReadResponseHeader(Exchange& ex) {
  ExchangeIo& io = *ex.io;
  io.response.emplace(io.response_head);
  io.response->header_limit(kMaxResponseHeaderBytes);
  // Streamed through, never held whole: no limit.
  io.response->body_limit(std::numeric_limits<std::uint64_t>::max());
  if (head_) io.response->skip(true);
  const int slot = ex.slot;
  const uint64_t generation = ex.generation;
  auto self = shared_from_this();
  auto on_header = [self, slot, generation, io = ex.io, conn = ex.upstream](const error_code& ec,
                                                                            size_t) {
    Exchange& ex = self->exchanges_[slot];
    if (generation != ex.generation || self->closed_) return;
    self->OnResponseHeader(ex, ec);
  };
  if (!ex.upstream->cleartext()) {
    // TLS: Beast reads through the connection's stream, which decrypts (never inline).
    http::async_read_header(ex.upstream->stream(), ex.upstream->buffer(), *io.response,
                            std::move(on_header));
    return;
  }
  // A head parsed at once from what the connection had buffered (an interim 100 answer's final
  // one, or bytes a server sent unasked) is taken up from the event loop: this may run inside the
  // attempt controller's StartAttempt, which the answer must not re-enter.
  head_read_inline_ = true;
  ReadUntil(ex.upstream->reader(), *io.response, HeaderDone{},
            [self, on_header = std::move(on_header)](const error_code& ec, size_t) mutable {
              if (self->head_read_inline_) {
                boost::asio::post(self->worker_.io(), [on_header = std::move(on_header),
                                                       ec]() mutable { on_header(ec, 0); });
                return;
              }
              on_header(ec, 0);
            });
  head_read_inline_ = false;
}

void RestSession::OnResponseHeader(Exchange& ex, const error_code& ec) {
  ResponseParser& parser = *ex.io->response;
  if (ec) {
    // Closed before any byte of the answer on a connection that carried a request before: the
    // server closed it idle as the request went out, and never processed it.
    // (A reset counts too: the server's kernel resets a connection closed with our request
    // unread in it.)
    const bool nothing = !parser.got_some() && ex.upstream->buffer().size() == 0 &&
                         (ec == http::error::end_of_stream || ec == boost::asio::error::eof ||
                          ec == boost::asio::error::connection_reset);
    // A request that must not run twice was written on a connection still open (OnExchangeReady
    // looked): the node may have taken it before it closed (it crashed or was killed while
    // working on it), so it is not replayed.
    const bool never_reached = nothing && ex.upstream->exchanges() > 1 && !OnceOnly();
    const std::string message =
        absl::StrCat("REST node ", worker_.node_name(ex.node),
                     " closed the connection before answering: ", ec.message());
    EndExchange(ex, false, true);
    attempts_.OnLost(ex.slot, never_reached, message);
    return;
  }
  const HttpHead& response = parser.head();
  const unsigned status = response.status;
  if (status >= 100 && status < 200) {
    if (status == 101) {  // no protocol switch through qpoold
      EndUpstream(/*failed=*/true);
      LocalReply(502, "REST node switched protocols (101); qpoold does not pass upgrades", true);
      return;
    }
    ReadResponseHeader(ex);  // an interim answer: the final one follows
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
  attempts_.OnAnswerHead(ex.slot, status, retry_after);
}

void RestSession::CancelExchange(int slot) { EndExchange(exchanges_[slot], false, false); }

int RestSession::PickOtherNode(int node) {
  const std::optional<size_t> other =
      worker_.balancer().PickOtherThan(pool::Protocol::kRest, static_cast<size_t>(node));
  return other ? static_cast<int>(*other) : -1;
}

void RestSession::ForwardAnswer(int slot) {
  answer_slot_ = slot;
  ForwardResponse();
}

void RestSession::ReplyLocally(unsigned status, const std::string& message,
                               std::optional<int> retry_after_seconds) {
  LocalReply(status, message, /*close=*/streaming_ || !parser_->is_done(), retry_after_seconds);
}

// --- app side: the answer --------------------------------------------------------------------

void RestSession::ForwardResponse() {
  Exchange& ex = exchanges_[answer_slot_];
  ResponseParser& parser = *ex.io->response;
  response_started_ = true;
  deadline_timer_.Disarm();
  HttpHead& response = parser.head();
  upstream_reusable_ = response.KeepAlive();
  const auto length = parser.content_length();
  const bool has_body = !parser.is_done();
  StripHopByHop(response.fields);
  const bool old_client = app_version_ == 10;
  response.version = app_version_;
  if (length) {
    // Qdrant's Content-Length field stays as it came; repeated ones become one.
    if (response.fields.Count(http::field::content_length) != 1) {
      response.SetContentLength(*length);
    }
  } else if (has_body) {
    // Chunked from Qdrant, or delimited by its close: chunked to a 1.1 app, close-delimited to
    // a 1.0 one.
    if (old_client) {
      close_after_ = true;
    } else {
      response.SetChunked();
    }
  }
  if (draining_) close_after_ = true;
  response.SetKeepAlive(keep_alive_ && !close_after_ && parser_->is_done());
  RelayResponseChunk();  // the serializer, if one is needed, comes with the first write
}

void RestSession::RelayResponseChunk() {
  Exchange& ex = exchanges_[answer_slot_];
  ResponseParser& parser = *ex.io->response;
  auto& body = parser.body();
  if (parser.is_done()) {
    answer_body_ = {nullptr, 0, false};
    WriteResponseChunk();
    return;
  }
  if (chunk_size_ == 0) {
    // Sized to the answer when its length is known (most are small); not zeroed. A buffer up to
    // kKeptChunkBytes stays for the connection's next answers.
    const auto left = parser.content_length_remaining();  // boost::optional
    chunk_size_ = left ? static_cast<size_t>(std::min<uint64_t>(*left, kChunkBytes)) : kChunkBytes;
    if (chunk_size_ > chunk_capacity_) {
      chunk_.reset(new char[chunk_size_]);
      chunk_capacity_ = chunk_size_;
    }
  }
  body.data = chunk_.get();
  body.size = chunk_size_;
  const int slot = ex.slot;
  const uint64_t generation = ex.generation;
  auto self = shared_from_this();
  // Some of the body (whatever the upstream buffer holds, else what the next read brings), or
  // the end of the answer.
  auto got_some = [&parser, size = chunk_size_](const auto& basic) {
    return basic.is_done() || parser.body().size < size;
  };
  auto on_read = [self, slot, generation, io = ex.io, conn = ex.upstream](error_code ec, size_t) {
    Exchange& ex = self->exchanges_[slot];
    if (generation != ex.generation || self->closed_) return;
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      // Half an answer is out: the app sees its connection end.
      const size_t node = ex.node;
      self->EndUpstream(/*failed=*/true);
      self->worker_.balancer().OnAttemptEnd(node, /*failed=*/true);
      self->FinishRequest(502);
      self->Close();
      return;
    }
    ResponseParser& parser = *io->response;
    const size_t got = self->chunk_size_ - parser.body().size;
    if (parser.is_done() && parser.head().has_trailers && parser.head().Chunked()) {
      self->WriteResponseTail(got);  // chunked to the app: the trailers go on
      return;
    }
    // No bytes: no data chunk (Beast's serializer would frame an empty buffer as "0\r\n\r\n").
    self->answer_body_ = {got != 0 ? self->chunk_.get() : nullptr, got, !parser.is_done()};
    self->WriteResponseChunk();
  };
  if (!ex.upstream->cleartext()) {
    // TLS: the same through the connection's stream, which decrypts: what arrived goes on.
    ReadUntil(StreamReader<RestStream>(ex.upstream->stream(), ex.upstream->buffer()), parser,
              got_some, std::move(on_read));
    return;
  }
  // Cleartext: the connection's reader (its idle watch's read, taken over, or a read of its own).
  ReadUntil(ex.upstream->reader(), parser, got_some, std::move(on_read));
}

void RestSession::WriteResponseChunk() {
  const int slot = answer_slot_;
  ResponseParser& parser = *exchanges_[slot].io->response;
  const uint64_t generation = exchanges_[slot].generation;
  auto self = shared_from_this();
  const HttpHead& response = parser.head();
  if (!response_serializer_ && parser.is_done() && !response.Chunked()) {
    // The whole answer was read, and it goes out framed as it came (Content-Length, no body, or
    // the close): its head and body in one send, without a body serializer.
    SerializeResponseHead(response, wire_head_);
    const auto& body = answer_body_;  // what RelayResponseChunk read
    const size_t size = body.data == nullptr ? 0 : body.size;
    WriteHeadAndBody(socket_, boost::asio::buffer(wire_head_), boost::asio::buffer(body.data, size),
                     [self, slot, generation](error_code ec, size_t) {
                       if (self->AnswerWritten(slot, generation, ec)) self->OnResponseDone();
                     });
    return;
  }
  if (!response_serializer_) {
    // Streamed or chunked: Beast's serializer, over the head as a Beast message.
    response_message_.emplace(ToBeastResponse(response));
    response_serializer_.emplace(*response_message_);
  }
  response_message_->body() = answer_body_;
  WriteAll(socket_, *response_serializer_, [self, slot, generation](error_code ec, size_t) {
    if (ec == http::error::need_buffer) ec = {};
    if (!self->AnswerWritten(slot, generation, ec)) return;
    if (self->response_serializer_->is_done()) {
      self->OnResponseDone();
    } else {
      self->RelayResponseChunk();
    }
  });
}

void RestSession::WriteResponseTail(size_t got) {
  const int slot = answer_slot_;
  ResponseParser& parser = *exchanges_[slot].io->response;
  const uint64_t generation = exchanges_[slot].generation;
  if (response_serializer_) {
    wire_head_.clear();  // the head went out with the first chunk
  } else {
    SerializeResponseHead(parser.head(), wire_head_);  // the whole answer was read at once
  }
  response_tail_.clear();
  if (got != 0) {
    AppendChunkHeader(got, wire_head_);
    response_tail_.append("\r\n", 2);
  }
  AppendLastChunk(parser.head().trailers, response_tail_);
  const std::array<boost::asio::const_buffer, 3> buffers{boost::asio::buffer(wire_head_),
                                                         boost::asio::buffer(chunk_.get(), got),
                                                         boost::asio::buffer(response_tail_)};
  auto self = shared_from_this();
  WriteBuffers(socket_, buffers, [self, slot, generation](error_code ec, size_t) {
    if (self->AnswerWritten(slot, generation, ec)) self->OnResponseDone();
  });
}

bool RestSession::AnswerWritten(int slot, uint64_t generation, const error_code& ec) {
  if (generation != exchanges_[slot].generation || closed_) return false;
  if (ec) {
    // The app went away mid-answer: the request ends, and so does its connection.
    EndUpstream(/*failed=*/false);
    FinishRequest(499);
    Close();
    return false;
  }
  return true;
}

void RestSession::OnResponseDone() {
  Exchange& ex = exchanges_[answer_slot_];
  ExchangeIo& io = *ex.io;
  const unsigned status = io.response_head.status;
  // The request went out whole: held whole (sent before the answer was read), or streamed to the
  // serializer's end.
  const bool request_sent =
      !streaming_ || io.tail_written || (io.serializer && io.serializer->is_done());
  EndExchange(ex, upstream_reusable_ && request_sent && io.response->is_done(), false);
  chunk_size_ = 0;
  if (chunk_capacity_ > kKeptChunkBytes) {
    chunk_.reset();
    chunk_capacity_ = 0;
  }
  const bool close = close_after_ || !keep_alive_ || !parser_->is_done();
  FinishRequest(status);
  if (close) {
    Close();
  } else {
    ReadRequest();
  }
}

// --- failures --------------------------------------------------------------------------------

void RestSession::EndExchange(Exchange& ex, bool reusable, bool failed) {
  ex.generation++;
  if (ex.queued_on != nullptr) {
    ex.queued_on->CancelWait(ex);
    ex.queued_on = nullptr;
  }
  if (ex.upstream == nullptr) return;
  std::shared_ptr<RestUpstreamConnection> upstream = std::move(ex.upstream);
  upstream->EndExchange(reusable, failed);
}

void RestSession::EndUpstream(bool failed) {
  for (Exchange& ex : exchanges_) EndExchange(ex, false, failed);
  attempts_.Stop();
}

void RestSession::OnDeadline() {
  if (closed_ || !request_active_ || response_started_) return;
  EndUpstream(/*failed=*/true);
  LocalReply(
      504,
      absl::StrCat("no answer from Qdrant within the request deadline (", Millis(deadline_budget_),
                   ": rest.request_timeout, or the request's timeout parameter plus 1s)"),
      /*close=*/streaming_ || !parser_->is_done());
}

void RestSession::LocalReply(unsigned status, const std::string& message, bool close,
                             std::optional<int> retry_after_seconds) {
  if (closed_) return;
  EndUpstream(/*failed=*/true);
  deadline_timer_.Disarm();
  response_started_ = true;
  worker_.retry().local_replies->fetch_add(1, std::memory_order_relaxed);
  if (draining_) close = true;
  close_after_ = close;
  local_reply_ = std::make_unique<LocalResponse>(static_cast<http::status>(status), app_version_);
  local_reply_->set(http::field::content_type, "application/json");
  if (retry_after_seconds) {
    local_reply_->set(http::field::retry_after, std::to_string(*retry_after_seconds));
  }
  local_reply_->body() = ErrorBody(message);
  local_reply_->keep_alive(!close && keep_alive_);
  local_reply_->prepare_payload();
  SPDLOG_DEBUG("REST local reply {}: {}", status, message);
  auto self = shared_from_this();
  http::async_write(socket_, *local_reply_, [self, status](const error_code& ec, size_t) {
    if (self->closed_) return;
    self->FinishRequest(status);
    if (ec || self->close_after_ || !self->keep_alive_) {
      self->Close();
    } else {
      self->ReadRequest();
    }
  });
}

void RestSession::FinishRequest(unsigned status) {
  if (!request_active_) return;
  request_active_ = false;
  const Duration duration = worker_.loop().Now() - request_started_;
  // Before End(), which forgets the attempts.
  if (ABSL_PREDICT_FALSE(AccessLogSampled(worker_.random()))) LogAccess(status, duration);
  attempts_.End();  // the request stops counting as active
  deadline_.reset();
  ReleaseReplay();
  worker_.metrics().RecordRestCall(metrics::ClassifyRestRoute(route_), status, duration);
}

void RestSession::LogAccess(unsigned status, Duration duration) {
  AccessRecord record;
  record.protocol = "rest";
  const std::string_view verb = request_head_.method_string;
  record.method = verb.empty() ? std::string_view("-") : verb;
  record.route = route_ != nullptr ? route_->pattern : std::string_view("other");
  record.retry_class = retry::RetryClassName(retry_class_);
  record.status = static_cast<int>(status);
  record.duration = duration;
  record.attempts = attempts_.attempts();
  if (record.attempts > 0) record.node = worker_.node_name(exchanges_[answer_slot_].node);
  error_code ec;
  const tcp::endpoint peer = socket_.remote_endpoint(ec);
  const std::string peer_text =
      ec ? "unknown" : absl::StrCat(peer.address().to_string(), ":", peer.port());
  record.peer = peer_text;
  WriteAccessLine(record);
}

void RestSession::ReleaseReplay() {
  if (replay_held_ == 0) return;
  if (std::atomic<int64_t>* total = worker_.retry().context->replay.total_bytes) {
    total->fetch_sub(replay_held_, std::memory_order_relaxed);
  }
  replay_held_ = 0;
}

// --- timers and close ------------------------------------------------------------------------

void RestSession::ArmTimer(Duration after, TimerRole role) {
  timer_role_ = role;
  timer_.ArmAt(MonoClock::now() + after, *this);
}

void RestSession::CancelTimer() { timer_.Disarm(); }

void RestSession::OnTimer(TimerRole role) {
  switch (role) {
    case TimerRole::kNone:
      return;
    case TimerRole::kIdle:
      Close();  // rest.keepalive_timeout: an idle app connection
      return;
    case TimerRole::kHeader:
      // rest.header_timeout: headers trickling in (slowloris). The peer loses its connection.
      SPDLOG_DEBUG("REST app connection: no complete request headers within rest.header_timeout");
      worker_.retry().protocol_errors->fetch_add(1, std::memory_order_relaxed);
      Close();
      return;
    case TimerRole::kBody:
      // A body that stalls for rest.keepalive_timeout.
      EndUpstream(/*failed=*/false);
      Close();
      return;
  }
}

void RestSession::Close() {
  if (closed_) return;
  closed_ = true;
  EndUpstream(/*failed=*/request_active_);
  FinishRequest(499);
  timer_.Stop();
  deadline_timer_.Stop();
  error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  worker_.OnSessionClosed(this);
}

}  // namespace qpool::rest
