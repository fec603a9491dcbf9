// Ends a client TLS connection politely once its owner is done with it (a gentle close: a drain
// finished, an idle or aged connection recycled): the bytes still owed to the peer (an HTTP/2
// GOAWAY already encrypted), then a TLS close_notify, then a TCP half-close (FIN); then it waits
// for the peer to close its side, reading and dropping what it still sends, and closes the socket.
//
//   owner: report the close to the pool now, then
//   tls::CloseGracefully(std::move(socket_), std::move(engine_), std::move(unsent));
//
// Never blocks and never holds up the owner: everything runs as asynchronous operations on the
// socket's executor, which keep the closing state alive; the owner has reported its close and
// forgotten the socket and engine already. Bounded: a peer that neither reads nor closes costs at
// most `timeout`, after which the socket closes anyway; a failed write closes at once. An engine
// that cannot send a close_notify (its handshake unfinished, or TLS failed) closes at once.
// Sending the close_notify also keeps the connection's session resumable (TlsEngine::Shutdown).
//
// Thread-safety: call on the thread that runs the socket's executor (the worker's).
#ifndef QPOOL_DAEMON_TLS_GRACEFUL_CLOSE_H_
#define QPOOL_DAEMON_TLS_GRACEFUL_CLOSE_H_

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "daemon/tls/client_tls.h"

namespace qpool::tls {

// How long a closing connection waits for the peer's side of the close.
inline constexpr std::chrono::milliseconds kCloseNotifyTimeout{1000};

// Takes over `socket` (connected; no operation of the owner's may still be pending on it: cancel
// them first) and `engine` (its handshake done). `unsent`: ciphertext made but not yet written.
void CloseGracefully(boost::asio::ip::tcp::socket socket, std::unique_ptr<TlsEngine> engine,
                     std::vector<uint8_t> unsent = {},
                     std::chrono::milliseconds timeout = kCloseNotifyTimeout);

}  // namespace qpool::tls

#endif  // QPOOL_DAEMON_TLS_GRACEFUL_CLOSE_H_
