// Where a REST answer goes back to the app: the answer RestAttempts forwards (an exchange's, its
// head read) relayed as Qdrant sent it. Its head is rewritten for the app (hop-by-hop fields, the
// app's HTTP version and keep-alive; chunked to an HTTP/1.1 app, close-delimited to an HTTP/1.0
// one when Qdrant gave no length); an answer read whole goes out in one send with its head, a
// longer one streams through in 64 KiB chunks (Beast's serializer), chunked trailers included.
// The first byte out commits the request (no deadline, no retry from there). When the answer is
// out, its connection goes back to its pool and the session reads the next request (or closes).
//
//   answer.Forward(exchange);   // ... -> RestSession::FinishRequest, then ReadRequest or Close
//
// A write the app does not take (it went away) ends the request with 499 and closes the
// connection; a read from Qdrant that fails mid-answer ends it with 502 (the app sees its
// connection end).
//
// What it asks of its session (AnswerWriterOwner): a reference for a pending operation, the
// request's end (FinishRequest), then the next request or the close; upstream ended when the
// answer cannot go on. It writes on the session's app connection (AppConnection), reads the
// request's framing (RestRequest) and reports a node that fails mid-answer to the balancer; all are
// passed in at construction.
//
// Ownership: part of a RestSession (by value). Its chunk buffer stays for the connection's next
// answers when small (16 KiB). Thread-safety: none; the session's thread.
#ifndef QPOOL_DAEMON_REST_ANSWER_WRITER_H_
#define QPOOL_DAEMON_REST_ANSWER_WRITER_H_

#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "daemon/pool/balancer.h"
#include "daemon/rest/app_connection.h"

namespace qpool::rest {

class RestExchange;
struct RestRequest;

// What an AnswerWriter asks of its session.
class AnswerWriterOwner {
 public:
  // A reference that keeps the session (and the writer) alive while a read or write is pending.
  virtual std::shared_ptr<void> Hold() = 0;
  // Ends the request's exchanges and attempts (RestSession::EndUpstream).
  virtual void EndUpstream(bool failed) = 0;
  // The request is over, answered with `status` (metrics, access log).
  virtual void FinishRequest(unsigned status) = 0;
  // The answer is out and the connection stays: the next request is read.
  virtual void ReadRequest() = 0;
  // The connection closes now.
  virtual void Close() = 0;

 protected:
  ~AnswerWriterOwner() = default;
};

class AnswerWriter {
 public:
  AnswerWriter(AnswerWriterOwner& owner, AppConnection& app, const RestRequest& request,
               pool::Balancer& balancer)
      : owner_(owner), app_(app), request_(request), balancer_(balancer) {}
  AnswerWriter(const AnswerWriter&) = delete;
  AnswerWriter& operator=(const AnswerWriter&) = delete;

  // Forgets the previous answer (a new request is read).
  void Reset();
  // Relays `exchange`'s answer (its head read, its body not) to the app. (The session has stopped
  // the request's deadline: the answer starts.)
  void Forward(RestExchange& exchange);

 private:
  using Response = boost::beast::http::response<boost::beast::http::buffer_body>;
  using ResponseSerializer =
      boost::beast::http::response_serializer<boost::beast::http::buffer_body>;

  // Reads the next part of the body (or notes its end), then writes it.
  void RelayChunk();
  void WriteChunk();
  // A chunked answer's end when it has trailer fields: the head if it is not out yet, the last
  // `got` bytes read as a chunk, the last chunk with the trailers.
  void WriteTail(size_t got);
  // A write to the app completed: true to go on; false when the exchange moved on, or when the
  // write failed (then the request ends with 499 and the connection closes).
  bool Written(const RestExchange& exchange, uint64_t generation,
               const boost::system::error_code& ec);
  // The whole answer is out: the connection back to its pool, the request finished.
  void Done();

  AnswerWriterOwner& owner_;
  AppConnection& app_;
  const RestRequest& request_;
  pool::Balancer& balancer_;
  RestExchange* exchange_ = nullptr;  // the exchange whose answer goes out
  // The answer when it streams or goes chunked (Beast's serializer over a copy of its head); an
  // answer read whole goes out without them.
  std::optional<Response> message_;
  std::optional<ResponseSerializer> serializer_;
  boost::beast::http::buffer_body::value_type body_{};  // the answer's bytes to write next
  std::string wire_head_;           // the head of the answer being written (SerializeHead)
  std::string tail_;                // the answer's trailers as its last chunk
  std::unique_ptr<char[]> chunk_;   // the answer's chunks (kept between answers when small)
  size_t chunk_capacity_ = 0;       // chunk_'s size
  size_t chunk_size_ = 0;           // this answer's part of it (64 KiB or less); 0: unset
  bool upstream_reusable_ = false;  // Qdrant's answer allows another request on its connection
  bool close_after_ = false;        // the connection closes after this answer
};

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_ANSWER_WRITER_H_
