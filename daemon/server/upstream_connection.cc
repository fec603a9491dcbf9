#include "daemon/server/upstream_connection.h"

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/post.hpp>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/server/call_upstream.h"
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
      resolver_(context.io),
      connect_timer_(context.io),
      ping_timer_(context.io) {}

UpstreamConnection::~UpstreamConnection() = default;

void UpstreamConnection::Connect() {
  const config::UpstreamConfig& options = context().config->upstream;
  connect_timer_.expires_after(absl::ToChronoNanoseconds(options.connect_timeout));
  auto self = std::static_pointer_cast<UpstreamConnection>(shared_from_this());
  connect_timer_.async_wait([self](const boost::system::error_code& ec) {
    if (!ec) self->OnConnectTimeout();
  });
  resolver_.async_resolve(
      node_.host, std::to_string(node_.port),
      [self](const boost::system::error_code& ec, tcp::resolver::results_type results) {
        if (self->events_ == nullptr) return;
        if (ec) {
          self->FailConnect(
              tls::WithConnectFailure(absl::UnavailableError(absl::StrCat(
                                          "resolve ", self->node_.host, ": ", ec.message())),
                                      tls::ConnectFailure::kConnect));
          return;
        }
        boost::asio::async_connect(self->socket_, results,
                                   [self](const boost::system::error_code& ec,
                                          const tcp::endpoint&) { self->OnTcpConnected(ec); });
      });
}

void UpstreamConnection::OnTcpConnected(const boost::system::error_code& ec) {
  if (events_ == nullptr || closed()) return;
  if (ec) {
    FailConnect(
        tls::WithConnectFailure(absl::UnavailableError(absl::StrCat("connect: ", ec.message())),
                                tls::ConnectFailure::kConnect));
    return;
  }
  if (std::shared_ptr<const tls::ClientContext> tls_context =
          context().host.TlsContextOf(node_index_)) {
    absl::StatusOr<std::unique_ptr<tls::TlsEngine>> engine = tls_context->NewEngine();
    if (!engine.ok()) {
      FailConnect(tls::WithFailureReason(absl::UnavailableError(engine.status().message()),
                                         tls::FailureReason::kHandshake));
      return;
    }
    StartTls(*std::move(engine));
    return;
  }
  StartHttp2();
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

void UpstreamConnection::OnConnectTimeout() {
  if (handshake_done_ || events_ == nullptr) return;
  FailConnect(
      tls::WithConnectFailure(absl::UnavailableError(absl::StrCat(
                                  "connect timed out after ",
                                  absl::FormatDuration(context().config->upstream.connect_timeout),
                                  " (upstream.connect_timeout)")),
                              tls::ConnectFailure::kTimeout));
}

void UpstreamConnection::FailConnect(const absl::Status& reason) {
  // CloseTransport reports through OnTransportClosed, which sees the handshake unfinished.
  if (closed()) return;
  CloseTransport(reason);
}

int32_t UpstreamConnection::SubmitRequest(Attempt& stream, const nghttp2_nv* nva, size_t nvlen,
                                          bool has_body) {
  if (closed() || draining_) return NGHTTP2_ERR_INVALID_STATE;
  nghttp2_data_provider provider{};
  provider.read_callback = &UpstreamConnection::ReadRequestCallback;
  const int32_t stream_id = nghttp2_submit_request(session_, nullptr, nva, nvlen,
                                                   has_body ? &provider : nullptr, &stream);
  if (stream_id > 0) streams_.push_back(stream);
  return stream_id;
}

int32_t UpstreamConnection::SubmitProbe(ProbeStream& probe, const nghttp2_nv* nva, size_t nvlen) {
  if (closed() || draining_) return NGHTTP2_ERR_INVALID_STATE;
  nghttp2_data_provider provider{};
  provider.source.ptr = &probe;
  provider.read_callback = &UpstreamConnection::ReadProbeCallback;
  // No stream user data: the callbacks find no Call there and look the probe up by stream id.
  const int32_t stream_id =
      nghttp2_submit_request(session_, nullptr, nva, nvlen, &provider, nullptr);
  if (stream_id > 0) {
    probes_.emplace_back(stream_id, &probe);
    ScheduleFlush();
  }
  return stream_id;
}

void UpstreamConnection::ResetProbe(int32_t stream_id) {
  if (TakeProbe(stream_id) == nullptr || closed()) return;
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
  ScheduleFlush();
}

ProbeStream* UpstreamConnection::ProbeOf(int32_t stream_id) const {
  for (const auto& [id, probe] : probes_) {
    if (id == stream_id) return probe;
  }
  return nullptr;
}

ProbeStream* UpstreamConnection::TakeProbe(int32_t stream_id) {
  for (auto it = probes_.begin(); it != probes_.end(); ++it) {
    if (it->first == stream_id) {
      ProbeStream* probe = it->second;
      probes_.erase(it);
      return probe;
    }
  }
  return nullptr;
}

// --- Fast tier: PING on idle connections ---------------------------------------------------------

void UpstreamConnection::ArmPingTimer(Duration after) {
  frame_seen_ = false;
  ping_timer_.expires_after(after);
  std::weak_ptr<H2Transport> weak = weak_from_this();
  ping_timer_.async_wait([weak](const boost::system::error_code& ec) {
    if (ec) return;
    if (auto self = weak.lock()) static_cast<UpstreamConnection*>(self.get())->OnPingTimer();
  });
}

void UpstreamConnection::OnPingTimer() {
  if (closed()) return;
  ConnectionContext& c = context();
  if (ping_outstanding_) {
    ping_outstanding_ = false;
    c.metrics.node(node_index_).pings_failed.Add();
    const std::string why =
        absl::StrCat("no PING ack within ", absl::FormatDuration(c.config->health.fast_timeout),
                     " (health.fast_timeout): connection closed, the pool replaces it");
    SPDLOG_WARN("upstream {}: {}", node_name_, why);
    CloseTransport(absl::UnavailableError(why));
    return;
  }
  const Duration interval = c.probes.PingInterval(node_index_);
  if (frame_seen_) {
    ArmPingTimer(interval);  // not idle: look again one interval later
    return;
  }
  if (nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, nullptr) != 0) {
    ArmPingTimer(interval);
    return;
  }
  ping_outstanding_ = true;
  ping_sent_at_ = c.loop.Now();
  ScheduleFlush();
  ArmPingTimer(absl::ToChronoNanoseconds(c.config->health.fast_timeout));
}

void UpstreamConnection::OnPingAck() {
  if (!ping_outstanding_) return;  // not ours (nghttp2 acks the peer's PINGs itself)
  ping_outstanding_ = false;
  ConnectionContext& c = context();
  c.metrics.node(node_index_).pings_ok.Add();
  c.metrics.ObservePing(c.loop.Now() - ping_sent_at_);
  ArmPingTimer(c.probes.PingInterval(node_index_));
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
  connect_timer_.cancel();
  ping_timer_.cancel();
  resolver_.cancel();
  // Probes riding here fail; each may release its probe object, so take the list first.
  std::vector<std::pair<int32_t, ProbeStream*>> probes = std::move(probes_);
  probes_.clear();
  for (auto& [id, probe] : probes) probe->OnProbeClosed(NGHTTP2_INTERNAL_ERROR, true);
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
    if (tls_established() && !reason.ok() && !tls::FailureReasonOf(reason)) {
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

nghttp2_session_callbacks* UpstreamConnection::Callbacks() {
  static nghttp2_session_callbacks* callbacks = [] {
    nghttp2_session_callbacks* cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback2(cbs, &OnHeaderCallback);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &OnFrameRecvCallback);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &OnDataChunkRecvCallback);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &OnStreamCloseCallback);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, &OnFrameNotSendCallback);
    return cbs;
  }();
  return callbacks;
}

int UpstreamConnection::OnHeaderCallback(nghttp2_session* session, const nghttp2_frame* frame,
                                         nghttp2_rcbuf* name, nghttp2_rcbuf* value, uint8_t,
                                         void* user_data) {
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  Attempt* stream = AttemptOf(session, frame->hd.stream_id);
  if (stream == nullptr) {
    if (ProbeStream* probe = Self(user_data)->ProbeOf(frame->hd.stream_id)) {
      probe->OnProbeHeader(HeaderRefs::View(name), HeaderRefs::View(value));
    }
    return 0;
  }
  stream->OnResponseHeader(frame->headers.cat == NGHTTP2_HCAT_HEADERS, name, value);
  return 0;
}

int UpstreamConnection::OnFrameRecvCallback(nghttp2_session* session, const nghttp2_frame* frame,
                                            void* user_data) {
  UpstreamConnection* self = Self(user_data);
  self->frame_seen_ = true;
  switch (frame->hd.type) {
    case NGHTTP2_PING:
      if (frame->hd.flags & NGHTTP2_FLAG_ACK) self->OnPingAck();
      break;
    case NGHTTP2_SETTINGS: {
      if (frame->hd.flags & NGHTTP2_FLAG_ACK) break;
      const uint32_t max_streams =
          nghttp2_session_get_remote_settings(session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
      if (!self->handshake_done_) {
        self->handshake_done_ = true;
        self->connect_timer_.cancel();
        SPDLOG_DEBUG("upstream {}: connected (peer max streams {})", self->node_name_, max_streams);
        const Duration ping_interval = self->context().probes.PingInterval(self->node_index_);
        if (ping_interval > Duration::zero()) self->ArmPingTimer(ping_interval);
        if (self->events_ != nullptr) self->events_->OnConnected(self, max_streams);
      } else if (self->events_ != nullptr) {
        self->events_->OnPeerMaxStreams(self, max_streams);
      }
      break;
    }
    case NGHTTP2_GOAWAY:
      SPDLOG_INFO("upstream {}: GOAWAY (last stream {}, error {})", self->node_name_,
                  frame->goaway.last_stream_id, frame->goaway.error_code);
      if (frame->goaway.error_code == NGHTTP2_ENHANCE_YOUR_CALM &&
          std::string_view(reinterpret_cast<const char*>(frame->goaway.opaque_data),
                           frame->goaway.opaque_data_len)
                  .find("too_many_pings") != std::string_view::npos) {
        self->context().probes.BackOffPings(self->node_index_);
      }
      self->draining_ = true;
      if (self->events_ != nullptr) self->events_->OnGoAway(self);
      self->CheckDrained();
      break;
    case NGHTTP2_HEADERS: {
      Attempt* stream = AttemptOf(session, frame->hd.stream_id);
      if (stream == nullptr) break;
      const bool end_stream = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
      if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE) {
        stream->OnResponseHeadersEnd(end_stream);
      } else if (frame->headers.cat == NGHTTP2_HCAT_HEADERS && end_stream) {
        stream->OnResponseTrailersEnd();
      }
      break;
    }
    case NGHTTP2_DATA: {
      if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) break;
      Attempt* stream = AttemptOf(session, frame->hd.stream_id);
      if (stream != nullptr) stream->OnResponseEnd();
      break;
    }
    default:
      break;
  }
  return 0;
}

int UpstreamConnection::OnDataChunkRecvCallback(nghttp2_session* session, uint8_t,
                                                int32_t stream_id, const uint8_t* data, size_t len,
                                                void* user_data) {
  if (auto* stream = static_cast<Attempt*>(TakeDataChunk(session, stream_id, len))) {
    stream->OnResponseData(data, len);
  } else if (ProbeStream* probe = Self(user_data)->ProbeOf(stream_id)) {
    probe->OnProbeData(data, len);
  }
  return 0;
}

int UpstreamConnection::OnFrameNotSendCallback(nghttp2_session*, const nghttp2_frame* frame,
                                               int lib_error_code, void* user_data) {
  // nghttp2 closes the stream of a request it would not send next, as REFUSED_STREAM. When the
  // request itself cannot be sent (a header block over nghttp2's limit), that close is reported
  // as kRequestNotSent. When the session no longer starts streams (a GOAWAY came in after the
  // request was submitted, before it left), the REFUSED_STREAM stays: the request never reached
  // the node, and goes again on another connection (a transparent retry).
  if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    UpstreamConnection* self = Self(user_data);
    if (lib_error_code == NGHTTP2_ERR_START_STREAM_NOT_ALLOWED) {
      SPDLOG_DEBUG("upstream {}: request on stream {} not sent (GOAWAY): sent again elsewhere",
                   self->node_name_, frame->hd.stream_id);
      return 0;
    }
    self->not_sent_stream_ = frame->hd.stream_id;
    SPDLOG_WARN("upstream {}: request on stream {} not sent: {}", self->node_name_,
                frame->hd.stream_id, nghttp2_strerror(lib_error_code));
  }
  return 0;
}

int UpstreamConnection::OnStreamCloseCallback(nghttp2_session* session, int32_t stream_id,
                                              uint32_t error_code, void* user_data) {
  UpstreamConnection* self = Self(user_data);
  if (stream_id == self->not_sent_stream_) {
    self->not_sent_stream_ = 0;
    if (error_code == NGHTTP2_REFUSED_STREAM) error_code = kRequestNotSent;
  }
  Attempt* stream = AttemptOf(session, stream_id);
  if (stream != nullptr) {
    stream->hook.unlink();
    nghttp2_session_set_stream_user_data(session, stream_id, nullptr);
    stream->OnClosed(error_code, /*connection_lost=*/false);
  } else if (ProbeStream* probe = self->TakeProbe(stream_id)) {
    probe->OnProbeClosed(error_code, /*connection_lost=*/false);
  }
  if (self->events_ != nullptr) self->events_->OnStreamClosed(self);
  self->CheckDrained();
  return 0;
}

ssize_t UpstreamConnection::ReadRequestCallback(nghttp2_session* session, int32_t stream_id,
                                                uint8_t* buf, size_t length, uint32_t* data_flags,
                                                nghttp2_data_source*, void*) {
  Attempt* stream = AttemptOf(session, stream_id);
  if (stream == nullptr) return NGHTTP2_ERR_DEFERRED;  // being reset
  return stream->ReadRequestBody(buf, length, data_flags);
}

ssize_t UpstreamConnection::ReadProbeCallback(nghttp2_session*, int32_t, uint8_t* buf,
                                              size_t length, uint32_t* data_flags,
                                              nghttp2_data_source* source, void*) {
  auto* probe = static_cast<ProbeStream*>(source->ptr);
  const size_t n = std::min(length, probe->request_body.size() - probe->request_sent);
  std::memcpy(buf, probe->request_body.data() + probe->request_sent, n);
  probe->request_sent += n;
  if (probe->request_sent == probe->request_body.size()) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  return static_cast<ssize_t>(n);
}

}  // namespace qpool::server
