#include "daemon/rest/request_reader.h"

#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>
#include <memory>

#include "absl/strings/str_cat.h"
#include "daemon/auth/api_keys.h"
#include "daemon/metrics/method_class.h"
#include "daemon/rest/fast_io.h"
#include "daemon/rest/rest_attempts.h"

namespace qpool::rest {
namespace {

namespace http = boost::beast::http;
using boost::asio::ip::tcp;
using boost::system::error_code;

constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

// Bytes every request's replay copy holds in the process (both protocols).
int64_t ReplayBytesHeld(const RestSessionContext& context) {
  const std::atomic<int64_t>* total = context.retry.context->replay.total_bytes;
  return total != nullptr ? total->load(std::memory_order_relaxed) : 0;
}

// Puts qpoold's API key on the request (upstream.api_key_*, api_key_mode): the read-only key for
// a read route when there is one, else the full key.
void SetApiKey(RestHost& host, const QdrantRestRoute* route, HeaderFields& request) {
  const std::shared_ptr<const auth::ApiKeys> keys = host.RestApiKeys();
  if (keys == nullptr) return;
  const std::string_view key =
      keys->For(metrics::ClassifyRestRoute(route) == metrics::MethodClass::kRead);
  if (key.empty()) return;
  const bool app_key = request.Get(std::string_view("api-key")).has_value();
  const std::optional<std::string_view> bearer = request.Get(http::field::authorization);
  const bool app_bearer =
      bearer && boost::beast::iequals(
                    boost::beast::string_view(bearer->data(), std::min<size_t>(bearer->size(), 7)),
                    "bearer ");
  if (host.RestKeyMode() == auth::KeyMode::kIfAbsent && (app_key || app_bearer)) {
    return;  // the app's own key (api-key, or Authorization: Bearer as Qdrant takes it) goes on
  }
  if (app_bearer) request.Erase(http::field::authorization);
  request.Set(std::string_view("api-key"), key);
}

}  // namespace

void RequestReader::ReadNext() {
  RestRequest& request = request_;
  request.parser.emplace(request.head);
  request.parser->header_limit(context_.limits.max_header_bytes);
  request.parser->body_limit(context_.limits.max_body_bytes);
  // A large body's buffer goes back to the allocator: idle keep-alive connections hold little.
  if (request.body.capacity() > kChunkBytes) {
    std::string().swap(request.body);
  } else {
    request.body.clear();
  }
  boost::beast::flat_buffer& in_buffer = app_.in_buffer;
  if (in_buffer.size() == 0 && in_buffer.capacity() > 16 * 1024) in_buffer.shrink_to_fit();
  request.route = nullptr;
  request.retry_class = retry::RetryClass::kNeverRepeat;
  request.streaming = request.expect_continue = request.continue_sent = request.head_only = false;
  request.keep_alive = true;
  request.app_version = 11;
  if (in_buffer.size() != 0) {  // a pipelined request is here already
    ReadHeader();
    return;
  }
  // Idle between requests, for keepalive_timeout. A connection that never sent a byte waits
  // without a buffer (async_wait); afterwards the buffer is there anyway, and a read is cheaper
  // than a wait (Asio re-registers the socket with epoll for every wait).
  timers_.ArmPhase(context_.limits.keepalive_timeout, SessionPhase::kIdle);
  auto self = owner_.Hold();
  if (in_buffer.capacity() == 0) {
    app_.socket.async_wait(tcp::socket::wait_read, [self, this](const error_code& ec) {
      if (app_.closed) return;
      timers_.CancelPhase();
      if (ec) {
        owner_.Close();
        return;
      }
      ReadHeader();
    });
    return;
  }
  app_.socket.async_read_some(in_buffer.prepare(ReadSize(in_buffer)),
                              [self, this](const error_code& ec, size_t bytes) {
                                app_.in_buffer.commit(bytes);
                                if (app_.closed) return;
                                timers_.CancelPhase();
                                if (ec) {
                                  owner_.Close();  // the app closed its idle connection
                                  return;
                                }
                                ReadHeader();
                              });
}

void RequestReader::ReadHeader() {
  timers_.ArmPhase(context_.limits.header_timeout, SessionPhase::kHeader);
  ReadUntil(app_.socket, app_.in_buffer, *request_.parser, HeaderDone{},
            [self = owner_.Hold(), this](const error_code& ec, size_t) { OnHeader(ec); });
}

void RequestReader::OnHeader(const error_code& ec) {
  if (app_.closed) return;
  timers_.CancelPhase();
  HttpHead& head = request_.head;
  // The app's HTTP version, kept: the request goes on as HTTP/1.1 (BeginUpstream).
  request_.app_version = head.version == 10 ? 10 : 11;
  const RestLimits& limits = context_.limits;
  if (ec) {
    if (ec == http::error::end_of_stream || ec == boost::asio::error::eof ||
        ec == boost::asio::error::connection_reset || ec == boost::asio::error::operation_aborted) {
      owner_.Close();  // the app went away between requests (or mid-headers)
      return;
    }
    owner_.OnRequestHead();
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
      owner_.LocalReply(431,
                        absl::StrCat("request headers larger than rest.max_header_bytes (",
                                     limits.max_header_bytes, " bytes)"),
                        /*close=*/true, std::nullopt);
    } else if (ec == http::error::body_limit) {
      owner_.LocalReply(413,
                        absl::StrCat("request body larger than rest.max_body_bytes (",
                                     limits.max_body_bytes, " bytes)"),
                        /*close=*/true, std::nullopt);
    } else {
      context_.retry.protocol_errors->fetch_add(1, std::memory_order_relaxed);
      owner_.LocalReply(400, absl::StrCat("malformed HTTP/1.1 request: ", ec.message()),
                        /*close=*/true, std::nullopt);
    }
    return;
  }
  owner_.OnRequestHead();
  if (context_.retry.calls_started != nullptr) {
    context_.retry.calls_started->fetch_add(1, std::memory_order_relaxed);
  }
  if (!refuse_message_.empty()) {
    owner_.LocalReply(503, refuse_message_, /*close=*/true, std::nullopt);
    return;
  }
  if (head.version != 11 && head.version != 10) {
    // "PRI * HTTP/2.0" (an HTTP/2 client with prior knowledge) lands here.
    context_.retry.protocol_errors->fetch_add(1, std::memory_order_relaxed);
    owner_.LocalReply(
        400,
        absl::StrCat("qpoold's REST port (rest.listen) speaks HTTP/1.1, got HTTP/",
                     head.version / 10, ".", head.version % 10, "; gRPC goes to server.listen"),
        /*close=*/true, std::nullopt);
    return;
  }
  const size_t fields = head.fields.size();
  if (fields > limits.max_headers) {
    owner_.LocalReply(
        431,
        absl::StrCat("request has ", fields, " header fields, more than rest.max_headers (",
                     limits.max_headers, ")"),
        /*close=*/true, std::nullopt);
    return;
  }
  if (const std::optional<std::string_view> expect = head.fields.Get(http::field::expect)) {
    if (!boost::beast::iequals(BeastView(*expect), "100-continue")) {
      owner_.LocalReply(417, absl::StrCat("unsupported Expect: ", std::string(*expect)),
                        /*close=*/true, std::nullopt);
      return;
    }
    // qpoold answers 100 Continue itself when it is ready for the body; Qdrant gets the body
    // without the expectation.
    request_.expect_continue = true;
    head.fields.Erase(http::field::expect);
  }
  request_.keep_alive = head.KeepAlive();
  request_.head_only = head.method == http::verb::head;
  const std::string_view target = head.target;
  const std::string_view verb = head.method_string;
  request_.route = FindQdrantRestRoute(verb, PathOf(target));

  // The deadline: rest.request_timeout, or the request's own ?timeout= plus a second when that
  // asks Qdrant to work longer.
  Duration budget = limits.request_timeout;
  bool callers = false;
  if (std::optional<Duration> asked = QueryTimeout(target);
      asked && budget > Duration::zero() && *asked + std::chrono::seconds(1) > budget) {
    budget = *asked + std::chrono::seconds(1);
    callers = true;  // the app's own: a node that cannot be reached is waited for
  }
  timers_.StartDeadline(context_.loop.Now(), budget, callers);
  if (request_.parser->is_done()) {  // no body
    BeginUpstream();
    return;
  }
  // The body is kept whole for a retry or a hedge when it fits the replay limits (the same as a
  // gRPC call's: retry.replay_buffer_per_call, retry.replay_buffer_total).
  const retry::ReplayLimits& replay = context_.retry.context->replay;
  const auto length = request_.parser->content_length();
  const int64_t held = ReplayBytesHeld(context_);
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
  if (length) request_.body.reserve(*length);
  ContinueThen([this] { ReadBodyIntoReplay(); });
}

void RequestReader::SendContinue(std::function<void()> next) {
  request_.continue_sent = true;
  boost::asio::async_write(
      app_.socket, boost::asio::buffer(kContinue.data(), kContinue.size()),
      [self = owner_.Hold(), this, next = std::move(next)](const error_code& ec, size_t) {
        if (app_.closed) return;
        if (ec) {
          owner_.Close();
          return;
        }
        next();
      });
}

void RequestReader::StreamBody(retry::ReplayLimit limit) {
  request_.streaming = true;
  if (retry::RetryEvents* events = context_.retry.context->events) {
    events->OnReplayRefused(limit);
  }
  BeginUpstream();
}

void RequestReader::ReadBodyIntoReplay() {
  std::string& body_copy = request_.body;
  const size_t per_call = context_.retry.context->replay.per_call;
  // One byte past the per-call limit tells a body that does not fit.
  const size_t room = per_call + 1 - std::min(body_copy.size(), per_call);
  const size_t chunk = std::min(kChunkBytes, room);
  const size_t old_size = body_copy.size();
  body_copy.resize(old_size + chunk);
  auto& body = request_.parser->body();
  body.data = body_copy.data() + old_size;
  body.size = chunk;
  timers_.ArmPhase(context_.limits.keepalive_timeout, SessionPhase::kBody);
  ReadUntil(app_.socket, app_.in_buffer, *request_.parser, MessageDone{},
            [self = owner_.Hold(), this, old_size, chunk](error_code ec, size_t) {
              if (app_.closed) return;
              timers_.CancelPhase();
              RestRequest& request = request_;
              request.body.resize(old_size + chunk - request.parser->body().size);
              if (ec == http::error::need_buffer) ec = {};
              if (ec == http::error::body_limit) {
                owner_.LocalReply(413,
                                  absl::StrCat("request body larger than rest.max_body_bytes (",
                                               context_.limits.max_body_bytes, " bytes)"),
                                  /*close=*/true, std::nullopt);
                return;
              }
              if (ec == http::error::buffer_overflow) {
                // Only a chunked body's trailer section fills the buffer: it is parsed whole.
                owner_.LocalReply(431,
                                  absl::StrCat("request trailer fields larger than "
                                               "rest.max_header_bytes (",
                                               context_.limits.max_header_bytes, " bytes)"),
                                  /*close=*/true, std::nullopt);
                return;
              }
              if (ec) {
                owner_.Close();  // the app went away, or sent a broken body
                return;
              }
              const int64_t added = static_cast<int64_t>(request.body.size() - old_size);
              const retry::ReplayLimits& replay = context_.retry.context->replay;
              request.replay_held += added;
              if (replay.total_bytes != nullptr) {
                replay.total_bytes->fetch_add(added, std::memory_order_relaxed);
              }
              if (request.parser->is_done()) {
                BeginUpstream();
              } else if (request.body.size() > replay.per_call) {
                StreamBody(retry::ReplayLimit::kPerCall);  // what was read goes first, the rest
                                                           // streams
              } else if (request.replay_held + ReplayBytesHeld(context_) > replay.total) {
                StreamBody(retry::ReplayLimit::kTotal);
              } else {
                ReadBodyIntoReplay();
              }
            });
}

void RequestReader::BeginUpstream() {
  const retry::MethodClassifier& classifier = context_.retry.context->classifier;
  RestRequest& request = request_;
  if (!request.streaming) {
    const std::string_view encoding =
        request.head.fields.Get(http::field::content_encoding).value_or(std::string_view());
    request.retry_class = classifier.ClassifyRest(request.route,
                                                  classifier.RestNeedsBody(request.route)
                                                      ? std::string_view(request.body)
                                                      : std::string_view(),
                                                  encoding);
  }
  // The request as Qdrant gets it: no hop-by-hop fields, HTTP/1.1 keep-alive, framed by length
  // when qpoold holds the whole body, chunked when it streams one of unknown length; qpoold's
  // API key, set once here, so every attempt of the request carries the key it started with.
  HttpHead& head = request.head;
  SetApiKey(context_.host, request.route, head.fields);
  const auto length = request.parser->content_length();
  const bool chunked = request.parser->chunked();
  const bool te_trailers = StripHopByHop(head.fields);
  head.version = 11;
  if (te_trailers) {
    // The app takes trailer fields, and qpoold passes them on: the next hop may send them too.
    head.fields.Set(http::field::te, "trailers");
    head.fields.Set(http::field::connection, "TE");
  }
  request.tail.clear();
  if (!request.streaming && head.has_trailers) {
    // The held body goes as one chunk (when it has bytes) and the last chunk carries the
    // trailer fields on (RestExchange::WriteRequest).
    head.SetChunked();
    if (!request.body.empty()) request.tail.append("\r\n", 2);
    AppendLastChunk(head.trailers, request.tail);
  } else if (!request.streaming) {
    if (!request.body.empty() || length || chunked) head.SetContentLength(request.body.size());
  } else if (chunked) {
    head.SetChunked();
  } else if (length) {
    head.SetContentLength(*length);
  }
  attempts_.Begin(timers_.deadline(), timers_.callers_deadline(), request.retry_class,
                  /*replayable=*/!request.streaming);
}

void RequestReader::ReleaseReplay() {
  if (request_.replay_held == 0) return;
  if (std::atomic<int64_t>* total = context_.retry.context->replay.total_bytes) {
    total->fetch_sub(request_.replay_held, std::memory_order_relaxed);
  }
  request_.replay_held = 0;
}

}  // namespace qpool::rest
