// The streams qpoold opens for itself on one upstream connection: the medium and deep health
// tiers' probes (HealthProbe), which ride a pooled connection like a call does but outside the Call
// machinery. A probe's stream has no nghttp2 user data (that slot is for a call's Attempt), so the
// connection finds a probe by its stream id here.
//
//   const int32_t id = probes_.Submit(session_, probe, nva, nvlen);   // the body sent whole
//   if (ProbeStream* probe = probes_.Of(stream_id)) probe->OnProbeData(data, len);
//   if (ProbeStream* probe = probes_.Take(stream_id)) probe->OnProbeClosed(code, false);
//   probes_.FailAll();   // the connection is lost
//
// It asks nothing of its connection: the connection passes its nghttp2 session in, checks that it
// may open streams, and flushes. Unit-tested on an nghttp2 session without a socket
// (tests/unit/probe_streams_test.cc).
// Thread-safety: none; it lives on its connection's worker thread.
#ifndef QPOOL_DAEMON_SERVER_PROBE_STREAMS_H_
#define QPOOL_DAEMON_SERVER_PROBE_STREAMS_H_

#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace qpool::server {

// A stream qpoold opens for itself (a health probe), not for an app's call. Its request body is
// `request_body`, sent whole. Exactly one OnProbeClosed ends it, unless the probe resets it
// first (UpstreamConnection::ResetProbe), after which nothing more is called.
class ProbeStream {
 public:
  virtual ~ProbeStream() = default;
  // Response headers and trailers alike.
  virtual void OnProbeHeader(std::string_view name, std::string_view value) = 0;
  virtual void OnProbeData(const uint8_t* data, size_t len) = 0;
  virtual void OnProbeClosed(uint32_t h2_error_code, bool connection_lost) = 0;

  std::string request_body;
  size_t request_sent = 0;
};

class ProbeStreams {
 public:
  // Opens a stream for `probe` on `session` with request headers `nva`, its body read from
  // `probe.request_body`. Returns the stream id (the probe is held from then on), or a negative
  // nghttp2 error. The caller flushes the session.
  int32_t Submit(nghttp2_session* session, ProbeStream& probe, const nghttp2_nv* nva, size_t nvlen);
  // The probe with a stream `stream_id` here, or null.
  ProbeStream* Of(int32_t stream_id) const;
  // Forgets the probe with a stream `stream_id` here and returns it; null when there is none.
  ProbeStream* Take(int32_t stream_id);
  // The connection is lost: each probe hears OnProbeClosed(INTERNAL_ERROR, connection_lost), and
  // is forgotten first (each may release its probe object).
  void FailAll();
  bool empty() const { return probes_.empty(); }

 private:
  // nghttp2's data source read callback for a probe's request body.
  static ssize_t ReadBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length,
                          uint32_t* data_flags, nghttp2_data_source* source, void*);

  std::vector<std::pair<int32_t, ProbeStream*>> probes_;  // by stream id; a handful at most
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_PROBE_STREAMS_H_
