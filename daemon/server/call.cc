#include "daemon/server/call.h"

#include "absl/strings/str_cat.h"
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

}  // namespace

Call::Call(DownstreamSession& downstream, int32_t stream_id)
    : downstream_(downstream),
      downstream_id_(stream_id),
      request_body_(&downstream.worker().counters().buffered_bytes),
      replay_(&downstream.worker().counters().replay_bytes),
      response_body_(&downstream.worker().counters().buffered_bytes) {}

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
  started_at_ = worker.loop().Now();
  if (deadline_) {
    deadline_timer_ = worker.loop().CreateTimer();
    deadline_timer_->Arm(*deadline_ - worker.loop().Now(), [this] { OnDeadline(); });
  }
  AcquireStream();
}

void Call::AcquireStream() {
  pool::NodePool& pool = downstream_.worker().PickPool();
  pool::NodePool::AcquireResult result = pool.Acquire(*this);
  switch (result.outcome) {
    case pool::NodePool::AcquireOutcome::kReady:
      pool_ = &pool;
      StartUpstream(*static_cast<UpstreamConnection*>(result.connection));
      break;
    case pool::NodePool::AcquireOutcome::kQueued:
      pool_ = &pool;  // OnStreamReady or OnAcquireFailed follows
      break;
    case pool::NodePool::AcquireOutcome::kFailed:
      FinishLocally(result.status);
      break;
  }
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
  // An app's RST_STREAM (or lost connection) cancels the upstream stream or the wait for one; a
  // normal close after the full answer finds the upstream stream closed already.
  ReleaseUpstream(NGHTTP2_CANCEL);
  RecordCallEnd();
}

ssize_t Call::ReadResponseBody(uint8_t* buf, size_t length, uint32_t* data_flags) {
  const size_t n = response_body_.Read(buf, length);
  if (n > 0 && upstream_ != nullptr) upstream_->ConsumeResponseData(upstream_id_, n);
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

void Call::OnResponseHeader(bool trailers, nghttp2_rcbuf* name, nghttp2_rcbuf* value) {
  if (finished_) return;
  if (trailers) {
    trailers_.Add(HeaderRefs::View(name), HeaderRefs::View(value));
  } else {
    response_headers_.Add(name, value);
  }
}

void Call::OnResponseHeadersEnd(bool end_stream) {
  if (finished_) return;
  Commit();
  if (end_stream) {
    // Trailers-only: one HEADERS frame with the status; forward it as it is.
    grpc_code_ = GrpcStatusIn(response_headers_);
    finished_ = true;
    response_started_ = true;
    response_ended_ = true;
    NvArray nva = response_headers_.ToNv();
    downstream_.SubmitResponse(*this, nva.data(), nva.size(), /*has_body=*/false);
    response_headers_.Clear();
    return;
  }
  response_started_ = true;
  NvArray nva = response_headers_.ToNv();
  downstream_.SubmitResponse(*this, nva.data(), nva.size(), /*has_body=*/true);
  response_headers_.Clear();
}

void Call::OnResponseTrailersEnd() {
  if (finished_) return;
  grpc_code_ = GrpcStatusIn(trailers_);
  finished_ = true;
  response_ended_ = true;
  ResumeDownstream();
}

void Call::OnResponseData(const uint8_t* data, size_t len) {
  downstream_.worker().metrics().AddResponseBytes(len);
  if (finished_) {
    if (upstream_ != nullptr) upstream_->ConsumeResponseData(upstream_id_, len);
    return;
  }
  response_body_.Append(data, len);
  ResumeDownstream();
}

void Call::OnResponseEnd() {
  // DATA with END_STREAM and no trailers: not gRPC, but pass it on as the end of the response.
  if (finished_) return;
  finished_ = true;
  response_ended_ = true;
  ResumeDownstream();
}

void Call::OnUpstreamClosed(uint32_t h2_error_code, bool connection_lost) {
  // Passive health: a lost connection, a reset or UNAVAILABLE counts against the node; a refusal
  // (REFUSED_STREAM, GOAWAY: never processed) says nothing about it; any other answer is a success.
  if (pool_ != nullptr && h2_error_code != NGHTTP2_REFUSED_STREAM) {
    downstream_.worker().OnAttemptEnd(*pool_, connection_lost ||
                                                  h2_error_code != NGHTTP2_NO_ERROR ||
                                                  grpc_code_ == 14 /* UNAVAILABLE */);
  }
  EndAttempt();
  const std::string node = upstream_ != nullptr ? upstream_->node_name() : "";
  DetachUpstream();
  if (!finished_ && !connection_lost && h2_error_code == NGHTTP2_REFUSED_STREAM &&
      ReplayRefused()) {
    return;
  }
  DropRequest();
  if (finished_) return;
  if (connection_lost) {
    FinishLocally(absl::UnavailableError(
        absl::StrCat("qpool: connection to upstream node ", node, " lost before the answer")));
  } else if (h2_error_code == NGHTTP2_REFUSED_STREAM) {
    FinishLocally(absl::UnavailableError(
        absl::StrCat("qpool: upstream node ", node, " refused the stream (not processed)")));
  } else {
    // The upstream reset the stream (CANCEL, INTERNAL_ERROR, ...): pass the reset on, as the app
    // would have seen it talking to Qdrant directly.
    finished_ = true;
    downstream_.ResetStream(*this, h2_error_code);
  }
}

ssize_t Call::ReadRequestBody(uint8_t* buf, size_t length, uint32_t* data_flags) {
  const size_t n = request_body_.Read(buf, length);
  if (n > 0) {
    AcknowledgeRequestBytes(n);
    if (replayable_) {
      const int64_t total =
          downstream_.worker().counters().replay_bytes.load(std::memory_order_relaxed);
      if (replay_.size() + n > kMaxReplayBytes ||
          total + static_cast<int64_t>(n) > kMaxReplayBytesTotal) {
        replayable_ = false;
        replay_.Clear();
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

void Call::OnStreamReady(pool::PoolConnection* conn) {
  StartUpstream(*static_cast<UpstreamConnection*>(conn));
}

void Call::OnAcquireFailed(const absl::Status& status) {
  pool_ = nullptr;
  FinishLocally(status);
}

// --- Internals ---------------------------------------------------------------------------------

void Call::StartUpstream(UpstreamConnection& upstream) {
  // Headers as received, with grpc-timeout lowered by the time spent in qpoold so far.
  std::string remaining;
  NvArray nva;
  request_headers_.ForEach([&](std::string_view name, std::string_view value) {
    if (name == "grpc-timeout" && deadline_) {
      remaining = FormatGrpcTimeout(*deadline_ - downstream_.worker().loop().Now());
      nva.push_back(MakeNv(name, remaining));
    } else {
      nva.push_back(MakeNv(name, value));
    }
  });
  const bool has_body = !(request_ended_ && request_body_.empty());
  const int32_t stream_id = upstream.SubmitRequest(*this, nva.data(), nva.size(), has_body);
  if (stream_id < 0) {
    pool_->ReleaseUnused(&upstream);
    pool_ = nullptr;
    FinishLocally(absl::UnavailableError(
        absl::StrCat("qpool: cannot open a stream to upstream node ", upstream.node_name(), ": ",
                     nghttp2_strerror(stream_id))));
    return;
  }
  upstream_ = &upstream;
  upstream_ref_ = upstream.shared_from_this();
  upstream_id_ = stream_id;
  attempt_started_at_ = downstream_.worker().loop().Now();
  attempt_node_ = downstream_.worker().NodeMetricsOf(pool_);
  attempts_++;
  upstream.ScheduleFlush();
}

bool Call::ReplayRefused() {
  if (!replayable_ || downstream_closed_ || attempts_ >= kMaxAttempts) return false;
  // The refused attempt's bytes go back in front of what the app has sent since; the app already
  // got window credit for them.
  acknowledged_ahead_ += replay_.size();
  request_body_.PrependFrom(replay_);
  downstream_.worker().counters().transparent_retries.fetch_add(1, std::memory_order_relaxed);
  SPDLOG_DEBUG("stream {}: refused upstream, sending it again (attempt {})", downstream_id_,
               attempts_ + 1);
  AcquireStream();
  return true;
}

void Call::Commit() {
  replayable_ = false;
  replay_.Clear();
  request_headers_.Clear();
}

void Call::AcknowledgeRequestBytes(size_t n) {
  const size_t already = std::min(n, acknowledged_ahead_);
  acknowledged_ahead_ -= already;
  if (n > already && !downstream_closed_) downstream_.ConsumeRequestData(*this, n - already);
}

void Call::ReleaseUpstream(uint32_t h2_error_code) {
  if (upstream_ != nullptr) {
    EndAttempt();
    upstream_->ResetStream(upstream_id_, h2_error_code);
  } else if (pool_ != nullptr) {
    pool_->CancelWait(*this);  // still queued for a stream
  }
  DetachUpstream();
}

void Call::DetachUpstream() {
  response_headers_.Clear();  // references into the upstream session
  upstream_ = nullptr;
  upstream_ref_.reset();
  upstream_id_ = -1;
  pool_ = nullptr;
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
  ReleaseUpstream(NGHTTP2_CANCEL);
  FinishLocally(absl::DeadlineExceededError("qpool: deadline exceeded (grpc-timeout)"));
}

void Call::ResumeDownstream() {
  if (downstream_closed_ || !response_started_) return;
  downstream_.ResumeResponseData(*this);
}

void Call::ResumeUpstream() {
  if (upstream_ != nullptr) upstream_->ResumeRequestData(upstream_id_);
}

void Call::EndAttempt() {
  if (attempt_node_ == nullptr) return;
  attempt_node_->attempt_duration.Observe(downstream_.worker().loop().Now() - attempt_started_at_);
  attempt_node_ = nullptr;
}

void Call::RecordCallEnd() {
  if (!request_headers_done_) return;  // never became a call
  downstream_.worker().metrics().RecordCall(method_class_, grpc_code_,
                                            downstream_.worker().loop().Now() - started_at_);
}

}  // namespace qpool::server
