// What a gRPC call asks of the app connection its stream is on (implemented by the connection's
// DownstreamCalls, downstream_calls.h): the answer's frames, the request's flow control, and the
// connection's shares. Every method names the call's own stream by its Call. A unit test passes a
// fake (tests/unit/call_test.cc). Thread-safety: none; the connection and its calls live on one
// worker's thread.
#ifndef QPOOL_DAEMON_SERVER_CALL_DOWNSTREAM_H_
#define QPOOL_DAEMON_SERVER_CALL_DOWNSTREAM_H_

#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "daemon/pool/node_pool.h"

namespace qpool::server {

class Call;

class CallDownstream {
 public:
  // Response HEADERS; with `has_body` the body and trailers follow from the call's data source
  // (Call::ReadResponseBody), otherwise the HEADERS frame ends the stream (trailers-only).
  virtual int SubmitResponse(Call& call, const nghttp2_nv* nva, size_t nvlen, bool has_body) = 0;
  // The answer's trailers; from inside the call's data source, at the end of the body.
  virtual int SubmitTrailers(Call& call, const nghttp2_nv* nva, size_t nvlen) = 0;
  // More of the answer is queued (or it is complete): the data source may be read again.
  virtual void ResumeResponseData(Call& call) = 0;
  // RST_STREAM(`h2_error_code`) to the app.
  virtual void ResetStream(Call& call, uint32_t h2_error_code) = 0;
  // The call passed `n` request bytes on: the app may send that much more.
  virtual void ConsumeRequestData(Call& call, size_t n) = 0;
  // The connection's unread response bytes, all its calls together (ByteQueue's `local` total).
  virtual int64_t* response_bytes_held() = 0;
  // What the connection's calls hold of the worker's pools (fair sharing, NodePool).
  virtual pool::ShareAccount& share_account() = 0;
  // The app's address, for the access log.
  virtual const std::string& peer() const = 0;

 protected:
  ~CallDownstream() = default;  // not owned through this interface
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_CALL_DOWNSTREAM_H_
