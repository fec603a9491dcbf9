#include "daemon/server/call_answer.h"

#include <string>

#include "daemon/server/call.h"
#include "daemon/server/grpc_wire.h"
#include "spdlog/spdlog.h"

namespace qpool::server {

void CallAnswer::SendHeaders(const nghttp2_nv* nva, size_t nvlen, bool end_stream, int grpc_code) {
  if (end_stream) {
    // Trailers-only: one HEADERS frame with the status; forwarded as it is.
    grpc_code_ = grpc_code;
    Set(State::kComplete);
  } else {
    Set(State::kHeadersSent);
  }
  downstream_.SubmitResponse(call_, nva, nvlen, /*has_body=*/!end_stream);
}

void CallAnswer::End() {
  grpc_code_ = GrpcStatusIn(trailers_);  // -1 when the answer ended without trailers
  Set(State::kComplete);
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
    Set(State::kComplete);
    const nghttp2_nv nva[] = {MakeNv(":status", "200"), MakeNv("content-type", "application/grpc"),
                              MakeNv("grpc-status", code), MakeNv("grpc-message", message)};
    downstream_.SubmitResponse(call_, nva, 4, /*has_body=*/false);
    return;
  }
  // Headers went out already: end with trailers after whatever data is queued.
  Set(State::kComplete);
  trailers_.Clear();
  trailers_.Add("grpc-status", code);
  trailers_.Add("grpc-message", message);
  Resume();
}

void CallAnswer::PassOnReset(uint32_t h2_error_code) {
  Set(State::kReset);
  downstream_.ResetStream(call_, h2_error_code);
}

void CallAnswer::Resume() {
  if (state_ == State::kHeadersSent || state_ == State::kComplete) {
    downstream_.ResumeResponseData(call_);
  }
}

}  // namespace qpool::server
