// A scripted HTTP/1.1 server for byte-exact REST tests: plain POSIX sockets on 127.0.0.1:0, one
// thread, one connection at a time, keep-alive. It records each request exactly as its bytes
// arrived (framing, chunk sizes and trailers included) and answers with the bytes a test scripts,
// piece by piece, so a test can make an answer arrive in parts at points it chooses.
//
//   auto upstream = RawHttpUpstream::Start();
//   (*upstream)->Script({"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
//                        "0\r\nX-Sum: 1\r\n\r\n"});   // the next request's answer, in 2 pieces
//   ... a request reaches it; the first piece goes out at once
//   (*upstream)->Release();                           // the second piece goes out
//   std::optional<std::string> raw = (*upstream)->NextRequest(absl::Seconds(5));
//
// A request without a script gets "200 OK" with the body "{}". Every wait is bounded (10 s for a
// Release, the caller's timeout for NextRequest). With a certificate and key (StartTls) it speaks
// TLS (OpenSSL, no ALPN) and records and scripts the bytes inside it.
// Thread-safety: all methods are thread-safe.
#ifndef QPOOL_TESTS_SUPPORT_RAW_HTTP_UPSTREAM_H_
#define QPOOL_TESTS_SUPPORT_RAW_HTTP_UPSTREAM_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace qpool::testing {

class RawHttpUpstream {
 public:
  static absl::StatusOr<std::unique_ptr<RawHttpUpstream>> Start();
  // The same over TLS with the PEM certificate chain `cert_file` and its key `key_file`.
  static absl::StatusOr<std::unique_ptr<RawHttpUpstream>> StartTls(const std::string& cert_file,
                                                                   const std::string& key_file);
  ~RawHttpUpstream();

  uint16_t port() const;
  // Closes the connection and stops the thread. Idempotent.
  void Stop();

  // The answer to the next request that has none scripted yet: `pieces` written in order, each
  // one after the first only once Release() was called for it. An empty piece closes the
  // connection at once, without a Release.
  void Script(std::vector<std::string> pieces);
  // Lets the next waiting piece go out.
  void Release();
  // The raw bytes of the oldest request not taken yet, waiting up to `timeout` for one.
  std::optional<std::string> NextRequest(absl::Duration timeout);
  int64_t connections_accepted() const;
  int64_t connections_closed() const;  // by this server (an empty piece) or by the peer

  class Impl;

 private:
  explicit RawHttpUpstream(std::unique_ptr<Impl> impl);
  static absl::StatusOr<std::unique_ptr<RawHttpUpstream>> Start(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace qpool::testing

#endif  // QPOOL_TESTS_SUPPORT_RAW_HTTP_UPSTREAM_H_
