#include "daemon/server/call.h"

#include <string>

#include "absl/base/optimization.h"
#include "daemon/common/access_log.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/retry/retry_context.h"
#include "daemon/server/grpc_wire.h"
#include "daemon/server/proxy_counters.h"

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
      answer_(*this, downstream, context.counters),
      request_(*this, &context.counters.buffered_bytes, context.retry.replay, context.retry.events),
      upstream_(context, request_, answer_, downstream.share_account()) {}

Call::~Call() {
  // The session deletes a call only after OnDownstreamClosed, which let go of everything.
}

// --- Downstream events -------------------------------------------------------------------------

void Call::OnRequestHeader(nghttp2_rcbuf* name_buf, nghttp2_rcbuf* value_buf) {
  if (request_.state() != UpstreamRequest::State::kHeaders) {
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
  request_.AddHeader(name_buf, value_buf);
}

void Call::OnRequestHeadersEnd() {
  context_.counters.calls_started.fetch_add(1, std::memory_order_relaxed);
  started_at_ = context_.loop.Now();
  if (deadline_) {
    deadline_timer_ = context_.loop.CreateTimer();
    deadline_timer_->Arm(*deadline_ - context_.loop.Now(), [this] { OnDeadline(); });
  }
  upstream_.Start(deadline_, method_class_ == metrics::MethodClass::kRead);
}

void Call::OnRequestData(const uint8_t* data, size_t len) {
  context_.metrics.AddRequestBytes(len);
  if (request_.Append(data, len)) upstream_.OnRequestMore();
}

void Call::OnRequestEnd() {
  if (request_.End()) upstream_.OnRequestMore();
}

void Call::OnDownstreamClosed(uint32_t /*h2_error_code*/) {
  answer_.Close();
  if (deadline_timer_) deadline_timer_->Cancel();
  // An app's RST_STREAM (or lost connection) cancels the upstream stream or the wait for one; a
  // normal close after the full answer finds the upstream stream closed already.
  upstream_.Stop();
  RecordCallEnd();
}

ssize_t Call::ReadResponseBody(uint8_t* buf, size_t length, uint32_t* data_flags) {
  const ssize_t n = answer_.Read(buf, length, data_flags);
  if (n > 0) upstream_.ConsumeResponse(static_cast<size_t>(n));
  return n;
}

void Call::AcknowledgeRequestBytes(size_t n) {
  if (!answer_.closed()) downstream_.ConsumeRequestData(*this, n);
}

// --- Internals -----------------------------------------------------------------------------------

pool::ShareAccount& Call::share_account() { return downstream_.share_account(); }

void Call::OnDeadline() {
  if (finished()) return;
  upstream_.Stop();
  request_.Drop();  // answered: nothing more goes upstream
  answer_.FinishLocally(absl::DeadlineExceededError("qpool: deadline exceeded (grpc-timeout)"));
}

void Call::RecordCallEnd() {
  if (request_.state() == UpstreamRequest::State::kHeaders) {
    return;  // never became a call
  }
  const Duration duration = context_.loop.Now() - started_at_;
  context_.metrics.RecordCall(method_class_, answer_.grpc_code(), duration);
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
  if (std::optional<retry::RetryClass> decided = request_.retry_class()) {
    retry_class = retry::RetryClassName(*decided);
  } else if (method_ != nullptr && !classifier.NeedsFirstMessage(path)) {
    retry_class = retry::RetryClassName(classifier.Classify(path, {}, {}));
  }
  AccessRecord record;
  record.protocol = "grpc";
  record.method = path;
  record.retry_class = retry_class;
  record.status = answer_.grpc_code();
  record.duration = duration;
  upstream_.DescribeForLog(record);
  record.peer = downstream_.peer();
  WriteAccessLine(record);
}

}  // namespace qpool::server
