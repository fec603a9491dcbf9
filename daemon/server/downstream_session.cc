#include "daemon/server/downstream_session.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <string_view>

#include "absl/base/optimization.h"
#include "absl/strings/str_cat.h"
#include "daemon/config/config.h"
#include "daemon/server/call.h"
#include "daemon/server/proxy_counters.h"
#include "daemon/server/small_alloc.h"
#include "spdlog/spdlog.h"

namespace qpool::server {

using boost::asio::ip::tcp;

namespace {

DownstreamSession* Self(void* user_data) { return static_cast<DownstreamSession*>(user_data); }

constexpr uint8_t kDrainPingPayload[8] = {'q', 'p', 'd', 'r', 'a', 'i', 'n', '!'};

std::string PeerOf(const tcp::socket& socket) {
  boost::system::error_code ec;
  const tcp::endpoint endpoint = socket.remote_endpoint(ec);
  return ec ? "unknown" : absl::StrCat(endpoint.address().to_string(), ":", endpoint.port());
}

}  // namespace

DownstreamSession::DownstreamSession(ConnectionContext& context, tcp::socket socket)
    : H2Transport(context, std::move(socket)),
      peer_(PeerOf(socket_)),
      timeouts_(context.loop.Now()),
      defences_(*this, context.counters, context.loop, context.config->server, peer_),
      calls_(*this, defences_, peer_) {}

// OnTransportClosed ended every call; a session that never started has none.
DownstreamSession::~DownstreamSession() = default;

bool DownstreamSession::CreateSessionLate() {
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
  OpenConnectionWindow(server.connection_buffer_limit > 0
                           ? static_cast<int32_t>(std::clamp<int64_t>(
                                 server.connection_buffer_limit, NGHTTP2_INITIAL_WINDOW_SIZE,
                                 kUnboundedConnectionWindow))
                           : kUnboundedConnectionWindow);
  return true;
}

void DownstreamSession::Start() { StartReading(); }

void DownstreamSession::Refuse(const std::string& reason) {
  if (!CreateSessionLate()) return;
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

void DownstreamSession::TrimIdle() {
  if (calls_.empty()) TrimIdleMemory();
}

void DownstreamSession::CheckStreams(MonoTime now) {
  if (closed() || session_ == nullptr) return;
  defences_.CheckStreams(calls_.list(), now);
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
    CloseWithGoaway(NGHTTP2_NO_ERROR, "qpool: server.idle_timeout", absl::OkStatus());
  }
}

void DownstreamSession::OnProtocolError(int nghttp2_error) {
  context().counters.downstream_protocol_errors.fetch_add(1, std::memory_order_relaxed);
  SPDLOG_DEBUG("client {}: closing: HTTP/2 protocol error: {}", peer_,
               nghttp2_strerror(nghttp2_error));
  H2Transport::OnProtocolError(nghttp2_error);
}

void DownstreamSession::OnTransportClosed(const absl::Status&) {
  calls_.EndAll();  // nghttp2 will not report these streams' ends any more
  context().host.OnSessionClosed(this);
}

// --- DefendedConnection: what the defences ask of the connection --------------------------------

void DownstreamSession::SubmitReset(int32_t stream_id, uint32_t h2_error_code) {
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, h2_error_code);
  ScheduleFlush();
}

void DownstreamSession::SubmitLocalReply(int32_t stream_id, const nghttp2_nv* nva, size_t nvlen) {
  nghttp2_submit_response(session_, stream_id, nva, nvlen, nullptr);
  ScheduleFlush();
}

bool DownstreamSession::WaitingOnApp(const Call& call) {
  const int32_t id = call.downstream_stream_id();
  // The app may send (its request is open and the window has room), or has bytes to read.
  return (nghttp2_session_get_stream_remote_close(session_, id) == 0 &&
          nghttp2_session_get_stream_local_window_size(session_, id) > 0) ||
         call.response_buffered() > 0;
}

bool DownstreamSession::CloseWithGoaway(uint32_t h2_error_code, std::string_view why,
                                        const absl::Status& reason) {
  if (closed()) return false;
  draining_ = true;
  final_goaway_sent_ = true;
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_), h2_error_code,
                        reinterpret_cast<const uint8_t*>(why.data()), why.size());
  FlushAndClose(reason);
  return true;
}

// --- nghttp2 callbacks: each hands its event to a part -----------------------------------------

nghttp2_session_callbacks* DownstreamSession::Callbacks() {
  static nghttp2_session_callbacks* callbacks = [] {
    nghttp2_session_callbacks* cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_begin_frame_callback(
        cbs, [](nghttp2_session*, const nghttp2_frame_hd* hd, void* user_data) {
          // With RFC 7540 priorities off, nghttp2 drops PRIORITY frames without reporting them:
          // they are counted here, as they begin.
          if (hd->type != NGHTTP2_PRIORITY) return 0;
          return Self(user_data)->defences_.Spend(AbuseReason::kPriorityFlood)
                     ? 0
                     : NGHTTP2_ERR_CALLBACK_FAILURE;
        });
    nghttp2_session_callbacks_set_on_begin_headers_callback(
        cbs, [](nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
          if (frame->hd.type != NGHTTP2_HEADERS) return 0;
          DownstreamSession* self = Self(user_data);
          self->defences_.BeginHeaderBlock();
          if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
          self->timeouts_.OnStreamOpened();
          self->calls_.Open(frame->hd.stream_id);
          return 0;
        });
    nghttp2_session_callbacks_set_on_header_callback2(
        cbs, [](nghttp2_session* session, const nghttp2_frame* frame, nghttp2_rcbuf* name,
                nghttp2_rcbuf* value, uint8_t, void* user_data) {
          if (frame->hd.type != NGHTTP2_HEADERS) return 0;
          ConnectionDefences& defences = Self(user_data)->defences_;
          Call* call = CallOf(session, frame->hd.stream_id);
          if (ABSL_PREDICT_FALSE(!defences.AddHeader(nghttp2_rcbuf_get_buf(name).len,
                                                     nghttp2_rcbuf_get_buf(value).len))) {
            return defences.OnHeaderOverLimit(frame->hd.stream_id, call);
          }
          if (call != nullptr) call->OnRequestHeader(name, value);
          return 0;
        });
    nghttp2_session_callbacks_set_on_frame_recv_callback(
        cbs, [](nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
          return Self(user_data)->OnFrame(*frame);
        });
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        cbs, [](nghttp2_session* session, uint8_t, int32_t stream_id, const uint8_t* data,
                size_t len, void* user_data) {
          Call* call = CallOf(session, stream_id);
          if (call == nullptr) {
            // The call let go (a reset is on its way): nobody holds these bytes.
            nghttp2_session_consume(session, stream_id, len);
            return 0;
          }
          call->request_window_held += len;  // until forwarded (ConsumeRequestData) or it goes
          call->stall_watch.OnProgress();
          ConnectionDefences& defences = Self(user_data)->defences_;
          if (ABSL_PREDICT_FALSE(!defences.MessageSizeOk(*call, data, len))) {
            nghttp2_session_consume_stream(session, stream_id, len);  // the call never takes them
            defences.RejectOversizeMessage(*call);
            return 0;
          }
          call->OnRequestData(data, len);
          return 0;
        });
    nghttp2_session_callbacks_set_on_stream_close_callback(
        cbs, [](nghttp2_session* session, int32_t stream_id, uint32_t error_code, void* user_data) {
          if (Call* call = CallOf(session, stream_id)) {
            Self(user_data)->calls_.End(*call, error_code);
          }
          return 0;
        });
    nghttp2_session_callbacks_set_on_frame_send_callback(
        cbs, [](nghttp2_session* session, const nghttp2_frame* frame, void* user_data) {
          DownstreamSession* self = Self(user_data);
          if (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) {
            self->defences_.OnResponseFrameSent();
            if (frame->hd.type == NGHTTP2_DATA) {
              if (Call* call = CallOf(session, frame->hd.stream_id)) call->stall_watch.OnProgress();
            }
            return 0;
          }
          // nghttp2 answers a connection error (a broken frame, a bad header block, a
          // flow-control violation) with a GOAWAY carrying the error code, then winds the
          // connection down.
          if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR &&
              !self->refused_ && !self->defences_.abusive() && !self->timed_out_) {
            self->context().counters.downstream_protocol_errors.fetch_add(
                1, std::memory_order_relaxed);
            SPDLOG_DEBUG("client {}: closing: HTTP/2 connection error {}: {}", self->peer_,
                         nghttp2_http2_strerror(frame->goaway.error_code), self->last_error_);
          }
          return 0;
        });
    nghttp2_session_callbacks_set_error_callback2(
        cbs, [](nghttp2_session*, int, const char* msg, size_t len, void* user_data) {
          Self(user_data)->last_error_.assign(msg, len);
          return 0;
        });
    return cbs;
  }();
  return callbacks;
}

int DownstreamSession::OnFrame(const nghttp2_frame& frame) {
  const int32_t stream_id = frame.hd.stream_id;
  const bool end_stream = (frame.hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (frame.hd.type) {
    case NGHTTP2_HEADERS: {
      const bool request = frame.headers.cat == NGHTTP2_HCAT_REQUEST;
      if (defences_.EndHeaderBlock(stream_id, request)) break;  // over a limit: answered
      Call* call = CallOf(session_, stream_id);
      if (call == nullptr) break;
      if (request) call->OnRequestHeadersEnd();
      // OnRequestHeadersEnd may have answered and the app reset since: look the call up again.
      call = CallOf(session_, stream_id);
      if (call != nullptr && end_stream) call->OnRequestEnd();
      break;
    }
    case NGHTTP2_DATA:
      if (!end_stream) {
        // A DATA frame with nothing in it (padding aside) that does not end the stream.
        if (frame.hd.length == frame.data.padlen && !defences_.Spend(AbuseReason::kEmptyFrames)) {
          return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        break;
      }
      if (Call* call = CallOf(session_, stream_id)) call->OnRequestEnd();
      break;
    case NGHTTP2_PING:
      if (!(frame.hd.flags & NGHTTP2_FLAG_ACK)) {
        // A PING after qpoold sent HEADERS or DATA is free (gRPC's BDP probes); keepalives and
        // anything faster spend the budget.
        return defences_.OnPing() ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
      }
      if (draining_ && !final_goaway_sent_ &&
          std::equal(std::begin(kDrainPingPayload), std::end(kDrainPingPayload),
                     frame.ping.opaque_data)) {
        final_goaway_sent_ = true;
        nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                              nullptr, 0);
        ScheduleFlush();
      }
      break;
    case NGHTTP2_SETTINGS:
      if (frame.hd.flags & NGHTTP2_FLAG_ACK) break;
      timeouts_.OnHandshakeDone();  // nghttp2 checked the preface before this frame
      return defences_.Spend(AbuseReason::kSettingsFlood) ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
    case NGHTTP2_RST_STREAM:
      return defences_.Spend(AbuseReason::kRapidReset) ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
    default:
      break;
  }
  return 0;
}

}  // namespace qpool::server
