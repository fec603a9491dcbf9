// One app's HTTP/1.1 connection to the REST port, and the one request on it in flight at a time
// (HTTP/1.1 answers in order, so a pipelined request waits in the read buffer until the answer
// before it is out).
//
// A request's life: headers read (rest.header_timeout from their first byte; rest.max_header_bytes,
// rest.max_headers) -> body read into the replay buffer when it fits retry.replay_buffer_per_call
// (else it streams through later, in 64 KiB chunks, and cannot be retried) -> a slot on a REST
// pool connection (NodePool::Acquire: the wait queue, upstream.acquire_timeout, max_pending) ->
// request written -> answer headers read -> answer streamed back in 64 KiB chunks. Until the first
// byte of an answer reaches the app, a failed attempt may be retried and a slow read hedged: the
// same retry::AttemptController as gRPC decides (RestAttempts), the session carries its decisions
// out as Exchanges (two slots: the primary and a hedge racing it). rest.request_timeout may end
// the request with a 504.
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
#include "daemon/rest/http_util.h"
#include "daemon/rest/lazy_timer.h"
#include "daemon/rest/rest_attempts.h"
#include "daemon/retry/method_class.h"

namespace qpool::rest {

class RestWorker;
class RestUpstreamConnection;

class RestSession : public RestExchanges, public std::enable_shared_from_this<RestSession> {
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

  // RestExchanges (RestAttempts' decisions).
  void StartExchange(int slot, int node, int avoid_node) override;
  void CancelExchange(int slot) override;
  int PickOtherNode(int node) override;
  void ForwardAnswer(int slot) override;
  void ReplyLocally(unsigned status, const std::string& message,
                    std::optional<int> retry_after_seconds) override;

 private:
  using Parser = HeadParser</*kIsRequest=*/true>;
  using Request = boost::beast::http::request<boost::beast::http::buffer_body>;
  using ResponseParser = HeadParser</*kIsRequest=*/false>;
  using RequestSerializer = boost::beast::http::request_serializer<boost::beast::http::buffer_body>;
  using Response = boost::beast::http::response<boost::beast::http::buffer_body>;
  using ResponseSerializer =
      boost::beast::http::response_serializer<boost::beast::http::buffer_body>;
  using LocalResponse = boost::beast::http::response<boost::beast::http::string_body>;

  // What an exchange's reads and writes work on. A pending operation holds it (shared) until it
  // completes, so a cancelled exchange's slot can start another at once.
  struct ExchangeIo {
    std::string head;                // a request held whole: its head as this node gets it
    std::optional<Request> request;  // a streamed request as this node gets it (its own Host)
    std::optional<RequestSerializer> serializer;  // a streamed request's
    HttpHead response_head;  // the answer's head (response's), reused from answer to answer
    std::optional<ResponseParser> response;
    bool tail_written = false;  // a streamed request's last chunk (with trailers) went out
  };

  // One upstream try of the request in flight: its place in a REST pool's queue, then its
  // keep-alive connection.
  class Exchange final : public pool::StreamWaiter {
   public:
    Exchange(RestSession& session, int slot) : slot(slot), session_(session) {}
    void OnStreamReady(pool::PoolConnection* conn) override;
    void OnAcquireFailed(const absl::Status& status) override;

    const int slot;
    size_t node = 0;
    pool::NodePool* queued_on = nullptr;
    std::shared_ptr<RestUpstreamConnection> upstream;
    std::shared_ptr<ExchangeIo> io;
    uint64_t generation = 0;  // handlers of an abandoned exchange see another generation

   private:
    RestSession& session_;
  };

  // What the session timer is armed for; one timer, since the phases never overlap.
  enum class TimerRole { kNone, kIdle, kHeader, kBody };

  // App side, request.
  void ReadRequest();
  void ReadHeader();
  void OnRequestHeader(const boost::system::error_code& ec);
  void ReadBodyIntoReplay();
  // The body is too large to keep (`limit`): it streams through once a connection is had, and the
  // request is never retried.
  void StreamBody(retry::ReplayLimit limit);
  // Bytes every request's replay copy holds in the process (both protocols).
  int64_t ReplayBytesHeld() const;
  // Sends "100 Continue" once when the app asked for it, then runs `next`.
  void ContinueThen(void (RestSession::*next)());
  // Upstream.
  void BeginUpstream();
  // Puts qpoold's API key on the request (upstream.api_key_*, api_key_mode): the read-only key for
  // a read route when there is one, else the full key.
  void SetApiKey(HeaderFields& request);
  void OnExchangeReady(Exchange& ex, pool::PoolConnection* conn);
  void OnExchangeRefused(Exchange& ex, const absl::Status& status);
  void WriteRequest(Exchange& ex);
  void WriteFirstRequest() { WriteRequest(exchanges_[0]); }
  void RelayRequestChunk();
  // A streamed request's end when it has trailer fields: its last `got` bytes as a chunk, then the
  // last chunk with the trailers (Beast's serializer writes no trailers).
  void WriteRequestTail(Exchange& ex, size_t got);
  void ReadResponseHeader(Exchange& ex);
  void OnResponseHeader(Exchange& ex, const boost::system::error_code& ec);
  // App side, answer (the exchange in answer_slot_).
  void ForwardResponse();
  void RelayResponseChunk();
  void WriteResponseChunk();
  // A chunked answer's end when it has trailer fields: the head if it is not out yet, the last
  // `got` bytes read as a chunk, the last chunk with the trailers.
  void WriteResponseTail(size_t got);
  // A write of the answer to the app completed: true to go on; false when the exchange moved on,
  // or when the write failed (then the request ends with 499 and the connection closes).
  bool AnswerWritten(int slot, uint64_t generation, const boost::system::error_code& ec);
  void OnResponseDone();
  // Ends an exchange: leaves the pool's queue, or gives its connection back to its pool
  // (reusable) or closes it. No-op for an idle slot.
  void EndExchange(Exchange& ex, bool reusable, bool failed);
  // Ends both exchanges and stops the attempts (no retry, no hedge from here on).
  void EndUpstream(bool failed);
  // An answer qpoold writes itself, in Qdrant's error shape. `close`: the connection closes after
  // it (the request's body was not read, or the input is broken).
  void LocalReply(unsigned status, const std::string& message, bool close,
                  std::optional<int> retry_after_seconds = std::nullopt);
  // The request is over (answered either way): releases its replay copy, counts it, and writes
  // its access log line when sampled (access_log.h).
  void FinishRequest(unsigned status);
  void LogAccess(unsigned status, Duration duration);
  void ArmTimer(Duration after, TimerRole role);
  void CancelTimer();
  void OnTimer(TimerRole role);
  void OnDeadline();
  void ReleaseReplay();
  void Close();
  // The request must not reach Qdrant twice (a delete by filter, a never-repeat route): a
  // connection lost after it was written is passed on, never replayed.
  bool OnceOnly() const {
    return retry_class_ == retry::RetryClass::kFilterScopedWrite ||
           retry_class_ == retry::RetryClass::kNeverRepeat;
  }

  RestWorker& worker_;
  boost::asio::ip::tcp::socket socket_;
  boost::beast::flat_buffer in_buffer_;  // bounded by rest.max_header_bytes + one chunk
  LazyTimer timer_;  // the phase's timeout (idle, header, body) or a retry's backoff
  TimerRole timer_role_ = TimerRole::kNone;
  LazyTimer deadline_timer_;  // rest.request_timeout, until the answer starts

  // The request in flight.
  HttpHead request_head_;  // parser_'s: the request's head, reused from request to request
  std::optional<Parser> parser_;
  // The answer to the app when it streams or goes chunked (Beast's serializer over a copy of its
  // head); an answer read whole goes out without them.
  std::optional<Response> response_message_;
  std::optional<ResponseSerializer> response_serializer_;
  boost::beast::http::buffer_body::value_type answer_body_{};  // the answer's bytes to write next
  std::unique_ptr<LocalResponse> local_reply_;
  std::string body_;               // the request body as read (the replay copy), or a chunk
  std::string wire_head_;          // the head of the answer being written (SerializeHead)
  std::string request_tail_;       // the request's trailers as its last chunk; empty: none
  std::string response_tail_;      // the answer's trailers as its last chunk
  std::unique_ptr<char[]> chunk_;  // the answer's chunks (kept between answers when small)
  size_t chunk_capacity_ = 0;      // chunk_'s size
  size_t chunk_size_ = 0;          // this answer's part of it (64 KiB or less); 0: unset
  int64_t replay_held_ = 0;        // bytes of body_ counted in the process's replay bytes
  const QdrantRestRoute* route_ = nullptr;
  retry::RetryClass retry_class_ = retry::RetryClass::kNeverRepeat;
  Exchange exchanges_[retry::AttemptController::kSlots] = {{*this, 0}, {*this, 1}};
  int answer_slot_ = 0;  // the exchange whose answer goes to the app
  RestAttempts attempts_;
  MonoTime request_started_{};  // the request's headers arrived
  std::optional<MonoTime> deadline_;
  Duration deadline_budget_{};     // how long the deadline gave the request, for the 504's message
  bool callers_deadline_ = false;  // deadline_ comes from the request's ?timeout=
  bool request_active_ = false;    // from request headers to the end of its answer
  bool streaming_ = false;         // the body streams through: no replay, no retry
  bool expect_continue_ = false;   // the app sent Expect: 100-continue
  bool continue_sent_ = false;
  bool keep_alive_ = true;     // the app's request allows another after it
  unsigned app_version_ = 11;  // the app's request's HTTP version: 10 or 11
  bool head_ = false;          // a HEAD request: the answer has no body
  bool response_started_ = false;
  bool upstream_reusable_ = false;
  bool close_after_ = false;       // this answer ends the connection
  bool head_read_inline_ = false;  // inside ReadResponseHeader's ReadUntil call
  bool draining_ = false;
  bool closed_ = false;
  std::string refuse_message_;  // non-empty: answer 503 with it, then close
};

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_SESSION_H_
