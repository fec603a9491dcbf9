// One app's HTTP/1.1 connection to the REST port, and the one request on it in flight at a time
// (HTTP/1.1 answers in order, so a pipelined request waits in the read buffer until the answer
// before it is out).
//
// A request's life: headers read (rest.header_timeout from their first byte; rest.max_header_bytes,
// rest.max_headers) -> body read into the replay buffer when it fits retry.replay_buffer_per_call
// (else it streams through later, in 64 KiB chunks, and cannot be retried) -> a slot on a REST
// pool connection (NodePool::Acquire: the wait queue, upstream.acquire_timeout, max_pending) ->
// request written -> answer headers read -> answer streamed back in 64 KiB chunks. Until the first
// byte of an answer reaches the app, a failed attempt may be retried (OnAttemptFailed: the one
// place the retry policy is asked) and rest.request_timeout may end the request with a 504.
//
// Thread-safety: none; lives on one worker's thread. Owned by its RestWorker (shared_ptr: async
// handlers hold a reference while they are pending).
#ifndef QPOOL_DAEMON_REST_SESSION_H_
#define QPOOL_DAEMON_REST_SESSION_H_

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/string_body.hpp>
#include <memory>
#include <optional>
#include <string>

#include "daemon/common/event_loop.h"
#include "daemon/common/qdrant_methods.h"
#include "daemon/pool/node_pool.h"
#include "daemon/rest/lazy_timer.h"
#include "daemon/retry/method_class.h"
#include "daemon/retry/retry_policy.h"

namespace qpool::rest {

class RestWorker;
class RestUpstreamConnection;

class RestSession : public pool::StreamWaiter, public std::enable_shared_from_this<RestSession> {
 public:
  RestSession(RestWorker& worker, boost::asio::ip::tcp::socket socket);
  ~RestSession() override;

  void Start();
  // Answers the first request with 503 `message` and closes (server.max_client_connections).
  void Refuse(std::string message);
  // The answer in flight (if any) carries Connection: close; an idle connection closes now.
  void BeginDrain();
  // Closes now, failing what is in flight.
  void Abort();

  // pool::StreamWaiter.
  void OnStreamReady(pool::PoolConnection* conn) override;
  void OnAcquireFailed(const absl::Status& status) override;

 private:
  using Parser = boost::beast::http::request_parser<boost::beast::http::buffer_body>;
  using ResponseParser = boost::beast::http::response_parser<boost::beast::http::buffer_body>;
  using RequestSerializer = boost::beast::http::request_serializer<boost::beast::http::buffer_body>;
  using ResponseSerializer =
      boost::beast::http::response_serializer<boost::beast::http::buffer_body>;
  using LocalResponse = boost::beast::http::response<boost::beast::http::string_body>;

  // What the session timer is armed for; one timer, since the phases never overlap.
  enum class TimerRole { kNone, kIdle, kHeader, kBody, kBackoff };

  // App side, request.
  void ReadRequest();
  void ReadHeader();
  void OnRequestHeader(const boost::system::error_code& ec);
  void ReadBodyIntoReplay();
  // Sends "100 Continue" once when the app asked for it, then runs `next`.
  void ContinueThen(void (RestSession::*next)());
  // Upstream.
  void BeginUpstream();
  void Attempt(std::optional<size_t> avoid_node);
  void WriteRequest();
  void RelayRequestChunk();
  void ReadResponseHeader();
  void OnResponseHeader(const boost::system::error_code& ec);
  // App side, answer.
  void ForwardResponse();
  void RelayResponseChunk();
  void WriteResponseChunk();
  void OnResponseDone();
  // The one place where a failed attempt meets the retry policy and the retry budget (as
  // Call::OnAttemptFailed does for gRPC; it moves onto retry::AttemptController when that lands).
  // Without a retry the app gets `status` with `message`.
  void OnAttemptFailed(const retry::AttemptOutcome& outcome, unsigned status,
                       const std::string& message);
  // Ends the upstream attempt: the connection goes back to its pool (reusable) or closes.
  void EndUpstream(bool reusable, bool failed);
  // An answer qpoold writes itself, in Qdrant's error shape. `close`: the connection closes after
  // it (the request's body was not read, or the input is broken).
  void LocalReply(unsigned status, const std::string& message, bool close,
                  std::optional<int> retry_after_seconds = std::nullopt);
  // The request is over (answered either way): releases its replay copy and counts it.
  void FinishRequest(unsigned status);
  void ArmTimer(Duration after, TimerRole role);
  void CancelTimer();
  void OnTimer(TimerRole role);
  void OnDeadline();
  void ReleaseReplay();
  void Close();

  RestWorker& worker_;
  boost::asio::ip::tcp::socket socket_;
  boost::beast::flat_buffer in_buffer_;  // bounded by rest.max_header_bytes + one chunk
  LazyTimer timer_;  // the phase's timeout (idle, header, body) or a retry's backoff
  TimerRole timer_role_ = TimerRole::kNone;
  LazyTimer deadline_timer_;  // rest.request_timeout, until the answer starts

  // The request in flight.
  std::optional<Parser> parser_;
  std::optional<RequestSerializer> request_serializer_;
  std::optional<ResponseParser> response_parser_;
  std::optional<ResponseSerializer> response_serializer_;
  std::unique_ptr<LocalResponse> local_reply_;
  std::string body_;       // the request body as read (the replay copy), or a chunk
  std::string wire_head_;  // the head of the request or answer being written (SerializeHead)
  std::unique_ptr<char[]> chunk_;  // the answer's chunks, allocated for the first one
  size_t chunk_size_ = 0;          // chunk_'s size: 64 KiB, or less for a shorter answer
  int64_t replay_held_ = 0;        // bytes of body_ counted in the process's replay bytes
  const QdrantRestRoute* route_ = nullptr;
  retry::RetryClass retry_class_ = retry::RetryClass::kNeverRepeat;
  std::shared_ptr<RestUpstreamConnection> upstream_;
  pool::NodePool* queued_on_ = nullptr;
  size_t node_ = 0;
  uint32_t attempts_ = 0;
  uint64_t attempt_generation_ = 0;  // handlers of an abandoned attempt see another generation
  MonoTime attempt_started_{};
  MonoTime request_started_{};  // the request's headers arrived
  std::optional<MonoTime> deadline_;
  Duration deadline_budget_{};    // how long the deadline gave the request, for the 504's message
  bool counted_active_ = false;   // counted in the worker's active calls (retry budget)
  int retry_node_ = -1;           // the node whose budget counts this request's retry in flight
  bool request_active_ = false;   // from request headers to the end of its answer
  bool streaming_ = false;        // the body streams through: no replay, no retry
  bool expect_continue_ = false;  // the app sent Expect: 100-continue
  bool continue_sent_ = false;
  bool keep_alive_ = true;  // the app's request allows another after it
  bool head_ = false;       // a HEAD request: the answer has no body
  bool response_started_ = false;
  bool upstream_reusable_ = false;
  bool close_after_ = false;  // this answer ends the connection
  bool draining_ = false;
  bool closed_ = false;
  std::string refuse_message_;  // non-empty: answer 503 with it, then close
};

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_SESSION_H_
