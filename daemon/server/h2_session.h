// An nghttp2 session and the memory it lives in: the session pointer H2Transport's subclasses
// create and drive, the allocator that lets an idle session's pages go back to the kernel, the
// options both sides share, and connection-level flow control. The base of H2Transport, which
// adds the socket; everything here works without one, so a test can drive it on a bare session
// (tests/unit/h2_session_test.cc).
//
//   nghttp2_mem allocator = session_allocator();
//   nghttp2_option* option = NewSessionOption();
//   nghttp2_session_server_new3(&session_, callbacks, this, option, &allocator);
//   nghttp2_option_del(option);
//   SessionCreated();
//   ...
//   ssize_t n = SendFrames(&data);   // nghttp2_session_mem_send, noted for ReleaseIdlePages()
//   ReleaseIdleSessionPages();       // idle: the session's pages go back
//
// Lifetime: the session is deleted with this object, after its subclasses are gone.
// Thread-safety: none; it lives on one worker's thread.
#ifndef QPOOL_DAEMON_SERVER_H2_SESSION_H_
#define QPOOL_DAEMON_SERVER_H2_SESSION_H_

#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <cstdint>

#include "daemon/server/small_alloc.h"

namespace qpool::server {

class H2Session {
 public:
  H2Session(const H2Session&) = delete;
  H2Session& operator=(const H2Session&) = delete;

  // The nghttp2 session; null until the connection created it (the app side: on its first bytes).
  nghttp2_session* session() const { return session_; }

 protected:
  H2Session() = default;
  ~H2Session();

  // nghttp2 options both sides share: no automatic WINDOW_UPDATE, since calls acknowledge bytes as
  // they pass them on. The caller deletes the option after creating its session.
  static nghttp2_option* NewSessionOption();
  // The upstream side's connection window (1 GiB): received bytes are acknowledged on the
  // connection at once and held back per stream until the app takes them, so one slow call never
  // stalls the others sharing the connection (the app side bounds what it holds).
  static constexpr int32_t kUnboundedConnectionWindow = 1 << 30;
  // For the upstream side's DATA chunk callback: acknowledges `len` bytes on the connection, and
  // on the stream too when no attempt holds it (it let go; a reset is on its way). Returns the
  // stream's user data.
  static void* TakeDataChunk(nghttp2_session* session, int32_t stream_id, size_t len);

  // Connection-level flow control: the peer may send `window` bytes the connection has not
  // acknowledged yet. Call once session_ exists.
  void OpenConnectionWindow(int32_t window);
  // An allocator for nghttp2_session_*_new3 that lets ReleaseIdleSessionPages() find those blocks.
  // Until SessionCreated(), nghttp2's blocks (those it keeps for the session's lifetime) come
  // from the session slabs (small_alloc.h), so that they go back to the kernel once a crowd
  // leaves.
  nghttp2_mem session_allocator() {
    session_pages_.from_slabs = true;
    return Nghttp2SessionAlloc(&session_pages_);
  }
  // nghttp2_session_*_new3 returned: the session's later blocks come from the cache.
  void SessionCreated() { session_pages_.from_slabs = false; }
  // nghttp2_session_mem_send(session_, data), noting that frames were written.
  ssize_t SendFrames(const uint8_t** data);
  // The pages of nghttp2's frame buffer and empty stream map go back to the kernel when frames
  // were written since the last call and nghttp2 has nothing queued (the session was created with
  // session_allocator(); small_alloc.h, ReleaseIdlePages).
  void ReleaseIdleSessionPages();

  nghttp2_session* session_ = nullptr;

 private:
  // session_allocator()'s; outlives session_ (the destructor's body deletes it).
  SessionPages session_pages_;
  bool frames_written_ = false;  // nghttp2 wrote frames since the last ReleaseIdleSessionPages()
};

}  // namespace qpool::server

#endif  // QPOOL_DAEMON_SERVER_H2_SESSION_H_
