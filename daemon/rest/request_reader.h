// Where a REST request is read from the app: the wait for its first byte on an idle keep-alive
// connection, its head (rest.header_timeout from the first byte; rest.max_header_bytes,
// rest.max_headers; Expect: 100-continue answered by qpoold), its body into the replay copy when
// it fits retry.replay_buffer_per_call and retry.replay_buffer_total (else it streams through
// later, chunk by chunk, and is never retried), and the head rewritten as Qdrant gets it
// (hop-by-hop fields, framing, qpoold's API key) before RestAttempts::Begin starts the first
// exchange.
//
//   RequestReader reader(session);
//   reader.ReadNext();   // -> RestAttempts::Begin (the request goes upstream) or a local reply
//   reader.request();    // what the exchanges write upstream and the answer's framing reads
//
// RestRequest is the request in flight, read here and shared by the session's parts: an exchange
// (rest_exchange.h) writes its head, body and trailers upstream, the answer (answer_writer.h)
// takes the app's HTTP version and keep-alive from it.
//
// Ownership: part of a RestSession (by value); works on the session's socket, read buffer, timer
// and deadline, and answers through its LocalReply. Thread-safety: none; the session's thread.
#ifndef QPOOL_DAEMON_REST_REQUEST_READER_H_
#define QPOOL_DAEMON_REST_REQUEST_READER_H_

#include <boost/system/error_code.hpp>
#include <cstdint>
#include <optional>
#include <string>

#include "daemon/common/qdrant_methods.h"
#include "daemon/rest/http_util.h"
#include "daemon/retry/method_class.h"
#include "daemon/retry/retry_context.h"

namespace qpool::rest {

class RestSession;

// The request in flight, from its head to the end of its answer (reset by RequestReader::ReadNext).
struct RestRequest {
  using Parser = HeadParser</*kIsRequest=*/true>;

  // The request must not reach Qdrant twice (a delete by filter, a never-repeat route): a
  // connection lost after it was written is passed on, never replayed.
  bool OnceOnly() const {
    return retry_class == retry::RetryClass::kFilterScopedWrite ||
           retry_class == retry::RetryClass::kNeverRepeat;
  }

  HttpHead head;  // parser's: the request's head, reused from request to request
  std::optional<Parser> parser;
  std::string body;  // the request body as read (the replay copy), or a chunk
  std::string tail;  // the request's trailers as its last chunk; empty: none
  const QdrantRestRoute* route = nullptr;
  retry::RetryClass retry_class = retry::RetryClass::kNeverRepeat;
  int64_t replay_held = 0;       // bytes of body counted in the process's replay bytes
  bool streaming = false;        // the body streams through: no replay, no retry
  bool expect_continue = false;  // the app sent Expect: 100-continue
  bool continue_sent = false;
  bool keep_alive = true;     // the app's request allows another after it
  unsigned app_version = 11;  // the app's request's HTTP version: 10 or 11
  bool head_only = false;     // a HEAD request: the answer has no body
};

class RequestReader {
 public:
  explicit RequestReader(RestSession& session) : session_(session) {}
  RequestReader(const RequestReader&) = delete;
  RequestReader& operator=(const RequestReader&) = delete;

  RestRequest& request() { return request_; }
  const RestRequest& request() const { return request_; }

  // Forgets the previous request and reads the next: from the read buffer when it is pipelined
  // there, else after an idle wait (rest.keepalive_timeout, then the connection closes).
  void ReadNext();
  // Sends "100 Continue" once when the app asked for it, then runs next(session).
  void ContinueThen(void (*next)(RestSession&));
  // Uncounts the replay copy from the process's replay bytes (the request is over, or its body
  // streams on). Idempotent.
  void ReleaseReplay();

 private:
  void ReadHeader();
  void OnHeader(const boost::system::error_code& ec);
  void ReadBodyIntoReplay();
  // The body is too large to keep (`limit`): it streams through once a connection is had, and the
  // request is never retried.
  void StreamBody(retry::ReplayLimit limit);
  // The head as Qdrant gets it, the retry class, then RestAttempts::Begin.
  void BeginUpstream();

  RestSession& session_;
  RestRequest request_;
};

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_REQUEST_READER_H_
