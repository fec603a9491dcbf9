// An in-process HTTP/1.1 server for the REST tests: Boost.Beast on 127.0.0.1:0, one thread, keep-
// alive. It plays a Qdrant REST node that records what reached it:
//
//   any method, any target    200; the body is the request body; headers x-seen-<name> carry the
//                             request's host, api-key, content-type, content-encoding,
//                             connection, keep-alive, te, transfer-encoding, upgrade, x-hop,
//                             expect; x-seen-method and x-seen-target the request line
//   GET /chunked?size=N       200, N bytes ('a'..'z' repeating), chunked
//   GET /slow?ms=N            200 after N ms
//   GET /status/N             status N, Qdrant's error shape
//
//   auto upstream = RestTestUpstream::Start();
//   (*upstream)->CloseNextReusedRequests(1);   // the next request on a reused connection: closed
//   (*upstream)->max_open_connections();       // most connections open at once so far
//
// Thread-safety: the counters and knobs are thread-safe.
#ifndef QPOOL_TESTS_SUPPORT_REST_TEST_UPSTREAM_H_
#define QPOOL_TESTS_SUPPORT_REST_TEST_UPSTREAM_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace qpool::testing {

class RestTestUpstream {
 public:
  static absl::StatusOr<std::unique_ptr<RestTestUpstream>> Start();
  ~RestTestUpstream();

  uint16_t port() const;
  // Closes every connection and stops the thread. Idempotent.
  void Stop();

  // The next `n` requests that arrive on a connection that answered one before are not answered:
  // the connection closes as soon as their headers are read (a keep-alive close racing a request).
  void CloseNextReusedRequests(int n);

  // The next `n` requests are answered `status` in Qdrant's error shape (with `Retry-After:
  // retry_after_seconds` when that is not negative), whatever they asked for.
  void FailNextRequests(int n, int status, int retry_after_seconds = -1);

  int64_t connections_accepted() const;
  int64_t open_connections() const;
  int64_t max_open_connections() const;
  int64_t requests() const;           // requests answered
  int64_t closed_unanswered() const;  // requests dropped by CloseNextReusedRequests
  int64_t bytes_received() const;     // request body bytes answered
  int64_t failed_on_purpose() const;  // requests answered by FailNextRequests

  class Impl;

 private:
  explicit RestTestUpstream(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace qpool::testing

#endif  // QPOOL_TESTS_SUPPORT_REST_TEST_UPSTREAM_H_
