#include "daemon/server/call_upstream.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "daemon/common/grpc_frame.h"
#include "daemon/pool/balancer.h"
#include "daemon/retry/retry_context.h"
#include "daemon/server/call.h"
#include "daemon/server/grpc_wire.h"
#include "daemon/server/proxy_counters.h"
#include "daemon/server/upstream_connection.h"

namespace qpool::server {
namespace {

// The first gRPC message of a request (5-byte prefix and body), from the bytes sent (`sent`) and
// not sent yet (`unsent`). False when the call does not hold all of it yet (or it is larger than
// the classifier would inflate: then `out` holds what there is, which the classifier treats as
// unreadable).
bool FirstGrpcMessage(const ByteQueue& sent, const ByteQueue& unsent, std::string& out) {
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

// --- Attempt -------------------------------------------------------------------------------------

void Attempt::OnStreamReady(pool::PoolConnection* conn) {
  owner_.Open(*this, *static_cast<UpstreamConnection*>(conn));
}

void Attempt::OnAcquireFailed(const absl::Status& status) { owner_.OnAcquireFailed(*this, status); }

void Attempt::OnResponseHeader(bool trailers, nghttp2_rcbuf* name, nghttp2_rcbuf* value) {
  if (owner_.call().finished()) return;
  if (!trailers) {
    response_headers.Add(name, value);
  } else if (owner_.IsPrimary(*this)) {  // a hedge is promoted or gone by its headers' end
    owner_.call().AddResponseTrailer(HeaderRefs::View(name), HeaderRefs::View(value));
  }
}

void Attempt::OnResponseHeadersEnd(bool end_stream) {
  owner_.OnResponseHeadersEnd(*this, end_stream);
}

void Attempt::OnResponseTrailersEnd() {
  if (!owner_.call().finished() && owner_.IsPrimary(*this)) owner_.call().EndResponse();
}

void Attempt::OnResponseData(const uint8_t* data, size_t len) {
  Call& call = owner_.call();
  owner_.context().metrics.AddResponseBytes(len);
  if (call.finished() || !owner_.IsPrimary(*this)) {
    if (attached()) connection->ConsumeResponseData(id, len);
    return;
  }
  call.AppendResponseData(data, len);
}

void Attempt::OnResponseEnd() {
  // DATA with END_STREAM and no trailers: not gRPC, but pass it on as the end of the response.
  if (!owner_.call().finished() && owner_.IsPrimary(*this)) owner_.call().EndResponse();
}

void Attempt::OnClosed(uint32_t h2_error_code, bool connection_lost) {
  owner_.OnAttemptClosed(*this, h2_error_code, connection_lost);
}

ssize_t Attempt::ReadRequestBody(uint8_t* buf, size_t length, uint32_t* data_flags) {
  if (!reads_own_copy) return owner_.ReadRequestBody(*this, buf, length, data_flags);
  // A hedge's own copy of a request the app finished sending; nothing to acknowledge.
  ByteQueue& copy = owner_.hedge_copy();
  const size_t n = copy.Read(buf, length);
  if (copy.empty()) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  return static_cast<ssize_t>(n);
}

void Attempt::Release(uint32_t h2_error_code) {
  if (attached()) {
    EndMetrics(owner_.context().loop.Now());
    connection->ResetStream(id, h2_error_code);
  } else if (pool != nullptr) {
    pool->CancelWait(*this);  // still queued for a stream
  }
  Detach();
}

void Attempt::Detach() {
  if (reads_own_copy) {
    reads_own_copy = false;  // the next attempt in this slot may be a primary
    owner_.hedge_copy().Clear();
  }
  response_headers.Clear();  // references into the upstream session
  hook.unlink();
  connection = nullptr;
  connection_ref.reset();
  id = -1;
  if (pool != nullptr) pool->ReleaseShare(*this);  // no-op unless it held a slot
  pool = nullptr;
  node_metrics = nullptr;
}

void Attempt::EndMetrics(MonoTime now) {
  if (node_metrics == nullptr) return;
  node_metrics->attempt_duration.Observe(now - started_at);
  node_metrics = nullptr;
}

// --- CallUpstream: the request -------------------------------------------------------------------

CallUpstream::CallUpstream(Call& call, CallContext& context)
    : call_(call),
      context_(context),
      request_body_(&context.counters.buffered_bytes),
      replay_(context.retry.replay, context.retry.events),
      controller_(context.retry, context.loop, context.random, *this) {}

void CallUpstream::Start(MonoTime now, std::optional<MonoTime> deadline) {
  request_state_ = RequestState::kBody;
  deadline_ = deadline;
  start_at_bytes_ = context_.start_at_bytes;
  start_pending_ = true;
  MaybeStartAttempts();
}

void CallUpstream::MaybeStartAttempts() {
  if (!start_pending_) return;
  if (request_state_ == RequestState::kBody && request_body_.size() < start_at_bytes_) return;
  start_pending_ = false;
  if (request_state_ == RequestState::kDropped) return;  // answered meanwhile
  controller_.Start(context_.loop.Now(), deadline_);
}

void CallUpstream::OnRequestData(const uint8_t* data, size_t len) {
  if (request_state_ == RequestState::kDropped) {
    call_.AcknowledgeRequestBytes(len);
    return;
  }
  request_body_.Append(data, len);
  if (start_pending_) {
    MaybeStartAttempts();
    return;
  }
  Attempt& a = attempts_[controller_.primary()];
  if (a.attached() && !a.reads_own_copy) a.connection->ResumeRequestData(a.id);
}

void CallUpstream::OnRequestEnd() {
  if (request_state_ == RequestState::kDropped) return;
  request_state_ = RequestState::kEnded;
  if (start_pending_) {
    MaybeStartAttempts();
    return;
  }
  Attempt& a = attempts_[controller_.primary()];
  if (a.attached() && !a.reads_own_copy) a.connection->ResumeRequestData(a.id);
}

void CallUpstream::DropRequest() {
  request_state_ = RequestState::kDropped;
  replay_.Release();
  if (!request_body_.empty()) {
    AcknowledgeRequestBytes(request_body_.size());
    request_body_.Clear();
  }
}

void CallUpstream::Stop() {
  start_pending_ = false;
  controller_.Stop();
  held_answer_.Clear();
  // A normal close after the full answer finds the stream closed already.
  attempts_[controller_.primary()].Release(NGHTTP2_CANCEL);
}

void CallUpstream::ConsumeResponse(size_t n) {
  Attempt& a = attempts_[controller_.primary()];
  if (a.attached()) a.connection->ConsumeResponseData(a.id, n);
}

ssize_t CallUpstream::ReadRequestBody(Attempt& /*a*/, uint8_t* buf, size_t length,
                                      uint32_t* data_flags) {
  const size_t n = request_body_.Read(buf, length);
  if (n > 0) {
    AcknowledgeRequestBytes(n);
    replay_.Keep(buf, n);
  }
  if (request_body_.empty()) {
    if (request_state_ == RequestState::kEnded) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    } else if (n == 0) {
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  return static_cast<ssize_t>(n);
}

void CallUpstream::AcknowledgeRequestBytes(size_t n) {
  const size_t already = std::min(n, acknowledged_ahead_);
  acknowledged_ahead_ -= already;
  if (n > already) call_.AcknowledgeRequestBytes(n - already);
}

// --- CallUpstream: the attempts ------------------------------------------------------------------

void CallUpstream::StartAttempt(int slot, retry::AttemptKind kind, int node, int avoid_node) {
  Attempt& a = attempts_[slot];
  pool::Balancer& balancer = context_.balancer;
  if (kind == retry::AttemptKind::kHedge) {
    a.reads_own_copy = true;
    hedge_copy_.Clear();
    hedge_copy_.AppendCopyOf(replay_.bytes());
  } else {
    // The balancer's choice; a retry goes to another node when there is one to go to.
    size_t slot = balancer.Pick(pool::Protocol::kGrpc);
    if (avoid_node >= 0 && slot == static_cast<size_t>(avoid_node)) {
      if (std::optional<size_t> other = balancer.PickOtherThan(pool::Protocol::kGrpc, slot)) {
        slot = *other;
      }
    }
    node = static_cast<int>(slot);
  }
  pool::NodePool* const pool = balancer.pool(pool::Protocol::kGrpc, static_cast<size_t>(node));
  a.set_account(&call_.share_account());  // fair sharing between app connections
  const pool::NodePool::AcquireResult result = pool->Acquire(a);
  if (result.outcome == pool::NodePool::AcquireOutcome::kFailed) {
    a.Detach();
    const bool unreachable =
        result.status.code() == absl::StatusCode::kUnavailable && !pool->usable();
    controller_.OnAttemptNotStarted(slot, node, result.status, unreachable);
    return;
  }
  a.pool = pool;  // when queued, OnStreamReady or OnAcquireFailed follows
  a.node = node;
  if (result.outcome == pool::NodePool::AcquireOutcome::kReady) {
    Open(a, *static_cast<UpstreamConnection*>(result.connection));
  }
}

void CallUpstream::OnAcquireFailed(Attempt& a, const absl::Status& status) {
  const bool unreachable =
      status.code() == absl::StatusCode::kUnavailable && a.pool != nullptr && !a.pool->usable();
  const int node = a.node;
  a.Detach();
  controller_.OnAttemptNotStarted(a.slot, node, status, unreachable);
}

std::string_view CallUpstream::ApiKeyFor() {
  if (context_.call_keys == nullptr) return {};
  if (keys_ == nullptr) keys_ = context_.call_keys->Snapshot();
  if (keys_ == nullptr) return {};
  return keys_->For(call_.method_class() == metrics::MethodClass::kRead);
}

void CallUpstream::Open(Attempt& a, UpstreamConnection& conn) {
  // Headers as received, with grpc-timeout lowered by the time spent in qpoold so far, and the
  // API key qpoold holds (auth::ApiKeys) when it has one for this call.
  const std::string_view our_key = ApiKeyFor();
  const bool replace_key = !our_key.empty() && context_.key_mode == auth::KeyMode::kOverride;
  const bool secure = conn.secure();
  bool app_key = false;
  std::string remaining;
  NvArray nva;
  request_headers_.ForEach([&](std::string_view name, std::string_view value) {
    if (name == "grpc-timeout" && deadline_) {
      remaining = FormatGrpcTimeout(*deadline_ - context_.loop.Now());
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
  const bool has_body = a.reads_own_copy
                            ? !hedge_copy_.empty()
                            : !(request_state_ == RequestState::kEnded && request_body_.empty());
  const int32_t stream_id = conn.SubmitRequest(a, nva.data(), nva.size(), has_body);
  if (stream_id < 0) {
    a.pool->ReleaseUnused(&conn);
    const int node = a.node;
    a.Detach();
    controller_.OnAttemptNotStarted(
        a.slot, node,
        absl::UnavailableError(absl::StrCat("qpool: cannot open a stream to upstream node ",
                                            conn.node_name(), ": ", nghttp2_strerror(stream_id))),
        /*node_unreachable=*/false);
    return;
  }
  a.connection = &conn;
  a.connection_ref = conn.shared_from_this();
  a.id = stream_id;
  a.started_at = context_.loop.Now();
  a.node_metrics = &context_.metrics.node(static_cast<size_t>(a.node));
  conn.ScheduleFlush();
  controller_.OnAttemptSent(a.slot, a.node, a.started_at);
}

void CallUpstream::OnResponseHeadersEnd(Attempt& a, bool end_stream) {
  if (call_.finished()) return;
  int code = -1;
  retry::AttemptOutcome outcome;
  if (end_stream) {  // trailers-only: a whole answer
    code = GrpcStatusIn(a.response_headers);
    outcome.failure = FailureOfGrpcStatus(code);
    outcome.pushback = PushbackIn(a.response_headers);
  }
  const bool request_sent = request_state_ == RequestState::kEnded && request_body_.empty();
  if (controller_.OnResponseHeaders(a.slot, outcome, end_stream, request_sent) !=
      retry::HeadersVerdict::kForward) {
    return;
  }
  // The commit point: this attempt's answer is the call's; the replay copy goes.
  Attempt& winner = attempts_[controller_.primary()];
  replay_.Release();
  request_headers_.Clear();
  NvArray nva = winner.response_headers.ToNv();
  call_.SendResponseHeaders(nva.data(), nva.size(), end_stream, code);
  winner.response_headers.Clear();
}

void CallUpstream::OnAttemptClosed(Attempt& a, uint32_t h2_error_code, bool connection_lost) {
  a.EndMetrics(context_.loop.Now());
  if (call_.finished()) {
    // The answer is complete (or settled): the stream's end changes nothing.
    a.Detach();
    controller_.OnAttemptFinished(a.slot);
    DropRequest();
    return;
  }
  const std::string node_name = a.attached() ? a.connection->node_name() : "";
  a.Detach();
  retry::AttemptOutcome outcome;
  absl::Status final_status;
  if (h2_error_code == kRequestNotSent) {
    // Refused by nghttp2 here, not by Qdrant: never taken for an upstream refusal, never replayed.
    outcome.failure = retry::Failure::kNotSent;
    final_status = absl::ResourceExhaustedError(
        "qpool: request headers too large to send upstream (over 64 KiB encoded); not sent");
  } else if (connection_lost) {
    outcome.failure = retry::Failure::kUnavailable;
    final_status = absl::UnavailableError(
        absl::StrCat("qpool: connection to upstream node ", node_name, " lost before the answer"));
  } else if (h2_error_code == NGHTTP2_REFUSED_STREAM) {
    outcome.failure = retry::Failure::kNeverReached;
    final_status = absl::UnavailableError(
        absl::StrCat("qpool: upstream node ", node_name, " refused the stream (not processed)"));
  } else {
    // The upstream reset the stream (CANCEL, INTERNAL_ERROR, ...) or ended it without an answer.
    outcome.failure =
        h2_error_code != NGHTTP2_NO_ERROR ? retry::Failure::kAborted : retry::Failure::kOther;
  }
  if (controller_.OnAttemptEnded(a.slot, outcome, final_status) ==
      retry::EndVerdict::kPassOnClose) {
    // Passed on as the app would have seen it talking to Qdrant directly.
    DropRequest();
    call_.PassOnReset(h2_error_code);
  }
}

void CallUpstream::CancelAttempt(int slot) { attempts_[slot].Release(NGHTTP2_CANCEL); }

int CallUpstream::PickHedgeNode(int node) {
  if (node < 0) return -1;
  const std::optional<size_t> other =
      context_.balancer.PickOtherThan(pool::Protocol::kGrpc, static_cast<size_t>(node));
  return other ? static_cast<int>(*other) : -1;
}

retry::RetryClass CallUpstream::ClassifyRequest() {
  if (retry_class_) return *retry_class_;
  const std::string_view path = request_headers_.Find(":path");
  const retry::MethodClassifier& classifier = context_.retry.classifier;
  std::string first_message;
  // A class read from part of a message is the safe one (filter-scoped) and not kept: the rest of
  // the message may still come.
  const bool settled = !classifier.NeedsFirstMessage(path) ||
                       FirstGrpcMessage(replay_.bytes(), request_body_, first_message) ||
                       request_state_ == RequestState::kEnded;
  const retry::RetryClass retry_class =
      classifier.Classify(path, first_message, request_headers_.Find("grpc-encoding"));
  if (settled) retry_class_ = retry_class;
  return retry_class;
}

void CallUpstream::HoldAnswer(int slot) { held_answer_.TakeFrom(attempts_[slot].response_headers); }

void CallUpstream::RewindRequest() {
  // The failed attempt's bytes go back in front of what the app has sent since; the app already
  // got window credit for them.
  acknowledged_ahead_ += replay_.size();
  request_body_.PrependFrom(replay_.bytes());
  held_answer_.Clear();
}

void CallUpstream::PassOnHeldAnswer() {
  // Qdrant's own answer, as it was.
  DropRequest();
  request_headers_.Clear();
  NvArray nva = held_answer_.ToNv();
  call_.SendResponseHeaders(nva.data(), nva.size(), /*end_stream=*/true,
                            GrpcStatusIn(held_answer_));
  held_answer_.Clear();
}

void CallUpstream::FinishWith(const absl::Status& status) { call_.FinishLocally(status); }

}  // namespace qpool::server
