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
// out as exchanges (two slots: the primary and a hedge racing it). rest.request_timeout may end
// the request with a 504.
//
// The session is the connection and the request's frame: its socket and read buffer, the phase
// timer and the request deadline, qpoold's own answers (LocalReply), the request's end
// (FinishRequest: metrics, access log) and the connection's (Close). It owns the parts that do the
// rest, one file each:
//   RequestReader (request_reader.h)  where the request is read from the app;
//   RestExchange  (rest_exchange.h)   where it goes upstream, one per slot;
//   AnswerWriter  (answer_writer.h)   where the answer goes back to the app.
// The parts are its friends: on the one thread they share its socket, timers and flags, and call
// its EndUpstream, LocalReply, FinishRequest and Close; each part's header says what it does.
//
// Thread-safety: none; lives on one worker's thread. Owned by its RestWorker (shared_ptr: async
// handlers hold a reference while they are pending).
#ifndef QPOOL_DAEMON_REST_SESSION_H_
#define QPOOL_DAEMON_REST_SESSION_H_

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/string_body.hpp>
#include <memory>
#include <optional>
#include <string>

#include "daemon/common/event_loop.h"
#include "daemon/rest/answer_writer.h"
#include "daemon/rest/lazy_timer.h"
#include "daemon/rest/request_reader.h"
#include "daemon/rest/rest_attempts.h"
#include "daemon/rest/rest_exchange.h"

namespace qpool::rest {

class RestWorker;

// Bytes moved per read and write once a body streams through, request or answer (the session's
// parts share it; the app connection's read buffer holds the largest head and one chunk).
inline constexpr size_t kChunkBytes = 64 * 1024;

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
  friend class AnswerWriter;
  friend class RequestReader;
  friend class RestExchange;

  using LocalResponse = boost::beast::http::response<boost::beast::http::string_body>;

  // What the session timer is armed for; one timer, since the phases never overlap.
  enum class TimerRole { kNone, kIdle, kHeader, kBody };

  // The previous request is over: the next one is read (or the connection closes, draining).
  void ReadRequest();
  // Ends both exchanges and stops the attempts (no retry, no hedge from here on).
  void EndUpstream(bool failed);
  // An answer qpoold writes itself, in Qdrant's error shape. `close`: the connection closes after
  // it (the request's body was not read, or the input is broken).
  void LocalReply(unsigned status, const std::string& message, bool close,
                  std::optional<int> retry_after_seconds = std::nullopt);
  // The request is over (answered either way): releases its replay copy, counts it, and writes
  // its access log line when sampled (access_log.h).
  void FinishRequest(unsigned status);
  void ArmTimer(Duration after, TimerRole role);
  void CancelTimer();
  void OnTimer(TimerRole role);
  void OnDeadline();
  void Close();

  RestWorker& worker_;
  boost::asio::ip::tcp::socket socket_;
  boost::beast::flat_buffer in_buffer_;  // bounded by rest.max_header_bytes + one chunk
  LazyTimer timer_;  // the phase's timeout (idle, header, body) or a retry's backoff
  TimerRole timer_role_ = TimerRole::kNone;
  LazyTimer deadline_timer_;  // rest.request_timeout, until the answer starts

  // The request in flight.
  RequestReader reader_;  // the request and its reading
  std::unique_ptr<LocalResponse> local_reply_;
  RestExchange exchanges_[retry::AttemptController::kSlots] = {{*this, 0}, {*this, 1}};
  int answer_slot_ = 0;  // the exchange whose answer goes to the app
  AnswerWriter answer_;
  RestAttempts attempts_;
  MonoTime request_started_{};  // the request's headers arrived
  std::optional<MonoTime> deadline_;
  Duration deadline_budget_{};     // how long the deadline gave the request, for the 504's message
  bool callers_deadline_ = false;  // deadline_ comes from the request's ?timeout=
  bool request_active_ = false;    // from request headers to the end of its answer
  bool response_started_ = false;
  bool close_after_ = false;  // this answer ends the connection
  bool draining_ = false;
  bool closed_ = false;
  std::string refuse_message_;  // non-empty: answer 503 with it, then close
};

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_SESSION_H_
