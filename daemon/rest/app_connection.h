// The app's HTTP/1.1 connection as a RestSession and its parts share it: the socket, the read
// buffer (a pipelined request waits there until the answer before it is out), and the
// connection's state. The session owns it and sets the state; its parts (RequestReader,
// RestExchange, AnswerWriter) are handed a reference at construction and read and write on it,
// and a pending operation's handler does nothing once `closed` is set.
//
// Thread-safety: none; the session's thread.
#ifndef QPOOL_DAEMON_REST_APP_CONNECTION_H_
#define QPOOL_DAEMON_REST_APP_CONNECTION_H_

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <cstddef>
#include <utility>

namespace qpool::rest {

// Bytes moved per read and write once a body streams through, request or answer (the session's
// parts share it; the app connection's read buffer holds the largest head and one chunk).
inline constexpr size_t kChunkBytes = 64 * 1024;

struct AppConnection {
  // `max_header_bytes`: rest.max_header_bytes, the largest head the read buffer holds.
  AppConnection(boost::asio::ip::tcp::socket app_socket, size_t max_header_bytes)
      : socket(std::move(app_socket)), in_buffer(max_header_bytes + kChunkBytes) {}

  boost::asio::ip::tcp::socket socket;
  boost::beast::flat_buffer in_buffer;  // bounded by rest.max_header_bytes + one chunk
  bool closed = false;                  // the session closed: pending handlers do nothing
  bool draining = false;                // the answer in flight carries Connection: close
};

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_APP_CONNECTION_H_
