// One upstream try of a gRPC call: its place in a node pool's queue, then its stream on a pooled
// Qdrant connection. It opens the stream (the request's headers as received, grpc-timeout lowered
// by the time spent in qpoold, qpoold's API key), feeds it the request (UpstreamRequest, or a
// hedge's own copy), and turns what the stream reports into what the call's
// retry::AttemptController understands: sent, not started, answered (grpc-status), ended without
// an answer (a reset, a refused stream, a lost connection: retry::Failure). It passes the answer
// on (AnswerSink) when it is the primary attempt and the controller says so (the commit point);
// a hedge's events go nowhere until it wins.
//
// What it asks of its call goes through AttemptOwner (implemented by CallUpstream): its reports,
// in the controller's terms, and the controller's verdicts on them. It also works with the
// call's request and its answer (AttemptShared, given at construction); a unit test builds one
// with a fake owner and a fake answer (tests/unit/attempt_test.cc).
//
//   AttemptShared shared{owner, context, request, answer, deadline, read, &account, nullptr};
//   Attempt attempt(shared, /*slot=*/0);
//   attempt.Acquire(pool, node);          // -> owner.OnAttemptSent or OnAttemptNotStarted
//   attempt.OnResponseHeadersEnd(false);  // -> owner.OnAttemptHeaders: forwarded to the answer?
//   attempt.OnClosed(code, lost);         // -> owner.OnAttemptEnded (or OnAttemptFinished)
//
// Two per call, held by value in CallUpstream's slots 0 and 1, reused from one try to the next.
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
#include <optional>

#include "absl/status/status.h"
#include "daemon/auth/api_keys.h"
#include "daemon/common/event_loop.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/pool/node_pool.h"
#include "daemon/retry/attempt_controller.h"
#include "daemon/server/call_answer.h"
#include "daemon/server/call_context.h"
#include "daemon/server/header_block.h"
#include "daemon/server/upstream_request.h"

namespace qpool::server {

class UpstreamConnection;

// What an attempt asks of its call: it reports what its stream did, in the terms of
// retry::AttemptController (same names there), and gets the controller's verdicts back.
// CallUpstream implements it by passing each on to its controller; a test passes a fake.
class AttemptOwner {
 public:
  // `slot`'s request headers went out to `node` at `now`.
  virtual void OnAttemptSent(int slot, int node, MonoTime now) = 0;
  // `slot` got no stream on `node`: `status` from the pool, or the stream could not be opened.
  virtual void OnAttemptNotStarted(int slot, int node, const absl::Status& status,
                                   bool node_unreachable) = 0;
  // `slot`'s response headers ended (`whole_answer`: trailers-only, `outcome` its status).
  // kForward: they are the call's answer (the attempt passes them on).
  virtual retry::HeadersVerdict OnAttemptHeaders(int slot, const retry::AttemptOutcome& outcome,
                                                 bool whole_answer, bool request_sent) = 0;
  // `slot`'s stream ended before the answer was complete. kPassOnClose: the attempt passes the
  // upstream's reset on to the app.
  virtual retry::EndVerdict OnAttemptEnded(int slot, const retry::AttemptOutcome& outcome,
                                           const absl::Status& final_status) = 0;
  // `slot`'s stream ended after the call's answer was settled.
  virtual void OnAttemptFinished(int slot) = 0;
  // `slot`'s answer is the call's (the controller's primary).
  virtual bool IsPrimary(int slot) const = 0;

 protected:
  ~AttemptOwner() = default;  // not owned through this interface
};

// What a call's attempts share, kept by their CallUpstream (one per call, so an attempt holds one
// reference): whom they report to, the worker's context, the request they send, where the
// primary's answer goes, and what every stream opens with.
struct AttemptShared {
  AttemptOwner& owner;
  CallContext& context;
  UpstreamRequest& request;
  AnswerSink& answer;
  std::optional<MonoTime> deadline;       // the caller's: grpc-timeout is lowered to what is left
  bool read = false;                      // a read: qpoold's read-only API key, when set, goes
  pool::ShareAccount* account = nullptr;  // the app connection's share of the pools
  // qpoold's API keys as the call's first attempt found them (null: none, or not opened yet).
  std::shared_ptr<const auth::ApiKeys> keys;
};

// Links a call into its session's list, and an attempt into its connection's; a link removes
// itself when its owner is destroyed.
using CallHook =
    boost::intrusive::list_member_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>>;

class Attempt : public pool::StreamWaiter {
 public:
  // `shared` (and what it refers to) must outlive the attempt.
  Attempt(AttemptShared& shared, int slot) : slot(slot), shared_(shared) {}
  Attempt(const Attempt&) = delete;
  Attempt& operator=(const Attempt&) = delete;

  // From its owner (the controller's StartAttempt): asks `pool` (node `node`) for a stream;
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

  // From its owner. ------------------------------------------------------------------------
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
  // Opens the stream on `conn` (a slot there is reserved for it).
  void Open(UpstreamConnection& conn);
  // No stream for this try (on `at_node`): forgets it and tells the controller.
  void NotStarted(int at_node, const absl::Status& status, bool node_unreachable);
  // Forgets the stream (closed already, or just reset) and the pool it came from.
  void Detach();
  // Metrics: the attempt's time on its stream (docs/metrics.md), once.
  void EndMetrics(MonoTime now);

  AttemptShared& shared_;
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
