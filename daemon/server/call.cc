#include "daemon/server/call.h"

#include <string>

#include "absl/base/optimization.h"
#include "daemon/common/access_log.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/retry/retry_context.h"
#include "daemon/server/grpc_wire.h"
#include "daemon/server/proxy_counters.h"
#include "spdlog/spdlog.h"

namespace qpool::server {
namespace {

// Connection-specific headers are illegal in HTTP/2 (RFC 9113 8.2.2); nghttp2 already refuses
// them on receipt, so only `te` needs a look: anything but "trailers" must not be forwarded.
bool ForwardableRequestHeader(std::string_view name, std::string_view value) {
  return !(name == "te" && value != "trailers");
}

}  // namespace

Call::Call(CallContext& context, CallDownstream& downstream, int32_t stream_id)
    : context_(context),
      downstream_(downstream),
      downstream_id_(stream_id),
      response_body_(&context.counters.buffered_bytes, downstream.response_bytes_held()),
      upstream_(*this, context) {}

Call::~Call() {
  // The session deletes a call only after OnDownstreamClosed, which let go of everything.
}

// --- Downstream events -------------------------------------------------------------------------

void Call::OnRequestHeader(nghttp2_rcbuf* name_buf, nghttp2_rcbuf* value_buf) {
  if (upstream_.request().state() != UpstreamRequest::State::kHeaders) {
    return;  // request trailers: gRPC has none; dropped
  }
  const std::string_view name = HeaderRefs::View(name_buf);
  const std::string_view value = HeaderRefs::View(value_buf);
  if (!ForwardableRequestHeader(name, value)) return;
  if (name == ":path") {
    method_ = FindQdrantMethod(value);
    method_class_ = metrics::ClassifyMethod(method_);
  }
  if (name == "grpc-timeout") {
    if (std::optional<Duration> timeout = ParseGrpcTimeout(value)) {
      deadline_ = context_.loop.Now() + *timeout;
    }
  }
  upstream_.request().AddHeader(name_buf, value_buf);
}

void Call::OnRequestHeadersEnd() {
  context_.counters.calls_started.fetch_add(1, std::memory_order_relaxed);
  started_at_ = context_.loop.Now();
  if (deadline_) {
    deadline_timer_ = context_.loop.CreateTimer();
    deadline_timer_->Arm(*deadline_ - context_.loop.Now(), [this] { OnDeadline(); });
  }
  upstream_.Start(started_at_, deadline_);
}

void Call::OnRequestData(const uint8_t* data, size_t len) {
  context_.metrics.AddRequestBytes(len);
  if (upstream_.request().Append(data, len)) upstream_.OnRequestMore();
}

void Call::OnRequestEnd() {
  if (upstream_.request().End()) upstream_.OnRequestMore();
}

void Call::OnDownstreamClosed(uint32_t /*h2_error_code*/) {
  response_state_ = ResponseState::kClosed;
  if (deadline_timer_) deadline_timer_->Cancel();
  // An app's RST_STREAM (or lost connection) cancels the upstream stream or the wait for one; a
  // normal close after the full answer finds the upstream stream closed already.
  upstream_.Stop();
  RecordCallEnd();
}

ssize_t Call::ReadResponseBody(uint8_t* buf, size_t length, uint32_t* data_flags) {
  const size_t n = response_body_.Read(buf, length);
  if (n > 0) upstream_.ConsumeResponse(n);
  if (response_body_.empty()) {
    if (response_state_ == ResponseState::kComplete) {
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

// --- The answer ----------------------------------------------------------------------------------

void Call::SendResponseHeaders(const nghttp2_nv* nva, size_t nvlen, bool end_stream,
                               int grpc_code) {
  if (end_stream) {
    // Trailers-only: one HEADERS frame with the status; forwarded as it is.
    grpc_code_ = grpc_code;
    response_state_ = ResponseState::kComplete;
  } else {
    response_state_ = ResponseState::kHeadersSent;
  }
  downstream_.SubmitResponse(*this, nva, nvlen, /*has_body=*/!end_stream);
}

void Call::EndResponse() {
  grpc_code_ = GrpcStatusIn(trailers_);  // -1 when the answer ended without trailers
  response_state_ = ResponseState::kComplete;
  ResumeDownstream();
}

void Call::FinishLocally(const absl::Status& status) {
  if (response_state_ == ResponseState::kClosed) return;
  upstream_.request().Drop();
  context_.counters.local_replies.fetch_add(1, std::memory_order_relaxed);
  grpc_code_ = GrpcCode(status);
  SPDLOG_DEBUG("stream {} answered by qpoold: {}", downstream_id_, status.ToString());
  const std::string code = std::to_string(grpc_code_);
  const std::string message = PercentEncodeGrpcMessage(status.message());
  if (response_state_ == ResponseState::kNone) {
    response_state_ = ResponseState::kComplete;
    const nghttp2_nv nva[] = {MakeNv(":status", "200"), MakeNv("content-type", "application/grpc"),
                              MakeNv("grpc-status", code), MakeNv("grpc-message", message)};
    downstream_.SubmitResponse(*this, nva, 4, /*has_body=*/false);
    return;
  }
  // Headers went out already: end with trailers after whatever data is queued.
  response_state_ = ResponseState::kComplete;
  trailers_.Clear();
  trailers_.Add("grpc-status", code);
  trailers_.Add("grpc-message", message);
  ResumeDownstream();
}

void Call::PassOnReset(uint32_t h2_error_code) {
  response_state_ = ResponseState::kReset;
  downstream_.ResetStream(*this, h2_error_code);
}

void Call::AcknowledgeRequestBytes(size_t n) {
  if (response_state_ != ResponseState::kClosed) downstream_.ConsumeRequestData(*this, n);
}

// --- Internals -----------------------------------------------------------------------------------

pool::ShareAccount& Call::share_account() { return downstream_.share_account(); }

void Call::OnDeadline() {
  if (finished()) return;
  upstream_.Stop();
  FinishLocally(absl::DeadlineExceededError("qpool: deadline exceeded (grpc-timeout)"));
}

void Call::ResumeDownstream() {
  if (response_state_ == ResponseState::kHeadersSent ||
      response_state_ == ResponseState::kComplete) {
    downstream_.ResumeResponseData(*this);
  }
}

void Call::RecordCallEnd() {
  if (upstream_.request().state() == UpstreamRequest::State::kHeaders) {
    return;  // never became a call
  }
  const Duration duration = context_.loop.Now() - started_at_;
  context_.metrics.RecordCall(method_class_, grpc_code_, duration);
  if (ABSL_PREDICT_FALSE(AccessLogSampled(context_.random))) LogAccess(duration);
}

void Call::LogAccess(Duration duration) {
  std::string path = "other";
  if (method_ != nullptr) {
    path = std::string("/").append(method_->service).append("/").append(method_->method);
  }
  // The class the retry logic decided, or the one the method has whatever its body; "-" for a
  // write whose class depends on its body and was never needed.
  std::string_view retry_class = "-";
  const retry::MethodClassifier& classifier = context_.retry.classifier;
  if (std::optional<retry::RetryClass> decided = upstream_.request().retry_class()) {
    retry_class = retry::RetryClassName(*decided);
  } else if (method_ != nullptr && !classifier.NeedsFirstMessage(path)) {
    retry_class = retry::RetryClassName(classifier.Classify(path, {}, {}));
  }
  const int node = upstream_.last_node();
  const config::NodeTable& nodes = *context_.nodes;
  AccessRecord record;
  record.protocol = "grpc";
  record.method = path;
  record.retry_class = retry_class;
  record.status = grpc_code_;
  record.duration = duration;
  if (node >= 0 && static_cast<size_t>(node) < nodes.slots.size()) {
    record.node = nodes.slots[node].name;
  }
  record.attempts = upstream_.attempts();
  record.peer = downstream_.peer();
  WriteAccessLine(record);
}

}  // namespace qpool::server
