// One upstream try of a gRPC call: its place in a node pool's queue, then its stream on a pooled
// Qdrant connection. It opens the stream (the request's headers as received, grpc-timeout lowered
// by the time spent in qpoold, qpoold's API key), feeds it the request (UpstreamRequest, or a
// hedge's own copy), and turns what the stream reports into what the call's
// retry::AttemptController understands: sent, not started, answered (grpc-status), ended without
// an answer (a reset, a refused stream, a lost connection: retry::Failure). It passes the answer
// on to the Call when it is the primary attempt and the controller says so (the commit point);
// a hedge's events go nowhere until it wins.
//
// An attempt is part of its CallUpstream (two per call, held by value in slots 0 and 1, reused
// from one try to the next); it reads the call's request and reports to its controller directly
// (friend of CallUpstream), while CallUpstream carries out the controller's decisions.
// UpstreamConnection delivers the stream's events (it is the stream's nghttp2 user data, and
// linked in the connection's list of open streams); the attempt lets go of both (Release,
// Detach) before it is reused or destroyed.
// Thread-safety: none; one call, one worker thread.
#ifndef QPOOL_DAEMON_SERVER_ATTEMPT_H_
#define QPOOL_DAEMON_SERVER_ATTEMPT_H_

#include <nghttp2/nghttp2.h>

#include <boost/intrusive/list.hpp>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "daemon/common/event_loop.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/pool/node_pool.h"
#include "daemon/server/header_block.h"

namespace qpool::server {

class CallUpstream;
class UpstreamConnection;

// Links a call into its session's list, and an attempt into its connection's; a link removes
// itself when its owner is destroyed.
using CallHook =
    boost::intrusive::list_member_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>>;

class Attempt : public pool::StreamWaiter {
 public:
  Attempt(CallUpstream& owner, int slot) : slot(slot), owner_(owner) {}
  Attempt(const Attempt&) = delete;
  Attempt& operator=(const Attempt&) = delete;

  // From CallUpstream (the controller's StartAttempt): asks `pool` (node `node`) for a stream;
  // the attempt opens it now or once the pool hands one over, or reports that it did not start.
  void Acquire(pool::NodePool& pool, int node);
  // From the pool.
  void OnStreamReady(pool::PoolConnection* conn) override;
  void OnAcquireFailed(const absl::Status& status) override;
  // From UpstreamConnection's nghttp2 callbacks. `name` and `value` belong to the upstream
  // session; the attempt keeps references until the header block is forwarded (trailers, which
  // wait for the body, are copied).
  void OnResponseHeader(bool trailers, nghttp2_rcbuf* name, nghttp2_rcbuf* value);
  void OnResponseHeadersEnd(bool end_stream);
  void OnResponseTrailersEnd();
  void OnResponseData(const uint8_t* data, size_t len);
  void OnResponseEnd();
  // The stream closed; `connection_lost` when its connection went away underneath it.
  void OnClosed(uint32_t h2_error_code, bool connection_lost);
  // The stream's request data source.
  ssize_t ReadRequestBody(uint8_t* buf, size_t length, uint32_t* data_flags);

  // From CallUpstream. ------------------------------------------------------------------------
  // The request has more for the stream (bytes, or its end): the primary's stream reads again.
  void ResumeRequest();
  // The app took `n` bytes of the answer: the stream may receive as many more.
  void ConsumeResponse(size_t n);
  // Lets go of the upstream side: resets the stream with `h2_error_code` if it is open, or leaves
  // the pool's queue if it still waits; then forgets both.
  void Release(uint32_t h2_error_code);

  const int slot;                            // its place in the call: 0 or 1
  int node = -1;                             // config order; set while queued or attached
  pool::NodePool* pool = nullptr;            // set while queued or attached
  UpstreamConnection* connection = nullptr;  // set while its stream is open
  std::shared_ptr<void> connection_ref;      // keeps the connection alive while attached
  int32_t id = -1;
  MonoTime started_at{};
  metrics::NodeMetrics* node_metrics = nullptr;  // set while attached
  // A hedge reads its own copy of the whole request (UpstreamRequest::CopyForHedge); a primary
  // reads the request's unsent bytes.
  bool reads_own_copy = false;
  HeaderRefs response_headers;  // references into the upstream session until forwarded
  CallHook hook;                // UpstreamConnection's list of streams open there

 private:
  bool attached() const { return connection != nullptr; }
  bool IsPrimary() const;
  // Opens the stream on `conn` (a slot there is reserved for it).
  void Open(UpstreamConnection& conn);
  // No stream for this try (on `at_node`): forgets it and tells the controller.
  void NotStarted(int at_node, const absl::Status& status, bool node_unreachable);
  // Forgets the stream (closed already, or just reset) and the pool it came from.
  void Detach();
  // Metrics: the attempt's time on its stream (docs/metrics.md), once.
  void EndMetrics(MonoTime now);

  CallUpstream& owner_;
};

// The attempt an upstream session's stream is: nghttp2's stream user data.
inline Attempt* AttemptOf(nghttp2_session* session, int32_t stream_id) {
  return static_cast<Attempt*>(nghttp2_session_get_stream_user_data(session, stream_id));
}

using AttemptList =
    boost::intrusive::list<Attempt,
                           boost::intrusive::member_hook<Attempt, CallHook, &Attempt::hook>,
                           boost::intrusive::constant_time_size<false>>;

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_ATTEMPT_H_
