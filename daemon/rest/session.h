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
// The session is the connection and the request's frame: the app connection (AppConnection: its
// socket, read buffer and state), the phase timer and the request deadline (SessionTimers),
// qpoold's own answers (LocalReply), the request's end (FinishRequest: metrics, access log) and
// the connection's (Close). It owns the parts that do the rest, one file each:
//   RequestReader (request_reader.h)  where the request is read from the app;
//   RestExchange  (rest_exchange.h)   where it goes upstream, one per slot;
//   AnswerWriter  (answer_writer.h)   where the answer goes back to the app.
// Each part is handed at construction what it works on (the app connection, the timers, the
// request, the attempts, the worker's RestSessionContext) and asks the rest of the session through
// a narrow interface the session implements (RequestReaderOwner, RestExchangeOwner,
// AnswerWriterOwner: a reference for a pending operation, LocalReply, EndUpstream, FinishRequest,
// the next request, Close); each part's header says what it does.
//
// Thread-safety: none; lives on one worker's thread. Owned by its RestWorker (shared_ptr: async
// handlers hold a reference while they are pending).
#ifndef QPOOL_DAEMON_REST_SESSION_H_
#define QPOOL_DAEMON_REST_SESSION_H_

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/string_body.hpp>
#include <memory>
#include <optional>
#include <string>

#include "daemon/common/event_loop.h"
#include "daemon/rest/answer_writer.h"
#include "daemon/rest/app_connection.h"
#include "daemon/rest/request_reader.h"
#include "daemon/rest/rest_attempts.h"
#include "daemon/rest/rest_exchange.h"
#include "daemon/rest/session_context.h"
#include "daemon/rest/session_timers.h"

namespace qpool::rest {

class RestSession : public RestExchanges,
                    public RequestReaderOwner,
                    public RestExchangeOwner,
                    public AnswerWriterOwner,
                    public SessionTimersOwner,
                    public std::enable_shared_from_this<RestSession> {
 public:
  // `context` (its worker's) outlives the session.
  RestSession(const RestSessionContext& context, boost::asio::ip::tcp::socket socket);
  ~RestSession() override;

  void Start();
  // Answers the first request with 503 `message` and closes (server.max_client_connections).
  void Refuse(std::string message);
  // The answer in flight (if any) carries Connection: close; an idle connection closes now.
  void BeginDrain();
  // Closes now, failing what is in flight (RestWorker::Stop; the parts' Close).
  void Close() override;

  // RestExchanges (RestAttempts' decisions).
  void StartExchange(int slot, int node, int avoid_node) override;
  void CancelExchange(int slot) override;
  int PickOtherNode(int node) override;
  void ForwardAnswer(int slot) override;
  void ReplyLocally(unsigned status, const std::string& message,
                    std::optional<int> retry_after_seconds) override;

 private:
  using LocalResponse = boost::beast::http::response<boost::beast::http::string_body>;

  // The previous request is over: the next one is read (or the connection closes, draining).
  void ReadRequest() override;
  // Ends both exchanges and stops the attempts (no retry, no hedge from here on).
  void EndUpstream(bool failed) override;
  // An answer qpoold writes itself, in Qdrant's error shape. `close`: the connection closes after
  // it (the request's body was not read, or the input is broken).
  void LocalReply(unsigned status, const std::string& message, bool close,
                  std::optional<int> retry_after_seconds) override;
  // The request is over (answered either way): releases its replay copy, counts it, and writes
  // its access log line when sampled (access_log.h).
  void FinishRequest(unsigned status) override;
  // The parts' and the timers' reference to the session: shared_from_this().
  std::shared_ptr<void> Hold() override;
  // A request's head arrived (or failed to): it is active, and timed, from now on.
  void OnRequestHead() override;
  // SessionTimersOwner: the phase's timeout (idle, header, body) and the request deadline.
  void OnPhaseTimeout(SessionPhase phase) override;
  void OnDeadline() override;

  const RestSessionContext& context_;
  AppConnection app_;
  SessionTimers timers_;

  // The request in flight.
  RequestReader reader_;  // the request and its reading
  std::unique_ptr<LocalResponse> local_reply_;
  RestExchange exchanges_[retry::AttemptController::kSlots] = {
      {*this, {app_, reader_, timers_, attempts_, context_}, 0},
      {*this, {app_, reader_, timers_, attempts_, context_}, 1}};
  int answer_slot_ = 0;  // the exchange whose answer goes to the app
  AnswerWriter answer_;
  RestAttempts attempts_;
  MonoTime request_started_{};   // the request's headers arrived
  bool request_active_ = false;  // from request headers to the end of its answer
  bool response_started_ = false;
  bool close_after_ = false;  // this local answer ends the connection
};

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_SESSION_H_
