#include "daemon/rest/session.h"

#include <boost/beast/http/write.hpp>

#include "absl/base/optimization.h"
#include "absl/strings/str_cat.h"
#include "daemon/common/access_log.h"
#include "daemon/metrics/method_class.h"
#include "spdlog/spdlog.h"

namespace qpool::rest {
namespace {

namespace http = boost::beast::http;
using boost::asio::ip::tcp;
using boost::system::error_code;

std::string Millis(Duration d) {
  return absl::StrCat(std::chrono::duration_cast<std::chrono::milliseconds>(d).count(), " ms");
}

// The request's access log line (access_log.h). `node`: the node that answered (or was tried
// last); null when no attempt started.
void LogAccess(const RestRequest& request, const RestAttempts& attempts, const std::string* node,
               tcp::socket& socket, unsigned status, Duration duration) {
  AccessRecord record;
  record.protocol = "rest";
  const std::string_view verb = request.head.method_string;
  record.method = verb.empty() ? std::string_view("-") : verb;
  record.route = request.route != nullptr ? request.route->pattern : std::string_view("other");
  record.retry_class = retry::RetryClassName(request.retry_class);
  record.status = static_cast<int>(status);
  record.duration = duration;
  record.attempts = attempts.attempts();
  if (node != nullptr) record.node = *node;
  error_code ec;
  const tcp::endpoint peer = socket.remote_endpoint(ec);
  const std::string peer_text =
      ec ? "unknown" : absl::StrCat(peer.address().to_string(), ":", peer.port());
  record.peer = peer_text;
  WriteAccessLine(record);
}

}  // namespace

RestSession::RestSession(const RestSessionContext& context, tcp::socket socket)
    : context_(context),
      app_(std::move(socket), context.limits.max_header_bytes),
      timers_(context.io, *this),
      reader_(*this, app_, timers_, attempts_, context),
      answer_(*this, app_, reader_.request(), context.balancer),
      attempts_(*context.retry.context, context.loop, context.random, *this) {}

RestSession::~RestSession() { reader_.ReleaseReplay(); }

void RestSession::Start() {
  error_code ignored;
  app_.socket.set_option(tcp::no_delay(true), ignored);
  app_.socket.non_blocking(true, ignored);  // fast_io's writes: a full socket returns, never blocks
  ReadRequest();
}

void RestSession::Refuse(std::string message) {
  reader_.Refuse(std::move(message));
  error_code ignored;
  app_.socket.non_blocking(true, ignored);
  ReadRequest();
}

void RestSession::BeginDrain() {
  app_.draining = true;
  if (!request_active_) Close();
}

std::shared_ptr<void> RestSession::Hold() { return shared_from_this(); }

void RestSession::ReadRequest() {
  if (app_.closed) return;
  if (app_.draining) {
    Close();
    return;
  }
  answer_.Reset();
  local_reply_.reset();
  answer_slot_ = 0;
  timers_.ForgetDeadline();
  response_started_ = close_after_ = false;
  reader_.ReadNext();
}

void RestSession::OnRequestHead() {
  request_active_ = true;
  request_started_ = context_.loop.Now();
}

// --- the request's exchanges (RestAttempts' decisions) ------------------------------------------

void RestSession::StartExchange(int slot, int node, int avoid_node) {
  if (app_.closed) return;
  RestExchange& ex = exchanges_[slot];
  pool::Balancer& balancer = context_.balancer;
  size_t node_index;
  if (node >= 0) {
    node_index = static_cast<size_t>(node);
  } else {
    // The balancer's choice; a retry goes to another node when there is one to go to.
    std::optional<size_t> other;
    if (avoid_node >= 0) {
      other = balancer.PickOtherThan(pool::Protocol::kRest, static_cast<size_t>(avoid_node));
    }
    node_index = other ? *other : balancer.Pick(pool::Protocol::kRest);
  }
  ex.Start(node_index);
}

void RestSession::CancelExchange(int slot) { exchanges_[slot].End(false, false); }

int RestSession::PickOtherNode(int node) {
  const std::optional<size_t> other =
      context_.balancer.PickOtherThan(pool::Protocol::kRest, static_cast<size_t>(node));
  return other ? static_cast<int>(*other) : -1;
}

void RestSession::ForwardAnswer(int slot) {
  answer_slot_ = slot;
  response_started_ = true;
  timers_.DisarmDeadline();
  answer_.Forward(exchanges_[slot]);
}

void RestSession::ReplyLocally(unsigned status, const std::string& message,
                               std::optional<int> retry_after_seconds) {
  const RestRequest& request = reader_.request();
  LocalReply(status, message, /*close=*/request.streaming || !request.parser->is_done(),
             retry_after_seconds);
}

// --- the request's end, qpoold's own answers ----------------------------------------------------

void RestSession::EndUpstream(bool failed) {
  for (RestExchange& ex : exchanges_) ex.End(false, failed);
  attempts_.Stop();
}

void RestSession::OnDeadline() {
  if (app_.closed || !request_active_ || response_started_) return;
  EndUpstream(/*failed=*/true);
  const RestRequest& request = reader_.request();
  LocalReply(504,
             absl::StrCat("no answer from Qdrant within the request deadline (",
                          Millis(timers_.deadline_budget()),
                          ": rest.request_timeout, or the request's timeout parameter plus 1s)"),
             /*close=*/request.streaming || !request.parser->is_done(), std::nullopt);
}

void RestSession::LocalReply(unsigned status, const std::string& message, bool close,
                             std::optional<int> retry_after_seconds) {
  if (app_.closed) return;
  EndUpstream(/*failed=*/true);
  timers_.DisarmDeadline();
  response_started_ = true;
  context_.retry.local_replies->fetch_add(1, std::memory_order_relaxed);
  if (app_.draining) close = true;
  close_after_ = close;
  const RestRequest& request = reader_.request();
  local_reply_ =
      std::make_unique<LocalResponse>(static_cast<http::status>(status), request.app_version);
  local_reply_->set(http::field::content_type, "application/json");
  if (retry_after_seconds) {
    local_reply_->set(http::field::retry_after, std::to_string(*retry_after_seconds));
  }
  local_reply_->body() = ErrorBody(message);
  local_reply_->keep_alive(!close && request.keep_alive);
  local_reply_->prepare_payload();
  SPDLOG_DEBUG("REST local reply {}: {}", status, message);
  auto self = shared_from_this();
  http::async_write(app_.socket, *local_reply_, [self, status](const error_code& ec, size_t) {
    if (self->app_.closed) return;
    self->FinishRequest(status);
    if (ec || self->close_after_ || !self->reader_.request().keep_alive) {
      self->Close();
    } else {
      self->ReadRequest();
    }
  });
}

void RestSession::FinishRequest(unsigned status) {
  if (!request_active_) return;
  request_active_ = false;
  const Duration duration = context_.loop.Now() - request_started_;
  // Before End(), which forgets the attempts.
  if (ABSL_PREDICT_FALSE(AccessLogSampled(context_.random))) {
    const std::string* node =
        attempts_.attempts() > 0 ? &context_.node_name(exchanges_[answer_slot_].node()) : nullptr;
    LogAccess(reader_.request(), attempts_, node, app_.socket, status, duration);
  }
  attempts_.End();  // the request stops counting as active
  timers_.ForgetDeadline();
  reader_.ReleaseReplay();
  context_.metrics.RecordRestCall(metrics::ClassifyRestRoute(reader_.request().route), status,
                                  duration);
}

// --- timeouts and close ------------------------------------------------------------------------

void RestSession::OnPhaseTimeout(SessionPhase phase) {
  if (app_.closed) return;
  switch (phase) {
    case SessionPhase::kNone:
      return;
    case SessionPhase::kIdle:
      Close();  // rest.keepalive_timeout: an idle app connection
      return;
    case SessionPhase::kHeader:
      // rest.header_timeout: headers trickling in (slowloris). The peer loses its connection.
      SPDLOG_DEBUG("REST app connection: no complete request headers within rest.header_timeout");
      context_.retry.protocol_errors->fetch_add(1, std::memory_order_relaxed);
      Close();
      return;
    case SessionPhase::kBody:
      // A body that stalls for rest.keepalive_timeout.
      EndUpstream(/*failed=*/false);
      Close();
      return;
  }
}

void RestSession::Close() {
  if (app_.closed) return;
  app_.closed = true;
  EndUpstream(/*failed=*/request_active_);
  FinishRequest(499);
  timers_.Stop();
  error_code ignored;
  app_.socket.shutdown(tcp::socket::shutdown_both, ignored);
  app_.socket.close(ignored);
  context_.on_closed(this);
}

}  // namespace qpool::rest
