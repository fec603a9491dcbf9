#include "daemon/server/connection_defences.h"

#include <iterator>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "daemon/config/config.h"
#include "daemon/server/proxy_counters.h"
#include "spdlog/spdlog.h"

namespace qpool::server {

ConnectionDefences::ConnectionDefences(DefendedConnection& connection, ProxyCounters& counters,
                                       EventLoop& loop, const config::ServerConfig& server,
                                       const std::string& peer)
    : connection_(connection),
      counters_(counters),
      loop_(loop),
      peer_(peer),
      header_guard_(server.max_header_list_size, server.max_headers),
      buffer_limit_(server.connection_buffer_limit),
      max_message_size_(server.max_message_size),
      stream_idle_timeout_(absl::ToChronoNanoseconds(server.stream_idle_timeout)) {}

int ConnectionDefences::OnHeaderOverLimit(int32_t stream_id, Call* call) {
  switch (header_guard_.OnOverLimit(stream_id)) {
    case HeaderBlockGuard::OverLimit::kFlood:
      CloseForAbuse(AbuseReason::kHeaderBlockFlood);
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    case HeaderBlockGuard::OverLimit::kRest:
      return 0;
    case HeaderBlockGuard::OverLimit::kFirst:
      break;
  }
  counters_.downstream_header_limit_rejections[header_guard_.over_count() ? 1 : 0].fetch_add(
      1, std::memory_order_relaxed);
  // The call lets go of what it stored (and of its upstream stream, for trailers).
  if (call != nullptr) connection_.EndCall(*call, NGHTTP2_CANCEL);
  return Spend(AbuseReason::kHeaderLimit) ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
}

void ConnectionDefences::AnswerOverLimitBlock(int32_t stream_id, bool request) {
  header_guard_.EndOverLimit();
  if (request) {
    ReplyResourceExhausted(stream_id, header_guard_.message());
  } else {
    // Trailers: the call is gone and the answer may be under way; the stream ends here.
    connection_.SubmitReset(stream_id, NGHTTP2_ENHANCE_YOUR_CALM);
  }
}

bool ConnectionDefences::Spend(AbuseReason reason) {
  if (abuse_.Spend(reason, loop_.Now())) return true;
  CloseForAbuse(reason);
  return false;
}

void ConnectionDefences::CloseForAbuse(AbuseReason reason) {
  if (!abuse_.MarkAbusive()) return;
  const std::string why = absl::StrCat("qpool: ", std::string(AbuseReasonName(reason)));
  if (!connection_.CloseWithGoaway(NGHTTP2_ENHANCE_YOUR_CALM, why,
                                   absl::ResourceExhaustedError(why))) {
    return;  // closed already, for another reason
  }
  counters_.downstream_abuse[static_cast<size_t>(reason)].fetch_add(1, std::memory_order_relaxed);
  SPDLOG_DEBUG("client {}: closing: GOAWAY(ENHANCE_YOUR_CALM) {}", peer_, why);
}

void ConnectionDefences::RejectOversizeMessage(Call& call) {
  if (call.response_started()) {
    ResetCall(call, NGHTTP2_ENHANCE_YOUR_CALM, StreamResetReason::kMessageSize);
    return;
  }
  const int32_t stream_id = call.downstream_stream_id();
  const uint64_t declared = call.request_size_guard.declared();
  counters_.downstream_stream_resets[static_cast<size_t>(StreamResetReason::kMessageSize)]
      .fetch_add(1, std::memory_order_relaxed);
  connection_.EndCall(call, NGHTTP2_CANCEL);  // cancels the upstream stream, or the wait for one
  ReplyResourceExhausted(stream_id, absl::StrCat("qpool: request message of ", declared,
                                                 " bytes is over server.max_message_size (",
                                                 max_message_size_, " bytes)"));
}

void ConnectionDefences::ReplyResourceExhausted(int32_t stream_id, const std::string& message) {
  const nghttp2_nv nva[] = {MakeNv(":status", "200"), MakeNv("content-type", "application/grpc"),
                            MakeNv("grpc-status", "8"),  // RESOURCE_EXHAUSTED
                            MakeNv("grpc-message", message)};
  connection_.SubmitLocalReply(stream_id, nva, std::size(nva));
  counters_.local_replies.fetch_add(1, std::memory_order_relaxed);
}

void ConnectionDefences::ResetCall(Call& call, uint32_t h2_error_code, StreamResetReason reason) {
  counters_.downstream_stream_resets[static_cast<size_t>(reason)].fetch_add(
      1, std::memory_order_relaxed);
  connection_.SubmitReset(call.downstream_stream_id(), h2_error_code);
  connection_.EndCall(call, h2_error_code);  // cancels the upstream stream, or the wait for one
}

void ConnectionDefences::RunBufferCheck(DownstreamCallList& calls) {
  buffer_check_posted_ = false;
  while (response_bytes_ > buffer_limit_) {
    Call* largest = nullptr;
    for (Call& call : calls) {
      if (largest == nullptr || call.response_buffered() > largest->response_buffered()) {
        largest = &call;
      }
    }
    if (largest == nullptr || largest->response_buffered() == 0) return;
    SPDLOG_DEBUG(
        "client {}: stream {}: reset: {} unread response bytes on the connection, over "
        "server.connection_buffer_limit ({})",
        peer_, largest->downstream_stream_id(), response_bytes_, buffer_limit_);
    ResetCall(*largest, NGHTTP2_ENHANCE_YOUR_CALM, StreamResetReason::kBufferLimit);
  }
}

void ConnectionDefences::CheckStreams(DownstreamCallList& calls, MonoTime now) {
  if (stream_idle_timeout_ == Duration::zero()) return;
  std::vector<Call*> stalled;
  for (Call& call : calls) {
    if (call.stall_watch.Stalled(connection_.WaitingOnApp(call), now, stream_idle_timeout_)) {
      stalled.push_back(&call);
    }
  }
  for (Call* call : stalled) {
    SPDLOG_DEBUG("client {}: stream {}: reset: no progress for server.stream_idle_timeout", peer_,
                 call->downstream_stream_id());
    ResetCall(*call, NGHTTP2_CANCEL, StreamResetReason::kStreamIdle);
  }
}

}  // namespace qpool::server
