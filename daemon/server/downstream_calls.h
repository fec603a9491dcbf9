// The calls of one app connection (DownstreamSession), and the app connection as they see it
// (CallDownstream, call.h): each call's answer submitted on the connection's nghttp2 session
// (response HEADERS, the body through the call's data source, trailers, resets), the request's
// flow control (the stream's window, and the connection's that the call's unforwarded request
// bytes hold), and what the calls share (the pool share account; the unread response bytes,
// which ConnectionDefences bounds).
//
//   DownstreamCalls calls(transport, defences, peer);
//   calls.Open(stream_id);               // request HEADERS begin: a new call, the stream's user
//   data calls.End(*CallOf(session, id), error_code);   // its stream closed calls.EndAll(); // the
//   connection closed
//
// Ownership: it owns its calls, from Open() to End() (or EndAll()); nghttp2's stream user data
// points at them too (CallOf).
// Thread-safety: none; it belongs to one connection, on one worker's thread.
#ifndef QPOOL_DAEMON_SERVER_DOWNSTREAM_CALLS_H_
#define QPOOL_DAEMON_SERVER_DOWNSTREAM_CALLS_H_

#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "daemon/pool/node_pool.h"
#include "daemon/server/call.h"
#include "daemon/server/connection_defences.h"
#include "daemon/server/h2_transport.h"

namespace qpool::server {

// `final`: the connection's own uses of these methods are direct calls.
class DownstreamCalls final : public CallDownstream {
 public:
  // `transport` (the connection: its nghttp2 session, its flush, its worker's CallContext),
  // `defences` (the response bytes' bound) and `peer` (the app's address) must outlive it.
  DownstreamCalls(H2Transport& transport, ConnectionDefences& defences, const std::string& peer)
      : transport_(transport), defences_(defences), peer_(peer) {}
  // Deletes the calls left (none once EndAll() ran, or when the session never started).
  ~DownstreamCalls();

  DownstreamCalls(const DownstreamCalls&) = delete;
  DownstreamCalls& operator=(const DownstreamCalls&) = delete;

  // Request HEADERS begin on stream `stream_id`: its call, nghttp2's stream user data.
  void Open(int32_t stream_id);
  // Takes `call` out (the list, its stream's user data), gives the connection's window the request
  // bytes it never forwarded (the stream's closes with it), ends it
  // (Call::OnDownstreamClosed(`h2_error_code`)) and deletes it.
  void End(Call& call, uint32_t h2_error_code);
  // The connection closed and nghttp2 will not report the streams' ends any more: ends (CANCEL)
  // and deletes every call.
  void EndAll();
  bool empty() const { return calls_.empty(); }
  DownstreamCallList& list() { return calls_; }

  // CallDownstream (call.h says what each does). ------------------------------------------------
  int SubmitResponse(Call& call, const nghttp2_nv* nva, size_t nvlen, bool has_body) override;
  int SubmitTrailers(Call& call, const nghttp2_nv* nva, size_t nvlen) override;
  // Also tells the defences that the response bytes grew; past server.connection_buffer_limit,
  // their buffer check runs on a turn of the loop of its own (the connection kept alive till then).
  void ResumeResponseData(Call& call) override;
  void ResetStream(Call& call, uint32_t h2_error_code) override;
  // Also gives the connection's window back (the app may send that much more on it too).
  void ConsumeRequestData(Call& call, size_t n) override;
  int64_t* response_bytes_held() override { return defences_.response_bytes_held(); }
  pool::ShareAccount& share_account() override { return share_account_; }
  const std::string& peer() const override { return peer_; }

 private:
  H2Transport& transport_;
  ConnectionDefences& defences_;
  const std::string& peer_;
  pool::ShareAccount share_account_;  // outlives the calls: they go in the destructor's body
  // Created on request HEADERS, deleted when their stream closes (or the connection does).
  DownstreamCallList calls_;
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_DOWNSTREAM_CALLS_H_
