#include "daemon/server/call_answer.h"

#include <string>

#include "daemon/server/call.h"
#include "daemon/server/grpc_wire.h"
#include "daemon/server/proxy_counters.h"
#include "spdlog/spdlog.h"

namespace qpool::server {

CallAnswer::CallAnswer(Call& call, CallDownstream& downstream, ProxyCounters& counters)
    : call_(call),
      downstream_(downstream),
      counters_(counters),
      body_(&counters.buffered_bytes, downstream.response_bytes_held()) {}

void CallAnswer::SendHeaders(const nghttp2_nv* nva, size_t nvlen, bool end_stream, int grpc_code) {
  if (end_stream) {
    // Trailers-only: one HEADERS frame with the status; forwarded as it is.
    grpc_code_ = grpc_code;
    state_ = State::kComplete;
  } else {
    state_ = State::kHeadersSent;
  }
  downstream_.SubmitResponse(call_, nva, nvlen, /*has_body=*/!end_stream);
}

void CallAnswer::End() {
  grpc_code_ = GrpcStatusIn(trailers_);  // -1 when the answer ended without trailers
  state_ = State::kComplete;
  Resume();
}

void CallAnswer::FinishLocally(const absl::Status& status) {
  if (state_ == State::kClosed) return;
  counters_.local_replies.fetch_add(1, std::memory_order_relaxed);
  grpc_code_ = GrpcCode(status);
  SPDLOG_DEBUG("stream {} answered by qpoold: {}", call_.downstream_stream_id(), status.ToString());
  const std::string code = std::to_string(grpc_code_);
  const std::string message = PercentEncodeGrpcMessage(status.message());
  if (state_ == State::kNone) {
    state_ = State::kComplete;
    const nghttp2_nv nva[] = {MakeNv(":status", "200"), MakeNv("content-type", "application/grpc"),
                              MakeNv("grpc-status", code), MakeNv("grpc-message", message)};
    downstream_.SubmitResponse(call_, nva, 4, /*has_body=*/false);
    return;
  }
  // Headers went out already: end with trailers after whatever data is queued.
  state_ = State::kComplete;
  trailers_.Clear();
  trailers_.Add("grpc-status", code);
  trailers_.Add("grpc-message", message);
  Resume();
}

void CallAnswer::PassOnReset(uint32_t h2_error_code) {
  state_ = State::kReset;
  downstream_.ResetStream(call_, h2_error_code);
}

ssize_t CallAnswer::Read(uint8_t* buf, size_t length, uint32_t* data_flags) {
  const size_t n = body_.Read(buf, length);
  if (body_.empty()) {
    if (state_ == State::kComplete) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      if (!trailers_.empty()) {
        *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        NvArray nva = trailers_.ToNv();
        downstream_.SubmitTrailers(call_, nva.data(), nva.size());
      }
    } else if (n == 0) {
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  return static_cast<ssize_t>(n);
}

void CallAnswer::Resume() {
  if (state_ == State::kHeadersSent || state_ == State::kComplete) {
    downstream_.ResumeResponseData(call_);
  }
}

}  // namespace qpool::server
