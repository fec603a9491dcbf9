#include "daemon/server/upstream_connection.h"

#include <boost/asio/post.hpp>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/server/node_probes.h"
#include "daemon/server/small_alloc.h"
#include "daemon/tls/client_tls.h"
#include "spdlog/spdlog.h"

namespace qpool::server {

using boost::asio::ip::tcp;

namespace {

UpstreamConnection* Self(void* user_data) { return static_cast<UpstreamConnection*>(user_data); }

}  // namespace

UpstreamConnection::UpstreamConnection(ConnectionContext& context, const config::NodeAddress& node,
                                       size_t node_index, pool::PoolConnectionEvents& events)
    : H2Transport(context, tcp::socket(context.io)),
      node_(node),
      node_name_(node.ToString()),
      node_index_(node_index),
      events_(&events),
      connector_(context.io),
      keepalive_(context.loop, context.probes, node_index, context.metrics,
                 {/*send_ping=*/
                  [this] {
                    if (nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, nullptr) != 0) {
                      return false;
                    }
                    ScheduleFlush();
                    return true;
                  },
                  /*close=*/
                  [this](const absl::Status& why) {
                    SPDLOG_WARN("upstream {}: {}", node_name_, std::string(why.message()));
                    CloseTransport(why);
                  }}) {}

UpstreamConnection::~UpstreamConnection() = default;

void UpstreamConnection::Connect() {
  connector_.Start(
      node_, node_index_, socket_, context().config->upstream.connect_timeout, context().host,
      shared_from_this(),
      {/*connected=*/
       [this](std::unique_ptr<tls::TlsEngine> engine) {
         if (engine != nullptr) {
           StartTls(std::move(engine));  // then OnTlsHandshakeDone
         } else {
           StartHttp2();
         }
       },
       // CloseTransport reports through OnTransportClosed, which sees the handshake unfinished.
       /*failed=*/[this](const absl::Status& reason) { CloseTransport(reason); }});
}

void UpstreamConnection::OnTlsHandshakeDone() {
  metrics::NodeMetrics& m = context().metrics.node(node_index_);
  m.tls_handshakes.Add();
  if (tls()->resumed()) m.tls_resumptions.Add();
  if (!context().host.TlsContextOf(node_index_)->verify()) m.tls_unverified_connects.Add();
  SPDLOG_DEBUG("upstream {}: TLS up ({})", node_name_, tls()->PeerSummary());
  StartHttp2();
}

void UpstreamConnection::StartHttp2() {
  http2_started_ = true;
  nghttp2_option* option = NewSessionOption();
  // The app's request was validated on the way in (the downstream session checks HTTP messaging);
  // what Qdrant answers is passed on as it is, so checking each response header again buys nothing.
  nghttp2_option_set_no_http_messaging(option, 1);
  nghttp2_session_client_new3(&session_, Callbacks(), this, option, Nghttp2SmallAlloc());
  nghttp2_option_del(option);
  const config::Config& config = *context().config;
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, config.server.stream_window},
      {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},  // see DownstreamSession
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, 3);
  OpenConnectionWindow(kUnboundedConnectionWindow);
  StartReading();
  Flush();
}

int32_t UpstreamConnection::SubmitRequest(Attempt& stream, const nghttp2_nv* nva, size_t nvlen,
                                          bool has_body) {
  if (closed() || draining_) return NGHTTP2_ERR_INVALID_STATE;
  nghttp2_data_provider provider{};
  provider.read_callback = [](nghttp2_session* session, int32_t stream_id, uint8_t* buf,
                              size_t length, uint32_t* data_flags, nghttp2_data_source*,
                              void*) -> ssize_t {
    Attempt* attempt = AttemptOf(session, stream_id);
    if (attempt == nullptr) return NGHTTP2_ERR_DEFERRED;  // being reset
    return attempt->ReadRequestBody(buf, length, data_flags);
  };
  const int32_t stream_id = nghttp2_submit_request(session_, nullptr, nva, nvlen,
                                                   has_body ? &provider : nullptr, &stream);
  if (stream_id > 0) streams_.push_back(stream);
  return stream_id;
}

int32_t UpstreamConnection::SubmitProbe(ProbeStream& probe, const nghttp2_nv* nva, size_t nvlen) {
  if (closed() || draining_) return NGHTTP2_ERR_INVALID_STATE;
  const int32_t stream_id = probes_.Submit(session_, probe, nva, nvlen);
  if (stream_id > 0) ScheduleFlush();
  return stream_id;
}

void UpstreamConnection::ResetProbe(int32_t stream_id) {
  if (probes_.Take(stream_id) == nullptr || closed()) return;
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
  ScheduleFlush();
}

void UpstreamConnection::ResetStream(int32_t stream_id, uint32_t h2_error_code) {
  Attempt* stream = AttemptOf(session_, stream_id);
  if (stream != nullptr) stream->hook.unlink();
  if (closed()) return;
  nghttp2_session_set_stream_user_data(session_, stream_id, nullptr);
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, h2_error_code);
  ScheduleFlush();
}

void UpstreamConnection::ResumeRequestData(int32_t stream_id) {
  if (closed()) return;
  nghttp2_session_resume_data(session_, stream_id);
  ScheduleFlush();
}

void UpstreamConnection::ConsumeResponseData(int32_t stream_id, size_t n) {
  if (closed()) return;
  nghttp2_session_consume_stream(session_, stream_id, n);
  ScheduleFlush();
}

void UpstreamConnection::Drain() {
  if (draining_ || closed()) return;
  draining_ = true;
  if (!handshake_done_) {
    Abort();
    return;
  }
  // The pool sends no new stream here from now on; the GOAWAY waits for the last stream to end
  // (CheckDrained). A client's GOAWAY only refuses server push, so sending it early gains nothing,
  // and h2-based servers (Qdrant's tonic/hyper) before hyperium/h2#886 reset every open stream
  // when a client sends GOAWAY(last_stream_id 0): the calls a drain means to let finish.
  CheckDrained();
}

void UpstreamConnection::Abort() { CloseTransport(absl::CancelledError("closed by qpoold")); }

void UpstreamConnection::CheckDrained() {
  // Streams reset by their calls may still be open in nghttp2; nobody waits for them.
  if (!draining_ || !streams_.empty() || !probes_.empty() || close_posted_ || closed()) return;
  close_posted_ = true;
  // Close on a later turn: this may run inside an nghttp2 callback. GOAWAY, then close.
  boost::asio::post(context().io, [self = shared_from_this(), this] {
    if (closed()) return;
    nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, nullptr, 0);
    Flush();
    CloseTransport(absl::OkStatus());
  });
}

void UpstreamConnection::OnTransportClosed(const absl::Status& reason) {
  connector_.Cancel();
  keepalive_.Stop();
  // Probes riding here fail; each may release its probe object.
  probes_.FailAll();
  // Calls still riding here lose their upstream stream.
  while (!streams_.empty()) {
    Attempt& stream = streams_.front();
    streams_.pop_front();
    stream.OnClosed(NGHTTP2_INTERNAL_ERROR, /*connection_lost=*/true);
  }
  pool::PoolConnectionEvents* events = events_;
  events_ = nullptr;
  if (events == nullptr) return;
  if (!handshake_done_) {
    absl::Status failure = reason;
    if (secure() && http2_started_ && !reason.ok() && !tls::FailureReasonOf(reason)) {
      // In TLS 1.3 the client's side of the handshake ends before the node has checked the
      // client's certificate; a node that refuses it (or wants one) may just close, as gRPC's
      // servers do, instead of sending an alert.
      failure = tls::WithFailureReason(
          absl::UnavailableError(absl::StrCat(
              reason.message(),
              " right after the TLS handshake, before HTTP/2 began: the node most likely refused "
              "the client certificate, or wants one (upstream.tls.cert_file and key_file)")),
          tls::FailureReason::kClientCert);
    }
    // The pool logs connect failures, rate-limited (NodePool::OnConnectFailed).
    SPDLOG_DEBUG("upstream {}: connect failed: {}", node_name_, std::string(failure.message()));
    events->OnConnectFailed(this, failure);
  } else {
    if (!reason.ok() && !absl::IsCancelled(reason)) {
      SPDLOG_INFO("upstream {}: connection closed: {}", node_name_, std::string(reason.message()));
    }
    events->OnClosed(this, reason);
  }
}

// --- nghttp2 callbacks -------------------------------------------------------------------------

void UpstreamConnection::OnFrame(const nghttp2_frame& frame) {
  keepalive_.OnFrame();
  switch (frame.hd.type) {
    case NGHTTP2_PING:
      if (frame.hd.flags & NGHTTP2_FLAG_ACK) keepalive_.OnPingAck();
      break;
    case NGHTTP2_SETTINGS: {
      if (frame.hd.flags & NGHTTP2_FLAG_ACK) break;
      const uint32_t max_streams =
          nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
      if (!handshake_done_) {
        handshake_done_ = true;
        connector_.Finished();
        SPDLOG_DEBUG("upstream {}: connected (peer max streams {})", node_name_, max_streams);
        keepalive_.Start();
        if (events_ != nullptr) events_->OnConnected(this, max_streams);
      } else if (events_ != nullptr) {
        events_->OnPeerMaxStreams(this, max_streams);
      }
      break;
    }
    case NGHTTP2_GOAWAY:
      SPDLOG_INFO("upstream {}: GOAWAY (last stream {}, error {})", node_name_,
                  frame.goaway.last_stream_id, frame.goaway.error_code);
      if (frame.goaway.error_code == NGHTTP2_ENHANCE_YOUR_CALM &&
          std::string_view(reinterpret_cast<const char*>(frame.goaway.opaque_data),
                           frame.goaway.opaque_data_len)
                  .find("too_many_pings") != std::string_view::npos) {
        context().probes.BackOffPings(node_index_);
      }
      draining_ = true;
      if (events_ != nullptr) events_->OnGoAway(this);
      CheckDrained();
      break;
    case NGHTTP2_HEADERS: {
      Attempt* stream = AttemptOf(session_, frame.hd.stream_id);
      if (stream == nullptr) break;
      const bool end_stream = frame.hd.flags & NGHTTP2_FLAG_END_STREAM;
      if (frame.headers.cat == NGHTTP2_HCAT_RESPONSE) {
        stream->OnResponseHeadersEnd(end_stream);
      } else if (frame.headers.cat == NGHTTP2_HCAT_HEADERS && end_stream) {
        stream->OnResponseTrailersEnd();
      }
      break;
    }
    case NGHTTP2_DATA: {
      if (!(frame.hd.flags & NGHTTP2_FLAG_END_STREAM)) break;
      Attempt* stream = AttemptOf(session_, frame.hd.stream_id);
      if (stream != nullptr) stream->OnResponseEnd();
      break;
    }
    default:
      break;
  }
}

void UpstreamConnection::OnStreamClose(int32_t stream_id, uint32_t error_code) {
  if (stream_id == not_sent_stream_) {
    not_sent_stream_ = 0;
    if (error_code == NGHTTP2_REFUSED_STREAM) error_code = kRequestNotSent;
  }
  Attempt* stream = AttemptOf(session_, stream_id);
  if (stream != nullptr) {
    stream->hook.unlink();
    nghttp2_session_set_stream_user_data(session_, stream_id, nullptr);
    stream->OnClosed(error_code, /*connection_lost=*/false);
  } else if (ProbeStream* probe = probes_.Take(stream_id)) {
    probe->OnProbeClosed(error_code, /*connection_lost=*/false);
  }
  if (events_ != nullptr) events_->OnStreamClosed(this);
  CheckDrained();
}

nghttp2_session_callbacks* UpstreamConnection::Callbacks() {
  static nghttp2_session_callbacks* callbacks = [] {
    nghttp2_session_callbacks* cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback2(
        cbs, [](nghttp2_session* session, const nghttp2_frame* frame, nghttp2_rcbuf* name,
                nghttp2_rcbuf* value, uint8_t, void* user_data) {
          if (frame->hd.type != NGHTTP2_HEADERS) return 0;
          if (Attempt* stream = AttemptOf(session, frame->hd.stream_id)) {
            stream->OnResponseHeader(frame->headers.cat == NGHTTP2_HCAT_HEADERS, name, value);
          } else if (ProbeStream* probe = Self(user_data)->probes_.Of(frame->hd.stream_id)) {
            probe->OnProbeHeader(HeaderRefs::View(name), HeaderRefs::View(value));
          }
          return 0;
        });
    nghttp2_session_callbacks_set_on_frame_recv_callback(
        cbs, [](nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
          Self(user_data)->OnFrame(*frame);
          return 0;
        });
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        cbs, [](nghttp2_session* session, uint8_t, int32_t stream_id, const uint8_t* data,
                size_t len, void* user_data) {
          if (auto* stream = static_cast<Attempt*>(TakeDataChunk(session, stream_id, len))) {
            stream->OnResponseData(data, len);
          } else if (ProbeStream* probe = Self(user_data)->probes_.Of(stream_id)) {
            probe->OnProbeData(data, len);
          }
          return 0;
        });
    nghttp2_session_callbacks_set_on_stream_close_callback(
        cbs, [](nghttp2_session*, int32_t stream_id, uint32_t error_code, void* user_data) {
          Self(user_data)->OnStreamClose(stream_id, error_code);
          return 0;
        });
    // nghttp2 closes the stream of a request it would not send next, as REFUSED_STREAM. When the
    // request itself cannot be sent (a header block over nghttp2's limit), that close is reported
    // as kRequestNotSent (OnStreamClose). When the session no longer starts streams (a GOAWAY
    // came in after the request was submitted, before it left), the REFUSED_STREAM stays: the
    // request never reached the node, and goes again on another connection (a transparent retry).
    nghttp2_session_callbacks_set_on_frame_not_send_callback(
        cbs, [](nghttp2_session*, const nghttp2_frame* frame, int lib_error_code, void* user_data) {
          if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
            return 0;
          }
          UpstreamConnection* self = Self(user_data);
          if (lib_error_code == NGHTTP2_ERR_START_STREAM_NOT_ALLOWED) {
            SPDLOG_DEBUG(
                "upstream {}: request on stream {} not sent (GOAWAY): sent again elsewhere",
                self->node_name_, frame->hd.stream_id);
            return 0;
          }
          self->not_sent_stream_ = frame->hd.stream_id;
          SPDLOG_WARN("upstream {}: request on stream {} not sent: {}", self->node_name_,
                      frame->hd.stream_id, nghttp2_strerror(lib_error_code));
          return 0;
        });
    return cbs;
  }();
  return callbacks;
}

}  // namespace qpool::server
