#include "daemon/server/downstream_calls.h"

#include <algorithm>
#include <boost/asio/post.hpp>

#include "absl/base/optimization.h"

namespace qpool::server {

namespace {

// nghttp2's data source for a response body: the call's queue.
ssize_t ReadResponse(nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length,
                     uint32_t* data_flags, nghttp2_data_source*, void*) {
  Call* call = CallOf(session, stream_id);
  if (call == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  return call->ReadResponseBody(buf, length, data_flags);
}

}  // namespace

DownstreamCalls::~DownstreamCalls() {
  calls_.clear_and_dispose([](Call* call) { delete call; });
}

void DownstreamCalls::Open(int32_t stream_id) {
  auto* call = new Call(transport_.context().calls, *this, stream_id);
  nghttp2_session_set_stream_user_data(transport_.session(), stream_id, call);
  calls_.push_back(*call);
}

void DownstreamCalls::End(Call& call, uint32_t h2_error_code) {
  calls_.erase(calls_.iterator_to(call));
  nghttp2_session* session = transport_.session();
  nghttp2_session_set_stream_user_data(session, call.downstream_stream_id(), nullptr);
  // What it never forwarded goes back to the connection's window (the stream's closes with it).
  if (call.request_window_held > 0) {
    nghttp2_session_consume_connection(session, call.request_window_held);
    call.request_window_held = 0;
  }
  call.OnDownstreamClosed(h2_error_code);  // cancels the upstream stream, or the wait for one
  delete &call;
}

void DownstreamCalls::EndAll() {
  while (!calls_.empty()) {
    Call* call = &calls_.front();
    calls_.pop_front();
    call->OnDownstreamClosed(NGHTTP2_CANCEL);
    delete call;
  }
}

int DownstreamCalls::SubmitResponse(Call& call, const nghttp2_nv* nva, size_t nvlen,
                                    bool has_body) {
  if (transport_.closed()) return NGHTTP2_ERR_INVALID_STATE;
  nghttp2_data_provider provider{};
  provider.read_callback = &ReadResponse;
  const int rv = nghttp2_submit_response(transport_.session(), call.downstream_stream_id(), nva,
                                         nvlen, has_body ? &provider : nullptr);
  transport_.ScheduleFlush();
  return rv;
}

int DownstreamCalls::SubmitTrailers(Call& call, const nghttp2_nv* nva, size_t nvlen) {
  if (transport_.closed()) return NGHTTP2_ERR_INVALID_STATE;
  return nghttp2_submit_trailer(transport_.session(), call.downstream_stream_id(), nva, nvlen);
}

void DownstreamCalls::ResumeResponseData(Call& call) {
  if (transport_.closed()) return;
  nghttp2_session_resume_data(transport_.session(), call.downstream_stream_id());
  transport_.ScheduleFlush();
  if (ABSL_PREDICT_FALSE(defences_.OnResponseQueued())) {
    boost::asio::post(transport_.context().io, [this, keep = transport_.shared_from_this()] {
      if (!transport_.closed()) defences_.RunBufferCheck(calls_);
    });
  }
}

void DownstreamCalls::ResetStream(Call& call, uint32_t h2_error_code) {
  if (transport_.closed()) return;
  nghttp2_submit_rst_stream(transport_.session(), NGHTTP2_FLAG_NONE, call.downstream_stream_id(),
                            h2_error_code);
  transport_.ScheduleFlush();
}

void DownstreamCalls::ConsumeRequestData(Call& call, size_t n) {
  if (transport_.closed()) return;
  // Both windows: the stream's, and the connection's share this call held.
  const size_t on_connection = std::min<size_t>(n, call.request_window_held);
  call.request_window_held -= on_connection;
  nghttp2_session* session = transport_.session();
  nghttp2_session_consume_stream(session, call.downstream_stream_id(), n);
  if (on_connection > 0) nghttp2_session_consume_connection(session, on_connection);
  transport_.ScheduleFlush();
}

}  // namespace qpool::server
