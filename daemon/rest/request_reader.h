// Where a REST request is read from the app: the wait for its first byte on an idle keep-alive
// connection, its head (rest.header_timeout from the first byte; rest.max_header_bytes,
// rest.max_headers; Expect: 100-continue answered by qpoold), its body into the replay copy when
// it fits retry.replay_buffer_per_call and retry.replay_buffer_total (else it streams through
// later, chunk by chunk, and is never retried), and the head rewritten as Qdrant gets it
// (hop-by-hop fields, framing, qpoold's API key) before RestAttempts::Begin starts the first
// exchange.
//
//   RequestReader reader(owner, app, timers, attempts, context);
//   reader.ReadNext();   // -> RestAttempts::Begin (the request goes upstream) or a local reply
//   reader.request();    // what the exchanges write upstream and the answer's framing reads
//
// RestRequest is the request in flight, read here and shared by the session's parts: an exchange
// (rest_exchange.h) writes its head, body and trailers upstream, the answer (answer_writer.h)
// takes the app's HTTP version and keep-alive from it.
//
// What it asks of its session (RequestReaderOwner): a reference for a pending operation, notice
// that a request became active, qpoold's own answer and the close. It reads on the session's
// app connection (AppConnection), arms its phase timer and starts its deadline (SessionTimers),
// and hands a request read to its RestAttempts; all are passed in at construction.
//
// Ownership: part of a RestSession (by value). Thread-safety: none; the session's thread.
#ifndef QPOOL_DAEMON_REST_REQUEST_READER_H_
#define QPOOL_DAEMON_REST_REQUEST_READER_H_

#include <boost/system/error_code.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "daemon/common/qdrant_methods.h"
#include "daemon/rest/app_connection.h"
#include "daemon/rest/http_util.h"
#include "daemon/rest/session_context.h"
#include "daemon/rest/session_timers.h"
#include "daemon/retry/method_class.h"
#include "daemon/retry/retry_context.h"

namespace qpool::rest {

class RestAttempts;

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

// What a RequestReader asks of its session.
class RequestReaderOwner {
 public:
  // A reference that keeps the session (and the reader) alive while a read or write is pending.
  virtual std::shared_ptr<void> Hold() = 0;
  // A request's head arrived, or failed to: the request is active (counted, timed) from now on.
  virtual void OnRequestHead() = 0;
  // qpoold's own answer to the request (RestSession::LocalReply); `close`: the connection closes
  // after it.
  virtual void LocalReply(unsigned status, const std::string& message, bool close,
                          std::optional<int> retry_after_seconds) = 0;
  // The app went away, or its input cannot go on: the connection closes now.
  virtual void Close() = 0;

 protected:
  ~RequestReaderOwner() = default;
};

class RequestReader {
 public:
  RequestReader(RequestReaderOwner& owner, AppConnection& app, SessionTimers& timers,
                RestAttempts& attempts, const RestSessionContext& context)
      : owner_(owner), app_(app), timers_(timers), attempts_(attempts), context_(context) {}
  RequestReader(const RequestReader&) = delete;
  RequestReader& operator=(const RequestReader&) = delete;

  RestRequest& request() { return request_; }
  const RestRequest& request() const { return request_; }

  // Forgets the previous request and reads the next: from the read buffer when it is pipelined
  // there, else after an idle wait (rest.keepalive_timeout, then the connection closes).
  void ReadNext();
  // Sends "100 Continue" once when the app asked for it, then runs next() (at once when it is
  // not to be sent).
  template <class Next>
  void ContinueThen(Next&& next) {
    if (!request_.expect_continue || request_.continue_sent) {
      next();
      return;
    }
    SendContinue(std::forward<Next>(next));
  }
  // Every request is answered 503 `message`, and the connection closes
  // (server.max_client_connections, or qpoold shutting down).
  void Refuse(std::string message) { refuse_message_ = std::move(message); }
  // Uncounts the replay copy from the process's replay bytes (the request is over, or its body
  // streams on). Idempotent.
  void ReleaseReplay();

 private:
  void SendContinue(std::function<void()> next);
  void ReadHeader();
  void OnHeader(const boost::system::error_code& ec);
  void ReadBodyIntoReplay();
  // The body is too large to keep (`limit`): it streams through once a connection is had, and the
  // request is never retried.
  void StreamBody(retry::ReplayLimit limit);
  // The head as Qdrant gets it, the retry class, then RestAttempts::Begin.
  void BeginUpstream();

  RequestReaderOwner& owner_;
  AppConnection& app_;
  SessionTimers& timers_;
  RestAttempts& attempts_;
  const RestSessionContext& context_;
  RestRequest request_;
  std::string refuse_message_;  // non-empty: answer 503 with it, then close
};

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_REQUEST_READER_H_
