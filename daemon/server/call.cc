#include "daemon/server/call.h"

#include "absl/strings/str_cat.h"
#include "daemon/common/grpc_code.h"
#include "daemon/common/grpc_frame.h"
#include "daemon/server/downstream_session.h"
#include "daemon/server/grpc_wire.h"
#include "daemon/server/upstream_connection.h"
#include "daemon/server/worker.h"
#include "spdlog/spdlog.h"

namespace qpool::server {
namespace {

// Connection-specific headers are illegal in HTTP/2 (RFC 9113 8.2.2); nghttp2 already refuses
// them on receipt, so only `te` needs a look: anything but "trailers" must not be forwarded.
bool ForwardableRequestHeader(std::string_view name, std::string_view value) {
  return !(name == "te" && value != "trailers");
}

// The grpc-status in a header block (HeaderBlock or HeaderRefs), or -1.
template <typename Block>
int GrpcStatusIn(const Block& block) {
  int code = -1;
  block.ForEach([&code](std::string_view name, std::string_view value) {
    if (name != "grpc-status") return;
    int parsed = 0;
    for (char c : value) {
      if (c < '0' || c > '9' || parsed > 1000) return;
      parsed = parsed * 10 + (c - '0');
    }
    if (!value.empty()) code = parsed;
  });
  return code;
}

// How long Qdrant asked the caller to wait before trying again: `grpc-retry-pushback-ms` (gRPC's
// A6; a negative value means "do not retry") or `retry-after` in seconds (Qdrant's rate limiter).
// nullopt when it said nothing, or said not to retry.
std::optional<Duration> PushbackIn(const HeaderRefs& block) {
  auto number = [](std::string_view text, int64_t& out) {
    if (text.empty() || text.size() > 12) return false;
    out = 0;
    for (char c : text) {
      if (c < '0' || c > '9') return false;
      out = out * 10 + (c - '0');
    }
    return true;
  };
  int64_t value = 0;
  if (number(block.Find("grpc-retry-pushback-ms"), value)) {
    return std::chrono::milliseconds(value);
  }
  if (!block.Find("grpc-retry-pushback-ms").empty()) return std::nullopt;  // negative: no retry
  if (number(block.Find("retry-after"), value)) return std::chrono::seconds(value);
  return std::nullopt;
}

// UNAVAILABLE, or RESOURCE_EXHAUSTED with a pushback: the statuses a policy retry may follow.
bool RetryableStatus(int code, const std::optional<Duration>& pushback) {
  return code == kGrpcUnavailable || (code == kGrpcResourceExhausted && pushback.has_value());
}

// The first gRPC message of a request (5-byte prefix and body), from the bytes sent (`sent`) and
// not sent yet (`unsent`). False when the call does not hold all of it yet (or it is larger than
// the classifier would inflate: then `out` holds what there is, which the classifier treats as
// unreadable).
bool FirstMessage(const ByteQueue& sent, const ByteQueue& unsent, std::string& out) {
  std::string head;
  sent.CopyPrefix(kGrpcFramePrefixBytes, head);
  if (head.size() < kGrpcFramePrefixBytes) {
    unsent.CopyPrefix(kGrpcFramePrefixBytes - head.size(), head);
  }
  if (head.size() < kGrpcFramePrefixBytes) return false;
  const size_t want = kGrpcFramePrefixBytes +
                      std::min(GrpcFrameLength(head), retry::MethodClassifier::kMaxInflatedBytes);
  out.reserve(want);
  const size_t from_sent = sent.CopyPrefix(want, out);
  if (from_sent < want) unsent.CopyPrefix(want - from_sent, out);
  return out.size() == want;
}

}  // namespace

Call::Call(DownstreamSession& downstream, int32_t stream_id)
    : downstream_(downstream),
      downstream_id_(stream_id),
      request_body_(&downstream.worker().counters().buffered_bytes),
      replay_(&downstream.worker().counters().replay_bytes),
      response_body_(&downstream.worker().counters().buffered_bytes,
                     downstream.response_bytes_held()) {}

Call::~Call() {
  // The session deletes a call only after OnDownstreamClosed, which let go of everything.
}

// --- Downstream events -------------------------------------------------------------------------

void Call::OnRequestHeader(nghttp2_rcbuf* name_buf, nghttp2_rcbuf* value_buf) {
  if (request_headers_done_) return;  // request trailers: gRPC has none; dropped
  const std::string_view name = HeaderRefs::View(name_buf);
  const std::string_view value = HeaderRefs::View(value_buf);
  if (!ForwardableRequestHeader(name, value)) return;
  if (name == ":path") method_class_ = metrics::ClassifyPath(value);
  if (name == "grpc-timeout") {
    if (std::optional<Duration> timeout = ParseGrpcTimeout(value)) {
      deadline_ = downstream_.worker().loop().Now() + *timeout;
    }
  }
  request_headers_.Add(name_buf, value_buf);
}

void Call::OnRequestHeadersEnd() {
  request_headers_done_ = true;
  Worker& worker = downstream_.worker();
  worker.counters().calls_started.fetch_add(1, std::memory_order_relaxed);
  worker.retry().active_calls++;
  started_at_ = worker.loop().Now();
  if (deadline_) {
    deadline_timer_ = worker.loop().CreateTimer();
    deadline_timer_->Arm(*deadline_ - worker.loop().Now(), [this] { OnDeadline(); });
  }
  AcquireStream();
}

void Call::AcquireStream() {
  Worker& worker = downstream_.worker();
  pool::NodePool* pool = &worker.PickPool();
  if (pool == failed_pool_) {
    // A retry goes to another node when there is one to go to.
    if (pool::NodePool* other = worker.PickPoolOtherThan(failed_pool_)) pool = other;
  }
  const absl::Status refused = AcquireOn(*attempt_, *pool);
  if (refused.ok()) return;
  if (refused.code() == absl::StatusCode::kUnavailable && !pool->usable()) {
    failed_pool_ = pool;
    OnNodeUnreachable(refused);
  } else {
    FinishLocally(refused);
  }
}

absl::Status Call::AcquireOn(UpstreamStream& s, pool::NodePool& pool) {
  s.set_account(&downstream_.share_account());  // fair sharing between app connections
  pool::NodePool::AcquireResult result = pool.Acquire(s);
  if (result.outcome == pool::NodePool::AcquireOutcome::kFailed) return result.status;
  s.pool = &pool;  // when queued, OnStreamReady or OnAcquireFailed follows
  if (result.outcome == pool::NodePool::AcquireOutcome::kReady) {
    StartUpstream(s, *static_cast<UpstreamConnection*>(result.connection));
  }
  return absl::OkStatus();
}

void Call::OnRequestData(const uint8_t* data, size_t len) {
  downstream_.worker().metrics().AddRequestBytes(len);
  if (discard_request_) {
    downstream_.ConsumeRequestData(*this, len);
    return;
  }
  request_body_.Append(data, len);
  ResumeUpstream();
}

void Call::OnRequestEnd() {
  request_ended_ = true;
  ResumeUpstream();
}

void Call::OnDownstreamClosed(uint32_t h2_error_code) {
  downstream_closed_ = true;
  finished_ = true;
  if (deadline_timer_) deadline_timer_->Cancel();
  if (retry_timer_) retry_timer_->Cancel();
  EndRetryInFlight();
  DropHedge();
  held_answer_.Clear();
  if (request_headers_done_) downstream_.worker().retry().active_calls--;
  // An app's RST_STREAM (or lost connection) cancels the upstream stream or the wait for one; a
  // normal close after the full answer finds the upstream stream closed already.
  ReleaseUpstream(NGHTTP2_CANCEL);
  RecordCallEnd();
}

ssize_t Call::ReadResponseBody(uint8_t* buf, size_t length, uint32_t* data_flags) {
  const size_t n = response_body_.Read(buf, length);
  if (n > 0 && attempt_->attached()) attempt_->connection->ConsumeResponseData(attempt_->id, n);
  if (response_body_.empty()) {
    if (response_ended_) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      if (!trailers_.empty()) {
        *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        NvArray nva = trailers_.ToNv();
        downstream_.SubmitTrailers(*this, nva.data(), nva.size());
      }
    } else if (n == 0) {
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  return static_cast<ssize_t>(n);
}

// --- Upstream events ---------------------------------------------------------------------------

void Call::OnResponseHeader(UpstreamStream& s, bool trailers, nghttp2_rcbuf* name,
                            nghttp2_rcbuf* value) {
  if (finished_) return;
  if (!trailers) {
    s.response_headers.Add(name, value);
  } else if (&s == attempt_) {  // a hedge is promoted or gone by its first headers' end
    trailers_.Add(HeaderRefs::View(name), HeaderRefs::View(value));
  }
}

void Call::OnResponseHeadersEnd(UpstreamStream& s, bool end_stream) {
  if (finished_) return;
  Worker& worker = downstream_.worker();
  const int code = end_stream ? GrpcStatusIn(s.response_headers) : -1;
  const std::optional<Duration> pushback =
      end_stream ? PushbackIn(s.response_headers) : std::nullopt;
  if (&s == hedge_) {
    if (end_stream && RetryableStatus(code, pushback)) {
      // The hedge failed; the attempt may still answer.
      RecordAttemptResult(worker.NodeIndexOf(s.pool), /*failed=*/true,
                          /*node_fault=*/code == kGrpcUnavailable);
      DropHedge();
      return;
    }
    PromoteHedge();  // the hedge answered first: it is the call's attempt from here on
  } else if (hedge_ != nullptr && hedge_->attached() && end_stream &&
             RetryableStatus(code, pushback)) {
    // The attempt failed while a hedge runs: the hedge is the call's attempt from here on.
    RecordAttemptResult(worker.NodeIndexOf(s.pool), /*failed=*/true,
                        /*node_fault=*/code == kGrpcUnavailable);
    PromoteHedge();
    return;
  }
  const int node = worker.NodeIndexOf(attempt_->pool);
  HeaderRefs& headers = attempt_->response_headers;
  if (end_stream && replayable_ && RetryableStatus(code, pushback)) {
    // A whole answer with a status worth retrying: hold it while the call decides.
    held_answer_.TakeFrom(headers);
    held_outcome_ = retry::AttemptOutcome{};
    held_outcome_.failure = code == kGrpcUnavailable ? retry::Failure::kUnavailable
                                                     : retry::Failure::kResourceExhausted;
    held_outcome_.pushback = pushback;
    held_outcome_.took = worker.loop().Now() - attempt_->started_at;
    if (!(request_ended_ && request_body_.empty())) {
      // Qdrant answered before the whole request went out: stop sending it.
      ReleaseUpstream(NGHTTP2_CANCEL);
      OnAttemptFailed(held_outcome_, node, absl::OkStatus());
    }
    // Otherwise the stream closes next, and OnUpstreamClosed decides.
    return;
  }
  RecordAttemptResult(node, /*failed=*/false, /*node_fault=*/false);
  Commit();
  response_started_ = true;
  NvArray nva = headers.ToNv();
  if (end_stream) {
    // Trailers-only: one HEADERS frame with the status; forward it as it is.
    grpc_code_ = code;
    finished_ = true;
    response_ended_ = true;
  }
  downstream_.SubmitResponse(*this, nva.data(), nva.size(), /*has_body=*/!end_stream);
  headers.Clear();
}

void Call::OnResponseTrailersEnd(UpstreamStream& s) {
  if (finished_ || &s != attempt_) return;
  grpc_code_ = GrpcStatusIn(trailers_);
  finished_ = true;
  response_ended_ = true;
  ResumeDownstream();
}

void Call::OnResponseData(UpstreamStream& s, const uint8_t* data, size_t len) {
  downstream_.worker().metrics().AddResponseBytes(len);
  if (finished_ || &s != attempt_) {
    if (s.attached()) s.connection->ConsumeResponseData(s.id, len);
    return;
  }
  response_body_.Append(data, len);
  ResumeDownstream();
}

void Call::OnResponseEnd(UpstreamStream& s) {
  // DATA with END_STREAM and no trailers: not gRPC, but pass it on as the end of the response.
  if (finished_ || &s != attempt_) return;
  finished_ = true;
  response_ended_ = true;
  ResumeDownstream();
}

void Call::OnUpstreamClosed(UpstreamStream& s, uint32_t h2_error_code, bool connection_lost) {
  EndAttempt(s);
  if (&s == hedge_) {
    // The hedge ended without an answer (or after a failed one): the attempt goes on alone.
    if (connection_lost) {
      RecordAttemptResult(downstream_.worker().NodeIndexOf(s.pool), /*failed=*/true,
                          /*node_fault=*/true);
    }
    DetachStream(s);
    DropHedge();
    return;
  }
  const std::string node_name = s.attached() ? s.connection->node_name() : "";
  const int node = downstream_.worker().NodeIndexOf(s.pool);
  const Duration took = downstream_.worker().loop().Now() - s.started_at;
  DetachStream(s);
  if (hedge_ != nullptr && hedge_->attached() && !finished_ && held_answer_.empty() &&
      !response_started_) {
    // The attempt failed while a hedge runs: the hedge is the call's attempt from here on.
    if (connection_lost) RecordAttemptResult(node, /*failed=*/true, /*node_fault=*/true);
    PromoteHedge();
    return;
  }
  DropHedge();
  if (!held_answer_.empty()) {
    OnAttemptFailed(held_outcome_, node, absl::OkStatus());
    return;
  }
  if (finished_) {
    DropRequest();
    return;
  }
  retry::AttemptOutcome outcome;
  outcome.took = took;
  if (h2_error_code == kRequestNotSent) {  // refused by nghttp2 here, not by Qdrant: no replay
    FinishLocally(absl::ResourceExhaustedError(
        "qpool: request headers too large to send upstream (over 64 KiB encoded); not sent"));
  } else if (!connection_lost && h2_error_code == NGHTTP2_REFUSED_STREAM) {
    outcome.failure = retry::Failure::kNeverReached;
    OnAttemptFailed(outcome, node,
                    absl::UnavailableError(absl::StrCat("qpool: upstream node ", node_name,
                                                        " refused the stream (not processed)")));
  } else if (connection_lost && !response_started_) {
    // Qdrant may have processed the request: a policy retry, as for UNAVAILABLE.
    outcome.failure = retry::Failure::kUnavailable;
    OnAttemptFailed(outcome, node,
                    absl::UnavailableError(absl::StrCat("qpool: connection to upstream node ",
                                                        node_name, " lost before the answer")));
  } else if (connection_lost) {
    DropRequest();
    FinishLocally(absl::UnavailableError(
        absl::StrCat("qpool: connection to upstream node ", node_name, " lost before the answer")));
  } else {
    // The upstream reset the stream (CANCEL, INTERNAL_ERROR, ...): pass the reset on, as the app
    // would have seen it talking to Qdrant directly.
    RecordAttemptResult(node, /*failed=*/true, /*node_fault=*/h2_error_code != NGHTTP2_NO_ERROR);
    DropRequest();
    finished_ = true;
    downstream_.ResetStream(*this, h2_error_code);
  }
}

ssize_t Call::ReadRequestBody(UpstreamStream& s, uint8_t* buf, size_t length,
                              uint32_t* data_flags) {
  if (s.reads_hedge_copy) {
    // The hedge's own copy of a request the app finished sending; nothing to acknowledge.
    const size_t n = hedge_body_.Read(buf, length);
    if (hedge_body_.empty()) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
  }
  const size_t n = request_body_.Read(buf, length);
  if (n > 0) {
    AcknowledgeRequestBytes(n);
    if (replayable_) {
      Worker& worker = downstream_.worker();
      const RetryContext& retry = worker.retry();
      const int64_t total = worker.counters().replay_bytes.load(std::memory_order_relaxed);
      if (replay_.size() + n > retry.replay_per_call) {
        replayable_ = false;
        replay_.Clear();
        worker.metrics().RecordReplayRefused(metrics::ReplayLimit::kPerCall);
      } else if (total + static_cast<int64_t>(n) > retry.replay_total) {
        replayable_ = false;
        replay_.Clear();
        worker.metrics().RecordReplayRefused(metrics::ReplayLimit::kTotal);
      } else {
        replay_.Append(buf, n);
      }
    }
  }
  if (request_body_.empty()) {
    if (request_ended_) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    } else if (n == 0) {
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  return static_cast<ssize_t>(n);
}

// --- Pool --------------------------------------------------------------------------------------

void UpstreamStream::OnStreamReady(pool::PoolConnection* conn) { call.OnStreamReady(*this, conn); }

void UpstreamStream::OnAcquireFailed(const absl::Status& status) {
  call.OnAcquireFailed(*this, status);
}

void Call::OnStreamReady(UpstreamStream& s, pool::PoolConnection* conn) {
  StartUpstream(s, *static_cast<UpstreamConnection*>(conn));
}

void Call::OnAcquireFailed(UpstreamStream& s, const absl::Status& status) {
  const bool unreachable =
      status.code() == absl::StatusCode::kUnavailable && s.pool != nullptr && !s.pool->usable();
  if (unreachable) failed_pool_ = s.pool;
  s.pool = nullptr;
  if (&s == hedge_) {
    DropHedge();  // no stream for the hedge: the attempt goes on alone
    return;
  }
  if (unreachable) {
    OnNodeUnreachable(status);
  } else {
    FinishLocally(status);
  }
}

// --- Internals ---------------------------------------------------------------------------------

std::string_view Call::ApiKeyFor(Worker& worker) const {
  if (!worker.keys_apply_to_calls()) return {};
  const auth::ApiKeys* keys = worker.api_keys();
  if (keys == nullptr) return {};
  return keys->For(method_class_ == metrics::MethodClass::kRead);
}

void Call::StartUpstream(UpstreamStream& s, UpstreamConnection& upstream) {
  Worker& worker = downstream_.worker();
  // Headers as received, with grpc-timeout lowered by the time spent in qpoold so far, and the
  // API key qpoold holds (auth::ApiKeys) when it has one for this call.
  const std::string_view our_key = ApiKeyFor(worker);
  const bool replace_key = !our_key.empty() && worker.key_mode() == auth::KeyMode::kOverride;
  const bool secure = upstream.secure();
  bool app_key = false;
  std::string remaining;
  NvArray nva;
  request_headers_.ForEach([&](std::string_view name, std::string_view value) {
    if (name == "grpc-timeout" && deadline_) {
      remaining = FormatGrpcTimeout(*deadline_ - worker.loop().Now());
      nva.push_back(MakeNv(name, remaining));
    } else if (secure && name == ":scheme") {
      nva.push_back(MakeNv(name, "https"));
    } else if (!our_key.empty() && name == "api-key") {
      app_key = true;
      if (!replace_key) nva.push_back(MakeNv(name, value));
    } else {
      nva.push_back(MakeNv(name, value));
    }
  });
  if (!our_key.empty() && (replace_key || !app_key)) nva.push_back(ApiKeyNv(our_key));
  const bool has_body =
      s.reads_hedge_copy ? !hedge_body_.empty() : !(request_ended_ && request_body_.empty());
  const int32_t stream_id = upstream.SubmitRequest(s, nva.data(), nva.size(), has_body);
  if (stream_id < 0) {
    s.pool->ReleaseUnused(&upstream);
    s.pool = nullptr;
    if (&s == hedge_) {
      DropHedge();
      return;
    }
    FinishLocally(absl::UnavailableError(
        absl::StrCat("qpool: cannot open a stream to upstream node ", upstream.node_name(), ": ",
                     nghttp2_strerror(stream_id))));
    return;
  }
  s.connection = &upstream;
  s.connection_ref = upstream.shared_from_this();
  s.id = stream_id;
  s.started_at = worker.loop().Now();
  s.node_metrics = worker.NodeMetricsOf(s.pool);
  upstream.ScheduleFlush();
  if (&s == hedge_) return;
  attempts_++;
  const RetryContext& retry = worker.retry();
  const bool read =
      retry.policy_retries && replayable_ &&
      (retry.per_try_timeout > Duration::zero() || retry.hedge_delay > Duration::zero()) &&
      RetryClassOfCall() == retry::RetryClass::kRead;
  if (read && retry.per_try_timeout > Duration::zero()) {
    if (!retry_timer_) retry_timer_ = worker.loop().CreateTimer();
    retry_timer_->Arm(retry.per_try_timeout, [this] { OnPerTryTimeout(); });
  }
  if (read && attempts_ == 1 && retry.hedge_delay > Duration::zero() &&
      worker.config().upstream.nodes.size() > 1) {
    if (!hedge_timer_) hedge_timer_ = worker.loop().CreateTimer();
    hedge_timer_->Arm(retry.hedge_delay, [this] { OnHedgeDelay(); });
  }
}

void Call::OnAttemptFailed(const retry::AttemptOutcome& outcome, int node,
                           const absl::Status& final_status) {
  Worker& worker = downstream_.worker();
  RetryContext& retry = worker.retry();
  failed_pool_ = node >= 0 ? worker.PoolOf(static_cast<size_t>(node)) : nullptr;
  DropHedge();  // a hedge still waiting for a stream would race the retry
  EndRetryInFlight();
  const bool never_reached = outcome.failure == retry::Failure::kNeverReached;
  if (!never_reached) {
    // Passive health counts UNAVAILABLE and lost connections against the node, not its rate
    // limiter's RESOURCE_EXHAUSTED or qpoold's own per-try timeout.
    RecordAttemptResult(node, /*failed=*/true, retry::NodeFault(outcome.failure));
  }

  bool retried = false;
  if (!downstream_closed_ && replayable_ && node >= 0 && (never_reached || retry.policy_retries)) {
    const retry::RetryClass retry_class = RetryClassOfCall();
    const retry::RetryDecision decision = retry.policy.Decide(
        retry_class, attempts_, outcome, worker.loop().Now(), deadline_, worker.random());
    retry::RetryBudget& budget = retry.budgets[static_cast<size_t>(node)];
    if (decision.retry && decision.reason != retry::RetryReason::kTransparent &&
        !budget.MayRetry(retry.active_calls)) {
      // Storm control: the node's tokens, or the retries already running, say no.
      const bool tokens_left =
          budget.tokens() > static_cast<double>(worker.config().retry.budget_max_tokens) / 2;
      worker.metrics().RecordRetryRefused(tokens_left ? metrics::RetryRefusal::kInFlight
                                                      : metrics::RetryRefusal::kBudget);
    } else if (decision.retry) {
      if (decision.reason != retry::RetryReason::kTransparent) {
        budget.RetryStarted();
        retry_node_ = node;
      } else {
        worker.counters().transparent_retries.fetch_add(1, std::memory_order_relaxed);
      }
      worker.metrics().RecordRetry(retry_class, decision.reason);
      SPDLOG_DEBUG("stream {}: attempt {} failed ({}), retrying in {} us", downstream_id_,
                   attempts_, retry::RetryReasonName(decision.reason),
                   std::chrono::duration_cast<std::chrono::microseconds>(decision.delay).count());
      ScheduleRetry(decision.delay);
      retried = true;
    } else if (decision.refused) {
      worker.metrics().RecordRetryRefused(*decision.refused);
    }
  }
  if (retried) {
    held_answer_.Clear();
    return;
  }
  DropRequest();
  if (held_answer_.empty()) {
    FinishLocally(final_status);
    return;
  }
  // Pass Qdrant's own answer on, as it was.
  Commit();
  grpc_code_ = GrpcStatusIn(held_answer_);
  finished_ = true;
  response_started_ = true;
  response_ended_ = true;
  NvArray nva = held_answer_.ToNv();
  downstream_.SubmitResponse(*this, nva.data(), nva.size(), /*has_body=*/false);
  held_answer_.Clear();
}

void Call::ScheduleRetry(Duration delay) {
  // The failed attempt's bytes go back in front of what the app has sent since; the app already
  // got window credit for them.
  acknowledged_ahead_ += replay_.size();
  request_body_.PrependFrom(replay_);
  if (delay <= Duration::zero()) {
    AcquireStream();
    return;
  }
  if (!retry_timer_) retry_timer_ = downstream_.worker().loop().CreateTimer();
  retry_timer_->Arm(delay, [this] { AcquireStream(); });
}

void Call::OnNodeUnreachable(const absl::Status& status) {
  Worker& worker = downstream_.worker();
  const retry::RetryPolicy& policy = worker.retry().policy;
  // Nothing was sent: any method may go again. Without a deadline, max_attempts picks bound the
  // wait; with one, the deadline does (the node may come back, or another one take the call).
  // At least 1 ms: the retry runs from the timer, never from inside this call's own Acquire.
  const Duration delay = std::max<Duration>(policy.Backoff(++unreachable_tries_, worker.random()),
                                            std::chrono::milliseconds(1));
  const bool in_time = deadline_ ? worker.loop().Now() + delay < *deadline_
                                 : unreachable_tries_ < policy.options().max_attempts;
  if (downstream_closed_ || !in_time) {
    const auto waited =
        std::chrono::duration_cast<std::chrono::milliseconds>(worker.loop().Now() - started_at_);
    FinishLocally(absl::Status(
        status.code(),
        absl::StrCat(status.message(), "; tried ", unreachable_tries_,
                     unreachable_tries_ == 1 ? " time" : " times", " over ", waited.count(), " ms",
                     deadline_ ? ", until the deadline" : " (retry.max_attempts)")));
    return;
  }
  worker.metrics().RecordRetry(RetryClassOfCall(), retry::RetryReason::kTransparent);
  worker.counters().transparent_retries.fetch_add(1, std::memory_order_relaxed);
  ScheduleRetry(delay);
}

retry::RetryClass Call::RetryClassOfCall() {
  if (retry_class_) return *retry_class_;
  const std::string_view path = request_headers_.Find(":path");
  const retry::MethodClassifier& classifier = downstream_.worker().retry().classifier;
  std::string first_message;
  // A class read from part of a message is the safe one (filter-scoped) and not kept: the rest of
  // the message may still come.
  const bool settled = !classifier.NeedsFirstMessage(path) ||
                       FirstMessage(replay_, request_body_, first_message) || request_ended_;
  const retry::RetryClass retry_class =
      classifier.Classify(path, first_message, request_headers_.Find("grpc-encoding"));
  if (settled) retry_class_ = retry_class;
  return retry_class;
}

void Call::RecordAttemptResult(int node, bool failed, bool node_fault) {
  if (node < 0) return;
  Worker& worker = downstream_.worker();
  worker.OnAttemptEnd(static_cast<size_t>(node), node_fault);
  retry::RetryBudget& budget = worker.retry().budgets[static_cast<size_t>(node)];
  if (failed) {
    budget.OnAttemptFailed();
  } else {
    budget.OnAttemptSucceeded();
  }
  worker.metrics()
      .node(static_cast<size_t>(node))
      .retry_tokens.store(budget.tokens(), std::memory_order_relaxed);
}

void Call::EndRetryInFlight() {
  if (retry_node_ < 0) return;
  downstream_.worker().retry().budgets[static_cast<size_t>(retry_node_)].RetryEnded();
  retry_node_ = -1;
}

void Call::OnPerTryTimeout() {
  if (finished_ || !attempt_->attached()) return;
  if (hedge_ != nullptr && hedge_->attached()) {
    PromoteHedge();  // the timed-out attempt goes; the hedge already races it
    return;
  }
  const int node = downstream_.worker().NodeIndexOf(attempt_->pool);
  retry::AttemptOutcome outcome;
  outcome.failure = retry::Failure::kPerTryTimeout;
  outcome.took = downstream_.worker().loop().Now() - attempt_->started_at;
  ReleaseUpstream(NGHTTP2_CANCEL);
  OnAttemptFailed(outcome, node,
                  absl::DeadlineExceededError(
                      "qpool: no answer within retry.per_try_timeout, and no retry allowed"));
}

void Call::Commit() {
  if (retry_timer_) retry_timer_->Cancel();  // the per-try timeout
  DropHedge();
  replayable_ = false;
  replay_.Clear();
  request_headers_.Clear();
}

void Call::AcknowledgeRequestBytes(size_t n) {
  const size_t already = std::min(n, acknowledged_ahead_);
  acknowledged_ahead_ -= already;
  if (n > already && !downstream_closed_) downstream_.ConsumeRequestData(*this, n - already);
}

void Call::ReleaseUpstream(uint32_t h2_error_code) { ReleaseStream(*attempt_, h2_error_code); }

void Call::ReleaseStream(UpstreamStream& s, uint32_t h2_error_code) {
  if (s.attached()) {
    EndAttempt(s);
    s.connection->ResetStream(s.id, h2_error_code);
  } else if (s.pool != nullptr) {
    s.pool->CancelWait(s);  // still queued for a stream
  }
  DetachStream(s);
}

void Call::DetachStream(UpstreamStream& s) {
  if (s.reads_hedge_copy) {
    // The next attempt on this object, if any, reads the call's request again.
    s.reads_hedge_copy = false;
    hedge_body_.Clear();
  }
  s.response_headers.Clear();  // references into the upstream session
  s.hook.unlink();
  s.connection = nullptr;
  s.connection_ref.reset();
  s.id = -1;
  if (s.pool != nullptr) s.pool->ReleaseShare(s);  // no-op unless it held a slot
  s.pool = nullptr;
  s.node_metrics = nullptr;
}

void Call::OnHedgeDelay() {
  Worker& worker = downstream_.worker();
  RetryContext& retry = worker.retry();
  // Only a read whose attempt is out with the whole request, with no answer yet.
  if (finished_ || hedge_ != nullptr || !attempt_->attached() || !held_answer_.empty() ||
      response_started_ || !replayable_ || !request_ended_ || !request_body_.empty()) {
    return;
  }
  const int node = worker.NodeIndexOf(attempt_->pool);
  pool::NodePool* pool = worker.PickPoolOtherThan(attempt_->pool);
  if (node < 0 || pool == nullptr) return;
  retry::RetryBudget& budget = retry.budgets[static_cast<size_t>(node)];
  if (!budget.MayRetry(retry.active_calls)) {
    const bool tokens_left =
        budget.tokens() > static_cast<double>(worker.config().retry.budget_max_tokens) / 2;
    worker.metrics().RecordRetryRefused(tokens_left ? metrics::RetryRefusal::kInFlight
                                                    : metrics::RetryRefusal::kBudget);
    return;
  }
  budget.RetryStarted();
  hedge_node_ = node;
  worker.metrics().RecordHedge(/*won=*/false);
  UpstreamStream& s = spare();
  hedge_ = &s;
  s.reads_hedge_copy = true;
  hedge_body_.Clear();
  hedge_body_.AppendCopyOf(replay_);
  if (!AcquireOn(s, *pool).ok()) DropHedge();
}

void Call::PromoteHedge() {
  UpstreamStream* loser = attempt_;
  attempt_ = hedge_;
  hedge_ = nullptr;
  ReleaseStream(*loser, NGHTTP2_CANCEL);
  if (hedge_node_ >= 0) {
    downstream_.worker().retry().budgets[static_cast<size_t>(hedge_node_)].RetryEnded();
    hedge_node_ = -1;
  }
  downstream_.worker().metrics().RecordHedge(/*won=*/true);
}

void Call::DropHedge() {
  if (hedge_timer_) hedge_timer_->Cancel();
  if (hedge_ == nullptr) return;
  UpstreamStream& s = *hedge_;
  hedge_ = nullptr;
  ReleaseStream(s, NGHTTP2_CANCEL);
  if (hedge_node_ >= 0) {
    downstream_.worker().retry().budgets[static_cast<size_t>(hedge_node_)].RetryEnded();
    hedge_node_ = -1;
  }
}

void Call::DropRequest() {
  discard_request_ = true;
  replay_.Clear();
  if (!request_body_.empty()) {
    AcknowledgeRequestBytes(request_body_.size());
    request_body_.Clear();
  }
}

void Call::FinishLocally(const absl::Status& status) {
  if (downstream_closed_) return;
  finished_ = true;
  DropHedge();
  DropRequest();
  downstream_.worker().counters().local_replies.fetch_add(1, std::memory_order_relaxed);
  grpc_code_ = GrpcCode(status);
  SPDLOG_DEBUG("stream {} answered by qpoold: {}", downstream_id_, status.ToString());
  const std::string code = std::to_string(grpc_code_);
  const std::string message = PercentEncodeGrpcMessage(status.message());
  if (!response_started_) {
    response_started_ = true;
    response_ended_ = true;
    const nghttp2_nv nva[] = {MakeNv(":status", "200"), MakeNv("content-type", "application/grpc"),
                              MakeNv("grpc-status", code), MakeNv("grpc-message", message)};
    downstream_.SubmitResponse(*this, nva, 4, /*has_body=*/false);
    return;
  }
  // Headers went out already: end with trailers after whatever data is queued.
  response_ended_ = true;
  trailers_.Clear();
  trailers_.Add("grpc-status", code);
  trailers_.Add("grpc-message", message);
  ResumeDownstream();
}

void Call::OnDeadline() {
  if (finished_) return;
  if (retry_timer_) retry_timer_->Cancel();
  DropHedge();
  held_answer_.Clear();
  ReleaseUpstream(NGHTTP2_CANCEL);
  FinishLocally(absl::DeadlineExceededError("qpool: deadline exceeded (grpc-timeout)"));
}

void Call::ResumeDownstream() {
  if (downstream_closed_ || !response_started_) return;
  downstream_.ResumeResponseData(*this);
}

void Call::ResumeUpstream() {
  if (attempt_->attached() && !attempt_->reads_hedge_copy) {
    attempt_->connection->ResumeRequestData(attempt_->id);
  }
}

void Call::EndAttempt(UpstreamStream& s) {
  if (s.node_metrics == nullptr) return;
  s.node_metrics->attempt_duration.Observe(downstream_.worker().loop().Now() - s.started_at);
  s.node_metrics = nullptr;
}

void Call::RecordCallEnd() {
  if (!request_headers_done_) return;  // never became a call
  downstream_.worker().metrics().RecordCall(method_class_, grpc_code_,
                                            downstream_.worker().loop().Now() - started_at_);
}

}  // namespace qpool::server
