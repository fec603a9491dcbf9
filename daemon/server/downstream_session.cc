#include "daemon/server/downstream_session.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <string_view>
#include <vector>

#include "absl/base/optimization.h"
#include "absl/strings/str_cat.h"
#include "daemon/config/config.h"
#include "daemon/server/call.h"
#include "daemon/server/call_context.h"
#include "daemon/server/proxy_counters.h"
#include "daemon/server/small_alloc.h"
#include "spdlog/spdlog.h"

namespace qpool::server {

using boost::asio::ip::tcp;

namespace {

DownstreamSession* Self(void* user_data) { return static_cast<DownstreamSession*>(user_data); }

constexpr uint8_t kDrainPingPayload[8] = {'q', 'p', 'd', 'r', 'a', 'i', 'n', '!'};

}  // namespace

DownstreamSession::DownstreamSession(ConnectionContext& context, tcp::socket socket)
    : H2Transport(context, std::move(socket)),
      header_guard_(context.config->server.max_header_list_size,
                    context.config->server.max_headers),
      timeouts_(context.loop.Now()),
      connection_buffer_limit_(context.config->server.connection_buffer_limit),
      max_message_size_(context.config->server.max_message_size),
      stream_idle_timeout_(absl::ToChronoNanoseconds(context.config->server.stream_idle_timeout)) {
  boost::system::error_code ec;
  const tcp::endpoint endpoint = socket_.remote_endpoint(ec);
  peer_ = ec ? "unknown" : absl::StrCat(endpoint.address().to_string(), ":", endpoint.port());
}

DownstreamSession::~DownstreamSession() {
  // OnTransportClosed ended every call; a session that never started has none.
  calls_.clear_and_dispose([](Call* call) { delete call; });
}

bool DownstreamSession::CreateSession() {
  nghttp2_option* option = NewSessionOption();
  // qpoold keeps its own reset budget (kResetBudget, counted and answered with
  // ENHANCE_YOUR_CALM); nghttp2's (Debian's 1.52 carries the 1.57 one) stays as a backstop above.
  nghttp2_option_set_stream_reset_rate_limit(option, 2 * kResetBudget.burst,
                                             2 * kResetBudget.per_second);
  nghttp2_mem allocator = session_allocator();
  const int rv = nghttp2_session_server_new3(&session_, Callbacks(), this, option, &allocator);
  SessionCreated();
  nghttp2_option_del(option);
  if (rv != 0) {
    CloseTransport(absl::InternalError(nghttp2_strerror(rv)));
    return false;
  }
  const config::ServerConfig& server = context().config->server;
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, server.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, server.stream_window},
      // gRPC has no use for stream priorities; without RFC 7540's dependency tree nghttp2
      // schedules streams with less work (RFC 9218).
      {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
      // Advisory (RFC 9113 6.5.2): qpoold enforces it while decoding.
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, server.max_header_list_size},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  // Request bytes not forwarded yet hold the connection's window (Call::request_window_held), so
  // server.connection_buffer_limit bounds them across all the connection's streams.
  OpenConnectionWindow(
      connection_buffer_limit_ > 0
          ? static_cast<int32_t>(std::clamp<int64_t>(
                connection_buffer_limit_, NGHTTP2_INITIAL_WINDOW_SIZE, kUnboundedConnectionWindow))
          : kUnboundedConnectionWindow);
  return true;
}

void DownstreamSession::Start() { StartReading(); }

void DownstreamSession::Refuse(const std::string& reason) {
  if (!CreateSession()) return;
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, 0, NGHTTP2_REFUSED_STREAM,
                        reinterpret_cast<const uint8_t*>(reason.data()), reason.size());
  draining_ = true;
  final_goaway_sent_ = true;
  refused_ = true;
  StartReading();
  Flush();
}

void DownstreamSession::BeginDrain() {
  if (draining_ || closed()) return;
  draining_ = true;
  if (session_ == nullptr) {  // the app has not spoken yet: nothing to wind down
    CloseTransport(absl::OkStatus());
    return;
  }
  // Two-step GOAWAY (RFC 9113 6.8): announce, wait one round trip, then name the last stream, so
  // no call the app sent in the meantime is lost.
  nghttp2_submit_shutdown_notice(session_);
  nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, kDrainPingPayload);
  ScheduleFlush();
}

void DownstreamSession::Abort() { CloseTransport(absl::CancelledError("closed by qpoold")); }

int DownstreamSession::SubmitResponse(Call& call, const nghttp2_nv* nva, size_t nvlen,
                                      bool has_body) {
  if (closed()) return NGHTTP2_ERR_INVALID_STATE;
  nghttp2_data_provider provider{};
  provider.read_callback = &DownstreamSession::ReadResponseCallback;
  const int rv = nghttp2_submit_response(session_, call.downstream_stream_id(), nva, nvlen,
                                         has_body ? &provider : nullptr);
  ScheduleFlush();
  return rv;
}

int DownstreamSession::SubmitTrailers(Call& call, const nghttp2_nv* nva, size_t nvlen) {
  if (closed()) return NGHTTP2_ERR_INVALID_STATE;
  return nghttp2_submit_trailer(session_, call.downstream_stream_id(), nva, nvlen);
}

void DownstreamSession::ResumeResponseData(Call& call) {
  if (closed()) return;
  nghttp2_session_resume_data(session_, call.downstream_stream_id());
  ScheduleFlush();
  // The call's response queue just grew (or ended): past the limit, streams are reset on a turn
  // of their own, since the call that is growing is still on the stack.
  if (ABSL_PREDICT_FALSE(connection_buffer_limit_ > 0 &&
                         response_bytes_ > connection_buffer_limit_ && !buffer_check_posted_)) {
    buffer_check_posted_ = true;
    boost::asio::post(context().io, [self = shared_from_this()] {
      auto* session = static_cast<DownstreamSession*>(self.get());
      session->buffer_check_posted_ = false;
      session->EnforceBufferLimit();
    });
  }
}

void DownstreamSession::EnforceBufferLimit() {
  while (!closed() && response_bytes_ > connection_buffer_limit_) {
    Call* largest = nullptr;
    for (Call& call : calls_) {
      if (largest == nullptr || call.response_buffered() > largest->response_buffered()) {
        largest = &call;
      }
    }
    if (largest == nullptr || largest->response_buffered() == 0) return;
    SPDLOG_DEBUG(
        "client {}: stream {}: reset: {} unread response bytes on the connection, over "
        "server.connection_buffer_limit ({})",
        peer_, largest->downstream_stream_id(), response_bytes_, connection_buffer_limit_);
    ResetCall(*largest, NGHTTP2_ENHANCE_YOUR_CALM, StreamResetReason::kBufferLimit);
  }
}

void DownstreamSession::ResetCall(Call& call, uint32_t h2_error_code, StreamResetReason reason) {
  const int32_t stream_id = call.downstream_stream_id();
  context().counters.downstream_stream_resets[static_cast<size_t>(reason)].fetch_add(
      1, std::memory_order_relaxed);
  DetachCall(call);
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, h2_error_code);
  call.OnDownstreamClosed(h2_error_code);  // cancels the upstream stream, or the wait for one
  delete &call;
  ScheduleFlush();
}

void DownstreamSession::CheckStreams(MonoTime now) {
  if (closed() || session_ == nullptr || stream_idle_timeout_ == Duration::zero()) return;
  std::vector<Call*> stalled;
  for (Call& call : calls_) {
    const int32_t id = call.downstream_stream_id();
    // The app may send (its request is open and the window has room), or has bytes to read.
    const bool waiting_on_app = (nghttp2_session_get_stream_remote_close(session_, id) == 0 &&
                                 nghttp2_session_get_stream_local_window_size(session_, id) > 0) ||
                                call.response_buffered() > 0;
    if (call.stall_watch.Stalled(waiting_on_app, now, stream_idle_timeout_)) {
      stalled.push_back(&call);
    }
  }
  for (Call* call : stalled) {
    SPDLOG_DEBUG("client {}: stream {}: reset: no progress for server.stream_idle_timeout", peer_,
                 call->downstream_stream_id());
    ResetCall(*call, NGHTTP2_CANCEL, StreamResetReason::kStreamIdle);
  }
}

void DownstreamSession::ResetStream(Call& call, uint32_t h2_error_code) {
  if (closed()) return;
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, call.downstream_stream_id(),
                            h2_error_code);
  ScheduleFlush();
}

void DownstreamSession::ConsumeRequestData(Call& call, size_t n) {
  if (closed()) return;
  // Both windows: the stream's, and the connection's share this call held.
  const size_t on_connection = std::min<size_t>(n, call.request_window_held);
  call.request_window_held -= on_connection;
  nghttp2_session_consume_stream(session_, call.downstream_stream_id(), n);
  if (on_connection > 0) nghttp2_session_consume_connection(session_, on_connection);
  ScheduleFlush();
}

void DownstreamSession::DetachCall(Call& call) {
  calls_.erase(calls_.iterator_to(call));
  nghttp2_session_set_stream_user_data(session_, call.downstream_stream_id(), nullptr);
  // What it never forwarded goes back to the connection's window (the stream's closes with it).
  if (call.request_window_held > 0) {
    nghttp2_session_consume_connection(session_, call.request_window_held);
    call.request_window_held = 0;
  }
}

void DownstreamSession::TrimIdle() {
  if (calls_.empty()) TrimIdleMemory();
}

DownstreamSession::TimeoutAction DownstreamSession::CheckTimeouts(MonoTime now) {
  if (closed() || refused_) return TimeoutAction::kNone;
  const config::ServerConfig& server = context().config->server;
  return timeouts_.Check(now, !calls_.empty() || draining_,
                         absl::ToChronoNanoseconds(server.handshake_timeout),
                         absl::ToChronoNanoseconds(server.idle_timeout));
}

void DownstreamSession::OnTimeout(TimeoutAction action) {
  if (closed()) return;
  ProxyCounters& counters = context().counters;
  timed_out_ = true;
  if (action == TimeoutAction::kHandshakeTimeout) {
    counters.downstream_handshake_timeouts.fetch_add(1, std::memory_order_relaxed);
    SPDLOG_DEBUG(
        "client {}: closing: no HTTP/2 preface and SETTINGS within "
        "server.handshake_timeout",
        peer_);
    static constexpr std::string_view kWhy = "qpool: server.handshake_timeout";
    // A peer that sent part of a preface is told why; a silent one just loses the connection.
    if (session_ != nullptr) {
      nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, 0, NGHTTP2_SETTINGS_TIMEOUT,
                            reinterpret_cast<const uint8_t*>(kWhy.data()), kWhy.size());
    }
    FlushAndClose(absl::DeadlineExceededError("server.handshake_timeout"));
  } else if (action == TimeoutAction::kIdleTimeout) {
    counters.downstream_idle_timeouts.fetch_add(1, std::memory_order_relaxed);
    SPDLOG_DEBUG("client {}: closing: no stream for server.idle_timeout", peer_);
    // No stream is open: once the GOAWAY is out, nghttp2 wants nothing more and Flush() closes.
    // A request racing it is above the GOAWAY's last stream id: the client sends it again.
    static constexpr std::string_view kWhy = "qpool: server.idle_timeout";
    draining_ = true;
    final_goaway_sent_ = true;
    nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                          reinterpret_cast<const uint8_t*>(kWhy.data()), kWhy.size());
    FlushAndClose(absl::OkStatus());
  }
}

bool DownstreamSession::Spend(AbuseReason reason) {
  if (abuse_.Spend(reason, context().loop.Now())) return true;
  CloseForAbuse(reason);
  return false;
}

void DownstreamSession::CloseForAbuse(AbuseReason reason) {
  if (closed() || !abuse_.MarkAbusive()) return;
  context().counters.downstream_abuse[static_cast<size_t>(reason)].fetch_add(
      1, std::memory_order_relaxed);
  const std::string why = absl::StrCat("qpool: ", std::string(AbuseReasonName(reason)));
  SPDLOG_DEBUG("client {}: closing: GOAWAY(ENHANCE_YOUR_CALM) {}", peer_, why);
  draining_ = true;
  final_goaway_sent_ = true;
  nghttp2_submit_goaway(
      session_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(session_),
      NGHTTP2_ENHANCE_YOUR_CALM, reinterpret_cast<const uint8_t*>(why.data()), why.size());
  FlushAndClose(absl::ResourceExhaustedError(why));
}

int DownstreamSession::OnHeaderOverLimit(nghttp2_session* session, const nghttp2_frame* frame) {
  const int32_t stream_id = frame->hd.stream_id;
  switch (header_guard_.OnOverLimit(stream_id)) {
    case HeaderBlockGuard::OverLimit::kFlood:
      CloseForAbuse(AbuseReason::kHeaderBlockFlood);
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    case HeaderBlockGuard::OverLimit::kRest:
      return 0;
    case HeaderBlockGuard::OverLimit::kFirst:
      break;
  }
  context()
      .counters.downstream_header_limit_rejections[header_guard_.over_count() ? 1 : 0]
      .fetch_add(1, std::memory_order_relaxed);
  // The call lets go of what it stored (and of its upstream stream, for trailers).
  if (Call* call = CallOf(session, stream_id)) {
    DetachCall(*call);
    call->OnDownstreamClosed(NGHTTP2_CANCEL);
    delete call;
  }
  return Spend(AbuseReason::kHeaderLimit) ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
}

void DownstreamSession::ReplyResourceExhausted(int32_t stream_id, const std::string& message) {
  const nghttp2_nv nva[] = {MakeNv(":status", "200"), MakeNv("content-type", "application/grpc"),
                            MakeNv("grpc-status", "8"),  // RESOURCE_EXHAUSTED
                            MakeNv("grpc-message", message)};
  nghttp2_submit_response(session_, stream_id, nva, std::size(nva), nullptr);
  context().counters.local_replies.fetch_add(1, std::memory_order_relaxed);
  ScheduleFlush();
}

void DownstreamSession::OnProtocolError(int nghttp2_error) {
  context().counters.downstream_protocol_errors.fetch_add(1, std::memory_order_relaxed);
  SPDLOG_DEBUG("client {}: closing: HTTP/2 protocol error: {}", peer_,
               nghttp2_strerror(nghttp2_error));
  H2Transport::OnProtocolError(nghttp2_error);
}

void DownstreamSession::OnTransportClosed(const absl::Status& reason) {
  // nghttp2 will not report these streams' ends any more: end the calls here.
  while (!calls_.empty()) {
    Call* call = &calls_.front();
    calls_.pop_front();
    call->OnDownstreamClosed(NGHTTP2_CANCEL);
    delete call;
  }
  context().host.OnSessionClosed(this);
}

// --- nghttp2 callbacks -------------------------------------------------------------------------

nghttp2_session_callbacks* DownstreamSession::Callbacks() {
  static nghttp2_session_callbacks* callbacks = [] {
    nghttp2_session_callbacks* cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, &OnBeginFrameCallback);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &OnBeginHeadersCallback);
    nghttp2_session_callbacks_set_on_header_callback2(cbs, &OnHeaderCallback);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &OnFrameRecvCallback);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &OnDataChunkRecvCallback);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &OnStreamCloseCallback);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, &OnFrameSendCallback);
    nghttp2_session_callbacks_set_error_callback2(cbs, &ErrorCallback);
    return cbs;
  }();
  return callbacks;
}

int DownstreamSession::OnBeginHeadersCallback(nghttp2_session* session, const nghttp2_frame* frame,
                                              void* user_data) {
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  DownstreamSession* self = Self(user_data);
  self->header_guard_.BeginBlock();
  if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  self->timeouts_.OnStreamOpened();
  auto* call = new Call(self->context().calls, *self, frame->hd.stream_id);
  nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, call);
  self->calls_.push_back(*call);
  return 0;
}

int DownstreamSession::OnHeaderCallback(nghttp2_session* session, const nghttp2_frame* frame,
                                        nghttp2_rcbuf* name, nghttp2_rcbuf* value, uint8_t,
                                        void* user_data) {
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  DownstreamSession* self = Self(user_data);
  if (ABSL_PREDICT_FALSE(!self->header_guard_.Add(nghttp2_rcbuf_get_buf(name).len,
                                                  nghttp2_rcbuf_get_buf(value).len))) {
    return self->OnHeaderOverLimit(session, frame);
  }
  Call* call = CallOf(session, frame->hd.stream_id);
  if (call == nullptr) return 0;
  call->OnRequestHeader(name, value);
  return 0;
}

int DownstreamSession::OnFrameRecvCallback(nghttp2_session* session, const nghttp2_frame* frame,
                                           void* user_data) {
  DownstreamSession* self = Self(user_data);
  switch (frame->hd.type) {
    case NGHTTP2_HEADERS: {
      if (ABSL_PREDICT_FALSE(self->header_guard_.over_limit(frame->hd.stream_id))) {
        self->header_guard_.EndOverLimit();
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
          self->ReplyResourceExhausted(frame->hd.stream_id, self->header_guard_.message());
        } else {
          // Trailers: the call is gone and the answer may be under way; the stream ends here.
          nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                    NGHTTP2_ENHANCE_YOUR_CALM);
        }
        break;
      }
      Call* call = CallOf(session, frame->hd.stream_id);
      if (call == nullptr) break;
      if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) call->OnRequestHeadersEnd();
      // OnRequestHeadersEnd may have answered and the app reset since: look the call up again.
      call = CallOf(session, frame->hd.stream_id);
      if (call != nullptr && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) call->OnRequestEnd();
      break;
    }
    case NGHTTP2_DATA: {
      if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        // A DATA frame with nothing in it (padding aside) that does not end the stream.
        if (frame->hd.length == frame->data.padlen && !self->Spend(AbuseReason::kEmptyFrames)) {
          return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        break;
      }
      Call* call = CallOf(session, frame->hd.stream_id);
      if (call != nullptr) call->OnRequestEnd();
      break;
    }
    case NGHTTP2_PING:
      if (!(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
        // A PING after qpoold sent HEADERS or DATA is free (gRPC's BDP probes); keepalives and
        // anything faster spend the budget.
        if (!self->abuse_.TakeFreePing() && !self->Spend(AbuseReason::kPingFlood)) {
          return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        break;
      }
      if (self->draining_ && !self->final_goaway_sent_ &&
          std::equal(std::begin(kDrainPingPayload), std::end(kDrainPingPayload),
                     frame->ping.opaque_data)) {
        self->final_goaway_sent_ = true;
        nghttp2_submit_goaway(session, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(session), NGHTTP2_NO_ERROR,
                              nullptr, 0);
        self->ScheduleFlush();
      }
      break;
    case NGHTTP2_SETTINGS:
      if (frame->hd.flags & NGHTTP2_FLAG_ACK) break;
      self->timeouts_.OnHandshakeDone();  // nghttp2 checked the preface before this frame
      if (!self->Spend(AbuseReason::kSettingsFlood)) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
      }
      break;
    case NGHTTP2_RST_STREAM:
      if (!self->Spend(AbuseReason::kRapidReset)) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
      }
      break;
    default:
      break;
  }
  return 0;
}

int DownstreamSession::OnBeginFrameCallback(nghttp2_session*, const nghttp2_frame_hd* hd,
                                            void* user_data) {
  // With RFC 7540 priorities off, nghttp2 drops PRIORITY frames without reporting them: they are
  // counted here, as they begin.
  if (hd->type != NGHTTP2_PRIORITY) return 0;
  DownstreamSession* self = Self(user_data);
  return self->Spend(AbuseReason::kPriorityFlood) ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
}

int DownstreamSession::OnDataChunkRecvCallback(nghttp2_session* session, uint8_t, int32_t stream_id,
                                               const uint8_t* data, size_t len, void* user_data) {
  auto* call = static_cast<Call*>(nghttp2_session_get_stream_user_data(session, stream_id));
  if (call == nullptr) {
    // The call let go (a reset is on its way): nobody holds these bytes.
    nghttp2_session_consume(session, stream_id, len);
    return 0;
  }
  call->request_window_held += len;  // until forwarded (ConsumeRequestData) or the call goes
  call->stall_watch.OnProgress();
  DownstreamSession* self = Self(user_data);
  if (ABSL_PREDICT_FALSE(self->max_message_size_ > 0) &&
      !call->request_size_guard.Feed(data, len, self->max_message_size_)) {
    nghttp2_session_consume_stream(session, stream_id, len);  // the call never takes them
    self->RejectOversizeMessage(*call, call->request_size_guard.declared());
    return 0;
  }
  call->OnRequestData(data, len);
  return 0;
}

void DownstreamSession::RejectOversizeMessage(Call& call, uint64_t declared) {
  if (call.response_started()) {
    ResetCall(call, NGHTTP2_ENHANCE_YOUR_CALM, StreamResetReason::kMessageSize);
    return;
  }
  const int32_t stream_id = call.downstream_stream_id();
  context()
      .counters.downstream_stream_resets[static_cast<size_t>(StreamResetReason::kMessageSize)]
      .fetch_add(1, std::memory_order_relaxed);
  DetachCall(call);
  call.OnDownstreamClosed(NGHTTP2_CANCEL);  // cancels the upstream stream, or the wait for one
  delete &call;
  ReplyResourceExhausted(stream_id, absl::StrCat("qpool: request message of ", declared,
                                                 " bytes is over server.max_message_size (",
                                                 max_message_size_, " bytes)"));
}

int DownstreamSession::OnStreamCloseCallback(nghttp2_session* session, int32_t stream_id,
                                             uint32_t error_code, void* user_data) {
  Call* call = CallOf(session, stream_id);
  if (call == nullptr) return 0;
  DownstreamSession* self = Self(user_data);
  self->DetachCall(*call);
  call->OnDownstreamClosed(error_code);
  delete call;
  return 0;
}

int DownstreamSession::OnFrameSendCallback(nghttp2_session* session, const nghttp2_frame* frame,
                                           void* user_data) {
  DownstreamSession* self = Self(user_data);
  if (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) {
    self->abuse_.OnResponseFrameSent();
    if (frame->hd.type == NGHTTP2_DATA) {
      if (Call* call = CallOf(session, frame->hd.stream_id)) call->stall_watch.OnProgress();
    }
    return 0;
  }
  // nghttp2 answers a connection error (a broken frame, a bad header block, a flow-control
  // violation) with a GOAWAY carrying the error code, then winds the connection down.
  if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR &&
      !self->refused_ && !self->abuse_.abusive() && !self->timed_out_) {
    self->context().counters.downstream_protocol_errors.fetch_add(1, std::memory_order_relaxed);
    SPDLOG_DEBUG("client {}: closing: HTTP/2 connection error {}: {}", self->peer_,
                 nghttp2_http2_strerror(frame->goaway.error_code), self->last_error_);
  }
  return 0;
}

int DownstreamSession::ErrorCallback(nghttp2_session*, int, const char* msg, size_t len,
                                     void* user_data) {
  Self(user_data)->last_error_.assign(msg, len);
  return 0;
}

ssize_t DownstreamSession::ReadResponseCallback(nghttp2_session* session, int32_t stream_id,
                                                uint8_t* buf, size_t length, uint32_t* data_flags,
                                                nghttp2_data_source*, void*) {
  Call* call = CallOf(session, stream_id);
  if (call == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  return call->ReadResponseBody(buf, length, data_flags);
}

}  // namespace qpool::server
