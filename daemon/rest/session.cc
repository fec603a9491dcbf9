#include "daemon/rest/session.h"

#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <limits>

#include "absl/strings/str_cat.h"
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
// An answer's headers from Qdrant, at most: generous, Qdrant's are a few hundred bytes.
constexpr uint32_t kMaxResponseHeaderBytes = 1 << 20;

constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

std::string Millis(Duration d) {
  return absl::StrCat(std::chrono::duration_cast<std::chrono::milliseconds>(d).count(), " ms");
}

// A gRPC code for an HTTP answer, as the retry policy reads outcomes: 503 is UNAVAILABLE, 429 is
// RESOURCE_EXHAUSTED (retried only with Retry-After), anything else is final.
int GrpcCodeOfStatus(unsigned status) {
  if (status == 503) return 14;
  if (status == 429) return 8;
  return 0;
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
      deadline_timer_(worker.io(), [this] { OnDeadline(); }) {}

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
  parser_.emplace();
  parser_->header_limit(worker_.limits().max_header_bytes);
  parser_->body_limit(worker_.limits().max_body_bytes);
  request_serializer_.reset();
  response_parser_.reset();
  response_serializer_.reset();
  local_reply_.reset();
  // A large body's buffer goes back to the allocator: idle keep-alive connections hold little.
  if (body_.capacity() > kChunkBytes) {
    std::string().swap(body_);
  } else {
    body_.clear();
  }
  if (in_buffer_.size() == 0 && in_buffer_.capacity() > 16 * 1024) in_buffer_.shrink_to_fit();
  route_ = nullptr;
  retry_class_ = retry::RetryClass::kNeverRepeat;
  attempts_ = 0;
  deadline_.reset();
  streaming_ = expect_continue_ = continue_sent_ = head_ = false;
  response_started_ = upstream_reusable_ = close_after_ = false;
  keep_alive_ = true;
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
  auto& request = parser_->get();
  if (!refuse_message_.empty()) {
    LocalReply(503, refuse_message_, /*close=*/true);
    return;
  }
  if (request.version() != 11 && request.version() != 10) {
    // "PRI * HTTP/2.0" (an HTTP/2 client with prior knowledge) lands here.
    worker_.retry().protocol_errors->fetch_add(1, std::memory_order_relaxed);
    LocalReply(400,
               absl::StrCat("qpoold's REST port (rest.listen) speaks HTTP/1.1, got HTTP/",
                            request.version() / 10, ".", request.version() % 10,
                            "; gRPC goes to server.listen"),
               /*close=*/true);
    return;
  }
  size_t fields = 0;
  for (auto it = request.begin(); it != request.end(); ++it) fields++;
  if (fields > limits.max_headers) {
    LocalReply(431,
               absl::StrCat("request has ", fields, " header fields, more than rest.max_headers (",
                            limits.max_headers, ")"),
               /*close=*/true);
    return;
  }
  if (auto expect = request.find(http::field::expect); expect != request.end()) {
    if (!boost::beast::iequals(expect->value(), "100-continue")) {
      LocalReply(417, absl::StrCat("unsupported Expect: ", std::string(expect->value())), true);
      return;
    }
    // qpoold answers 100 Continue itself when it is ready for the body; Qdrant gets the body
    // without the expectation.
    expect_continue_ = true;
    request.erase(http::field::expect);
  }
  keep_alive_ = request.keep_alive();
  head_ = request.method() == http::verb::head;
  const std::string_view target(request.target().data(), request.target().size());
  const std::string_view verb(request.method_string().data(), request.method_string().size());
  route_ = FindQdrantRestRoute(verb, PathOf(target));

  // The deadline: rest.request_timeout, or the request's own ?timeout= plus a second when that
  // asks Qdrant to work longer.
  Duration budget = limits.request_timeout;
  if (std::optional<Duration> asked = QueryTimeout(target);
      asked && budget > Duration::zero() && *asked + std::chrono::seconds(1) > budget) {
    budget = *asked + std::chrono::seconds(1);
  }
  if (budget > Duration::zero()) {
    deadline_ = worker_.loop().Now() + budget;
    deadline_budget_ = budget;
    deadline_timer_.ArmAt(*deadline_, *this);
  }
  (*worker_.retry().active_calls)++;
  counted_active_ = true;

  if (parser_->is_done()) {  // no body
    BeginUpstream();
    return;
  }
  const RestRetryContext& retry = worker_.retry();
  const auto length = parser_->content_length();
  const int64_t held = retry.replay_bytes->load(std::memory_order_relaxed);
  const bool fits = retry.replay_per_call > 0 && (!length || *length <= retry.replay_per_call) &&
                    held + static_cast<int64_t>(length.value_or(kChunkBytes)) <= retry.replay_total;
  if (!fits) {
    streaming_ = true;  // read later, chunk by chunk, once an upstream connection is ours
    BeginUpstream();
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

void RestSession::ReadBodyIntoReplay() {
  const RestRetryContext& retry = worker_.retry();
  // One byte past the per-call limit tells a body that does not fit.
  const size_t room = retry.replay_per_call + 1 - std::min(body_.size(), retry.replay_per_call);
  const size_t chunk = std::min(kChunkBytes, room);
  const size_t old_size = body_.size();
  body_.resize(old_size + chunk);
  auto& body = parser_->get().body();
  body.data = body_.data() + old_size;
  body.size = chunk;
  ArmTimer(worker_.limits().keepalive_timeout, TimerRole::kBody);
  auto self = shared_from_this();
  ReadUntil(
      socket_, in_buffer_, *parser_, MessageDone{}, [self, old_size, chunk](error_code ec, size_t) {
        if (self->closed_) return;
        self->CancelTimer();
        self->body_.resize(old_size + chunk - self->parser_->get().body().size);
        if (ec == http::error::need_buffer) ec = {};
        if (ec == http::error::body_limit) {
          self->LocalReply(413,
                           absl::StrCat("request body larger than rest.max_body_bytes (",
                                        self->worker_.limits().max_body_bytes, " bytes)"),
                           /*close=*/true);
          return;
        }
        if (ec) {
          self->Close();  // the app went away, or sent a broken body
          return;
        }
        const int64_t added = static_cast<int64_t>(self->body_.size() - old_size);
        self->replay_held_ += added;
        self->worker_.retry().replay_bytes->fetch_add(added, std::memory_order_relaxed);
        if (self->parser_->is_done()) {
          self->BeginUpstream();
        } else if (self->body_.size() > self->worker_.retry().replay_per_call ||
                   self->replay_held_ +
                           self->worker_.retry().replay_bytes->load(std::memory_order_relaxed) >
                       self->worker_.retry().replay_total) {
          // Too large to keep: what was read goes first, the rest streams.
          self->streaming_ = true;
          self->BeginUpstream();
        } else {
          self->ReadBodyIntoReplay();
        }
      });
}

// --- upstream --------------------------------------------------------------------------------

void RestSession::BeginUpstream() {
  const retry::MethodClassifier& classifier = *worker_.retry().classifier;
  if (!streaming_) {
    std::string_view encoding;
    if (auto it = parser_->get().find(http::field::content_encoding); it != parser_->get().end()) {
      encoding = std::string_view(it->value().data(), it->value().size());
    }
    retry_class_ = classifier.ClassifyRest(
        route_, classifier.RestNeedsBody(route_) ? std::string_view(body_) : std::string_view(),
        encoding);
  }
  // The request as Qdrant gets it: no hop-by-hop fields, HTTP/1.1 keep-alive, framed by length
  // when qpoold holds the whole body, chunked when it streams one of unknown length.
  auto& request = parser_->get();
  const auto length = parser_->content_length();
  const bool chunked = parser_->chunked();
  StripHopByHop(request.base());
  request.version(11);
  if (!streaming_) {
    if (!body_.empty() || length || chunked) request.content_length(body_.size());
  } else if (chunked) {
    request.chunked(true);
  } else if (length) {
    request.content_length(*length);
  }
  Attempt(std::nullopt);
}

void RestSession::Attempt(std::optional<size_t> avoid_node) {
  if (closed_) return;
  attempts_++;
  RestHost& host = worker_.host();
  std::optional<size_t> node;
  if (avoid_node) node = host.PickRestNodeOtherThan(*avoid_node, worker_.pools());
  node_ = node ? *node : host.PickRestNode(worker_.pools());
  // A request held whole gets its Host when its head is written (SerializeHead); a streamed one
  // goes through Beast's serializer, which writes the fields as they are.
  if (streaming_) parser_->get().set(http::field::host, worker_.node_name(node_));
  pool::NodePool& pool = worker_.pool(node_);
  const pool::NodePool::AcquireResult result = pool.Acquire(*this);
  switch (result.outcome) {
    case pool::NodePool::AcquireOutcome::kReady:
      OnStreamReady(result.connection);
      return;
    case pool::NodePool::AcquireOutcome::kQueued:
      queued_on_ = &pool;
      return;
    case pool::NodePool::AcquireOutcome::kFailed:
      OnAcquireFailed(result.status);
      return;
  }
}

void RestSession::OnAcquireFailed(const absl::Status& status) {
  queued_on_ = nullptr;
  if (closed_) return;
  if (status.code() == absl::StatusCode::kResourceExhausted) {
    LocalReply(429, std::string(status.message()), /*close=*/streaming_, /*retry_after=*/1);
    return;
  }
  // Nothing was sent: a transparent retry elsewhere, if the policy and the deadline allow.
  retry::AttemptOutcome outcome;
  outcome.grpc_code = 14;
  outcome.never_reached_upstream = true;
  OnAttemptFailed(outcome, 503, std::string(status.message()));
}

void RestSession::OnStreamReady(pool::PoolConnection* conn) {
  queued_on_ = nullptr;
  auto* connection = static_cast<RestUpstreamConnection*>(conn);
  upstream_ = connection->shared_from_this();
  upstream_->BeginExchange();
  if (closed_) {
    EndUpstream(/*reusable=*/true, /*failed=*/false);
    return;
  }
  attempt_started_ = worker_.loop().Now();
  if (streaming_ && expect_continue_) {
    ContinueThen(&RestSession::WriteRequest);
    return;
  }
  WriteRequest();
}

void RestSession::WriteRequest() {
  if (closed_ || upstream_ == nullptr) return;
  auto& request = parser_->get();
  const uint64_t generation = ++attempt_generation_;
  auto self = shared_from_this();
  auto on_written = [self, generation, conn = upstream_](error_code ec, size_t) {
    if (generation != self->attempt_generation_ || self->closed_) return;
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      // Nothing of an answer yet: on a reused connection the server had closed it idle.
      retry::AttemptOutcome outcome;
      outcome.grpc_code = 14;
      outcome.never_reached_upstream = self->upstream_->exchanges() > 1;
      outcome.took = self->worker_.loop().Now() - self->attempt_started_;
      self->EndUpstream(false, true);
      self->OnAttemptFailed(
          outcome, 502,
          absl::StrCat("lost the connection to REST node ", self->worker_.node_name(self->node_),
                       " while sending the request: ", ec.message()));
      return;
    }
    if (self->streaming_) {
      self->body_.clear();  // sent: the rest of the body reuses the buffer chunk by chunk
      self->ReleaseReplay();
      if (!self->request_serializer_->is_done()) {
        self->RelayRequestChunk();
        return;
      }
    }
    self->ReadResponseHeader();
  };
  if (!streaming_) {
    // The whole request is here (framed by its Content-Length, or bodiless): its head and body
    // in one send, without Beast's serializer.
    SerializeHead(request.base(), wire_head_, worker_.node_name(node_));
    WriteHeadAndBody(upstream_->socket(), boost::asio::buffer(wire_head_),
                     boost::asio::buffer(body_.data(), body_.size()), std::move(on_written));
    return;
  }
  request_serializer_.emplace(request);
  auto& body = request.body();
  body.data = body_.empty() ? nullptr : body_.data();
  body.size = body_.size();
  body.more = !parser_->is_done();
  WriteAll(upstream_->socket(), *request_serializer_, std::move(on_written));
}

void RestSession::RelayRequestChunk() {
  body_.resize(kChunkBytes);
  auto& body = parser_->get().body();
  body.data = body_.data();
  body.size = kChunkBytes;
  ArmTimer(worker_.limits().keepalive_timeout, TimerRole::kBody);
  const uint64_t generation = attempt_generation_;
  auto self = shared_from_this();
  http::async_read(socket_, in_buffer_, *parser_, [self, generation](error_code ec, size_t) {
    if (generation != self->attempt_generation_ || self->closed_) return;
    self->CancelTimer();
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      self->EndUpstream(false, false);  // Qdrant has half a request: that connection goes
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
    auto& body = self->parser_->get().body();
    const size_t got = kChunkBytes - body.size;
    body.data = self->body_.data();
    body.size = got;
    body.more = !self->parser_->is_done();
    http::async_write(self->upstream_->socket(), *self->request_serializer_,
                      [self, generation, conn = self->upstream_](error_code ec, size_t) {
                        if (generation != self->attempt_generation_ || self->closed_) return;
                        if (ec == http::error::need_buffer) ec = {};
                        if (ec) {
                          self->EndUpstream(false, true);
                          self->LocalReply(
                              502,
                              absl::StrCat("lost the connection to REST node ",
                                           self->worker_.node_name(self->node_),
                                           " while sending the request body: ", ec.message()),
                              /*close=*/true);
                          return;
                        }
                        if (self->request_serializer_->is_done()) {
                          self->body_.clear();
                          self->body_.shrink_to_fit();
                          self->ReadResponseHeader();
                        } else {
                          self->RelayRequestChunk();
                        }
                      });
  });
}

void RestSession::ReadResponseHeader() {
  response_parser_.emplace();
  response_parser_->header_limit(kMaxResponseHeaderBytes);
  // Streamed through, never held whole: no limit.
  response_parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
  if (head_) response_parser_->skip(true);
  const uint64_t generation = attempt_generation_;
  auto self = shared_from_this();
  ReadUntil(upstream_->socket(), upstream_->buffer(), *response_parser_, HeaderDone{},
            [self, generation, conn = upstream_](const error_code& ec, size_t) {
              if (generation != self->attempt_generation_ || self->closed_) return;
              self->OnResponseHeader(ec);
            });
}

void RestSession::OnResponseHeader(const error_code& ec) {
  retry::AttemptOutcome outcome;
  outcome.took = worker_.loop().Now() - attempt_started_;
  if (ec) {
    // Closed before any byte of the answer on a connection that carried a request before: the
    // server closed it idle as the request went out, and never processed it.
    // (A reset counts too: the server's kernel resets a connection closed with our request
    // unread in it.)
    const bool nothing = !response_parser_->got_some() && upstream_->buffer().size() == 0 &&
                         (ec == http::error::end_of_stream || ec == boost::asio::error::eof ||
                          ec == boost::asio::error::connection_reset);
    outcome.grpc_code = 14;
    outcome.never_reached_upstream = nothing && upstream_->exchanges() > 1;
    EndUpstream(false, true);
    OnAttemptFailed(outcome, 502,
                    absl::StrCat("REST node ", worker_.node_name(node_),
                                 " closed the connection before answering: ", ec.message()));
    return;
  }
  auto& response = response_parser_->get();
  const unsigned status = response.result_int();
  if (status >= 100 && status < 200) {
    if (status == 101) {  // no protocol switch through qpoold
      EndUpstream(false, true);
      LocalReply(502, "REST node switched protocols (101); qpoold does not pass upgrades", true);
      return;
    }
    ReadResponseHeader();  // an interim answer: the final one follows
    return;
  }
  if (const int code = GrpcCodeOfStatus(status); code != 0 && !streaming_) {
    outcome.grpc_code = code;
    if (auto after = response.find(http::field::retry_after); after != response.end()) {
      uint32_t seconds = 0;
      const auto value = after->value();
      if (absl::SimpleAtoi(absl::string_view(value.data(), value.size()), &seconds)) {
        outcome.pushback = std::chrono::seconds(seconds);
      }
    }
    const retry::RetryDecision decision = worker_.retry().policy->Decide(
        retry_class_, attempts_, outcome, worker_.loop().Now(), deadline_, worker_.random());
    if (decision.retry && worker_.retry().policy_retries) {
      // Qdrant's own refusal; the attempt's answer is dropped with its connection.
      EndUpstream(false, false);
      OnAttemptFailed(outcome, status, "");
      return;
    }
  }
  ForwardResponse();
}

// --- app side: the answer --------------------------------------------------------------------

void RestSession::ForwardResponse() {
  response_started_ = true;
  deadline_timer_.Disarm();
  worker_.host().OnRestAttemptEnd(node_, false);
  (*worker_.retry().budgets)[node_].OnAttemptSucceeded();
  auto& response = response_parser_->get();
  upstream_reusable_ = response.keep_alive();
  const auto length = response_parser_->content_length();
  const bool has_body = !response_parser_->is_done();
  StripHopByHop(response.base());
  const bool old_client = parser_->get().version() == 10;
  response.version(parser_->get().version());
  if (length) {
    // Qdrant's Content-Length field stays as it came; repeated ones become one.
    if (response.count(http::field::content_length) != 1) response.content_length(*length);
  } else if (has_body) {
    // Chunked from Qdrant, or delimited by its close: chunked to a 1.1 app, close-delimited to
    // a 1.0 one.
    if (old_client) {
      close_after_ = true;
    } else {
      response.chunked(true);
    }
  }
  if (draining_) close_after_ = true;
  response.keep_alive(keep_alive_ && !close_after_ && parser_->is_done());
  RelayResponseChunk();  // the serializer, if one is needed, comes with the first write
}

void RestSession::RelayResponseChunk() {
  auto& body = response_parser_->get().body();
  if (response_parser_->is_done()) {
    body.data = nullptr;
    body.size = 0;
    body.more = false;
    WriteResponseChunk();
    return;
  }
  if (chunk_ == nullptr) {
    // Sized to the answer when its length is known (most are small); not zeroed.
    const auto left = response_parser_->content_length_remaining();  // boost::optional
    chunk_size_ = left ? static_cast<size_t>(std::min<uint64_t>(*left, kChunkBytes)) : kChunkBytes;
    chunk_.reset(new char[chunk_size_]);
  }
  body.data = chunk_.get();
  body.size = chunk_size_;
  const uint64_t generation = attempt_generation_;
  auto self = shared_from_this();
  // Some of the body (whatever the upstream buffer holds, else what the next read brings), or
  // the end of the answer.
  auto got_some = [this](const auto& parser) {
    return parser.is_done() || response_parser_->get().body().size < chunk_size_;
  };
  ReadUntil(upstream_->socket(), upstream_->buffer(), *response_parser_, got_some,
            [self, generation, conn = upstream_](error_code ec, size_t) {
              if (generation != self->attempt_generation_ || self->closed_) return;
              if (ec == http::error::need_buffer) ec = {};
              if (ec) {
                // Half an answer is out: the app sees its connection end.
                self->EndUpstream(false, true);
                self->worker_.host().OnRestAttemptEnd(self->node_, true);
                self->FinishRequest(502);
                self->Close();
                return;
              }
              auto& body = self->response_parser_->get().body();
              const size_t got = self->chunk_size_ - body.size;
              body.data = self->chunk_.get();
              body.size = got;
              body.more = !self->response_parser_->is_done();
              self->WriteResponseChunk();
            });
}

void RestSession::WriteResponseChunk() {
  const uint64_t generation = attempt_generation_;
  auto self = shared_from_this();
  auto& response = response_parser_->get();
  if (!response_serializer_ && response_parser_->is_done() && !response.chunked()) {
    // The whole answer was read, and it goes out framed as it came (Content-Length, no body, or
    // the close): its head and body in one send, without Beast's serializer.
    SerializeHead(response.base(), wire_head_);
    const auto& body = response.body();  // RelayResponseChunk pointed it at what was read
    const size_t size = body.data == nullptr ? 0 : body.size;
    WriteHeadAndBody(socket_, boost::asio::buffer(wire_head_), boost::asio::buffer(body.data, size),
                     [self, generation](error_code ec, size_t) {
                       if (generation != self->attempt_generation_ || self->closed_) return;
                       if (ec) {
                         self->EndUpstream(false, false);
                         self->FinishRequest(499);
                         self->Close();
                         return;
                       }
                       self->OnResponseDone();
                     });
    return;
  }
  if (!response_serializer_) response_serializer_.emplace(response);
  WriteAll(socket_, *response_serializer_, [self, generation](error_code ec, size_t) {
    if (generation != self->attempt_generation_ || self->closed_) return;
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      self->EndUpstream(false, false);
      self->FinishRequest(499);
      self->Close();
      return;
    }
    if (self->response_serializer_->is_done()) {
      self->OnResponseDone();
    } else {
      self->RelayResponseChunk();
    }
  });
}

void RestSession::OnResponseDone() {
  const unsigned status = response_parser_->get().result_int();
  // The request went out whole: held whole (sent before the answer was read), or streamed to the
  // serializer's end.
  const bool request_sent = !streaming_ || (request_serializer_ && request_serializer_->is_done());
  EndUpstream(upstream_reusable_ && request_sent && response_parser_->is_done(), false);
  chunk_.reset();
  const bool close = close_after_ || !keep_alive_ || !parser_->is_done();
  FinishRequest(status);
  if (close) {
    Close();
  } else {
    ReadRequest();
  }
}

// --- failures and retries --------------------------------------------------------------------

void RestSession::OnAttemptFailed(const retry::AttemptOutcome& outcome, unsigned status,
                                  const std::string& message) {
  RestRetryContext& retry = worker_.retry();
  retry::RetryBudget& budget = (*retry.budgets)[node_];
  if (retry_node_ >= 0) {
    (*retry.budgets)[static_cast<size_t>(retry_node_)].RetryEnded();
    retry_node_ = -1;
  }
  if (!outcome.never_reached_upstream) {
    worker_.host().OnRestAttemptEnd(node_, outcome.grpc_code == 14);
    budget.OnAttemptFailed();
  }
  if (!streaming_ && !response_started_ &&
      (outcome.never_reached_upstream || retry.policy_retries)) {
    const retry::RetryDecision decision = retry.policy->Decide(
        retry_class_, attempts_, outcome, worker_.loop().Now(), deadline_, worker_.random());
    const bool transparent = decision.reason == retry::RetryReason::kTransparent;
    if (decision.retry && (transparent || budget.MayRetry(*retry.active_calls))) {
      if (transparent) {
        retry.transparent_retries->fetch_add(1, std::memory_order_relaxed);
      } else {
        budget.RetryStarted();
        retry_node_ = static_cast<int>(node_);
      }
      worker_.metrics().RecordRetry(retry_class_, decision.reason);
      SPDLOG_DEBUG("REST {}: attempt {} failed ({}), retrying in {} us",
                   route_ != nullptr ? route_->pattern : std::string_view("(unknown route)"),
                   attempts_, retry::RetryReasonName(decision.reason),
                   std::chrono::duration_cast<std::chrono::microseconds>(decision.delay).count());
      // At least a turn of the loop: the retry never runs inside a pool callback. The backoff
      // timer's Attempt() avoids node_, the node that failed.
      ArmTimer(std::max<Duration>(decision.delay, std::chrono::microseconds(1)),
               TimerRole::kBackoff);
      return;
    }
  }
  if (message.empty()) {  // Qdrant's own refusal with nothing left to retry: dropped already
    LocalReply(status,
               absl::StrCat("REST node ", worker_.node_name(node_), " answered ", status,
                            " and retries are exhausted"),
               /*close=*/streaming_ || !parser_->is_done());
    return;
  }
  LocalReply(status, message, /*close=*/streaming_ || !parser_->is_done());
}

void RestSession::EndUpstream(bool reusable, bool failed) {
  attempt_generation_++;
  if (upstream_ == nullptr) return;
  std::shared_ptr<RestUpstreamConnection> upstream = std::move(upstream_);
  upstream->EndExchange(reusable, failed);
}

void RestSession::OnDeadline() {
  if (closed_ || !request_active_ || response_started_) return;
  if (queued_on_ != nullptr) {
    queued_on_->CancelWait(*this);
    queued_on_ = nullptr;
  }
  CancelTimer();  // a retry's backoff
  EndUpstream(false, true);
  LocalReply(
      504,
      absl::StrCat("no answer from Qdrant within the request deadline (", Millis(deadline_budget_),
                   ": rest.request_timeout, or the request's timeout parameter plus 1s)"),
      /*close=*/streaming_ || !parser_->is_done());
}

void RestSession::LocalReply(unsigned status, const std::string& message, bool close,
                             std::optional<int> retry_after_seconds) {
  if (closed_) return;
  if (queued_on_ != nullptr) {
    queued_on_->CancelWait(*this);
    queued_on_ = nullptr;
  }
  EndUpstream(false, true);
  deadline_timer_.Disarm();
  response_started_ = true;
  worker_.retry().local_replies->fetch_add(1, std::memory_order_relaxed);
  if (draining_) close = true;
  close_after_ = close;
  local_reply_ = std::make_unique<LocalResponse>(
      static_cast<http::status>(status), parser_ && parser_->get().version() == 10 ? 10 : 11);
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
  if (retry_node_ >= 0) {
    (*worker_.retry().budgets)[static_cast<size_t>(retry_node_)].RetryEnded();
    retry_node_ = -1;
  }
  if (counted_active_) (*worker_.retry().active_calls)--;
  counted_active_ = false;
  deadline_.reset();
  ReleaseReplay();
  worker_.metrics().RecordRestCall(metrics::ClassifyRestRoute(route_), status,
                                   worker_.loop().Now() - request_started_);
}

void RestSession::ReleaseReplay() {
  if (replay_held_ == 0) return;
  worker_.retry().replay_bytes->fetch_sub(replay_held_, std::memory_order_relaxed);
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
      EndUpstream(false, false);
      Close();
      return;
    case TimerRole::kBackoff:
      Attempt(node_);
      return;
  }
}

void RestSession::Close() {
  if (closed_) return;
  closed_ = true;
  if (queued_on_ != nullptr) {
    queued_on_->CancelWait(*this);
    queued_on_ = nullptr;
  }
  EndUpstream(false, request_active_);
  FinishRequest(499);
  timer_.Stop();
  deadline_timer_.Stop();
  error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  worker_.OnSessionClosed(this);
}

}  // namespace qpool::rest
