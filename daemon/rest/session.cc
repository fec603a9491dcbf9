#include "daemon/rest/session.h"

#include <boost/beast/http/write.hpp>

#include "absl/base/optimization.h"
#include "absl/strings/str_cat.h"
#include "daemon/common/access_log.h"
#include "daemon/metrics/method_class.h"
#include "daemon/rest/rest_worker.h"
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

RestSession::RestSession(RestWorker& worker, tcp::socket socket)
    : worker_(worker),
      socket_(std::move(socket)),
      in_buffer_(worker.limits().max_header_bytes + kChunkBytes),
      timer_(worker.io(),
             [this] {
               if (!closed_) OnTimer(timer_role_);
             }),
      deadline_timer_(worker.io(), [this] { OnDeadline(); }),
      reader_(*this),
      answer_(*this),
      attempts_(*worker.retry().context, worker.loop(), worker.random(), *this) {}

RestSession::~RestSession() { reader_.ReleaseReplay(); }

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

void RestSession::ReadRequest() {
  if (closed_) return;
  if (draining_) {
    Close();
    return;
  }
  answer_.Reset();
  local_reply_.reset();
  answer_slot_ = 0;
  deadline_.reset();
  response_started_ = close_after_ = false;
  reader_.ReadNext();
}

// --- the request's exchanges (RestAttempts' decisions) ------------------------------------------

void RestSession::StartExchange(int slot, int node, int avoid_node) {
  if (closed_) return;
  RestExchange& ex = exchanges_[slot];
  pool::Balancer& balancer = worker_.balancer();
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
      worker_.balancer().PickOtherThan(pool::Protocol::kRest, static_cast<size_t>(node));
  return other ? static_cast<int>(*other) : -1;
}

void RestSession::ForwardAnswer(int slot) {
  answer_slot_ = slot;
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
  if (closed_ || !request_active_ || response_started_) return;
  EndUpstream(/*failed=*/true);
  const RestRequest& request = reader_.request();
  LocalReply(
      504,
      absl::StrCat("no answer from Qdrant within the request deadline (", Millis(deadline_budget_),
                   ": rest.request_timeout, or the request's timeout parameter plus 1s)"),
      /*close=*/request.streaming || !request.parser->is_done());
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
  http::async_write(socket_, *local_reply_, [self, status](const error_code& ec, size_t) {
    if (self->closed_) return;
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
  const Duration duration = worker_.loop().Now() - request_started_;
  // Before End(), which forgets the attempts.
  if (ABSL_PREDICT_FALSE(AccessLogSampled(worker_.random()))) {
    const std::string* node =
        attempts_.attempts() > 0 ? &worker_.node_name(exchanges_[answer_slot_].node()) : nullptr;
    LogAccess(reader_.request(), attempts_, node, socket_, status, duration);
  }
  attempts_.End();  // the request stops counting as active
  deadline_.reset();
  reader_.ReleaseReplay();
  worker_.metrics().RecordRestCall(metrics::ClassifyRestRoute(reader_.request().route), status,
                                   duration);
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
