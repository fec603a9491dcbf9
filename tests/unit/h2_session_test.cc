// H2Session, the nghttp2 session under every H2Transport, without a socket: a client session made
// with the shared options and allocator, talking to an nghttp2 server session in memory. With
// NewSessionOption nothing is acknowledged by itself; TakeDataChunk acknowledges a DATA chunk on
// the connection at once, and on the stream only when nothing holds the stream (its attempt let
// go); OpenConnectionWindow sets the connection's window.
#include "daemon/server/h2_session.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "gtest/gtest.h"

namespace qpool::server {
namespace {

nghttp2_nv Nv(const char* name, const char* value) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(name)),
          reinterpret_cast<uint8_t*>(const_cast<char*>(value)), strlen(name), strlen(value),
          NGHTTP2_NV_FLAG_NONE};
}

// The client side as UpstreamConnection makes it, with its DATA chunk callback.
class ClientSession : public H2Session {
 public:
  ClientSession() {
    nghttp2_session_callbacks* callbacks;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        callbacks, [](nghttp2_session* session, uint8_t, int32_t stream_id, const uint8_t*,
                      size_t len, void* user_data) {
          static_cast<ClientSession*>(user_data)->held_ +=
              TakeDataChunk(session, stream_id, len) != nullptr;
          return 0;
        });
    nghttp2_option* option = NewSessionOption();
    nghttp2_mem allocator = session_allocator();
    nghttp2_session_client_new3(&session_, callbacks, this, option, &allocator);
    SessionCreated();
    nghttp2_option_del(option);
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, nullptr, 0);
    nghttp2_session_callbacks_del(callbacks);
  }
  static constexpr int32_t kUnbounded = kUnboundedConnectionWindow;
  nghttp2_session* session() const { return session_; }
  void OpenWindow(int32_t window) { OpenConnectionWindow(window); }
  int held() const { return held_; }

 private:
  int held_ = 0;  // chunks whose stream had a holder
};

class H2SessionTest : public ::testing::Test {
 protected:
  H2SessionTest() {
    nghttp2_session_callbacks* callbacks;
    nghttp2_session_callbacks_new(&callbacks);
    // Answers each request with `body_`.
    nghttp2_session_callbacks_set_on_frame_recv_callback(
        callbacks, [](nghttp2_session* session, const nghttp2_frame* frame, void* user_data) {
          if (frame->hd.type != NGHTTP2_HEADERS) return 0;
          nghttp2_data_provider provider{};
          provider.source.ptr = user_data;
          provider.read_callback = [](nghttp2_session*, int32_t, uint8_t* buf, size_t length,
                                      uint32_t* flags, nghttp2_data_source* source,
                                      void*) -> ssize_t {
            const std::string& body = static_cast<H2SessionTest*>(source->ptr)->body_;
            auto* test = static_cast<H2SessionTest*>(source->ptr);
            const size_t n = std::min(length, body.size() - test->body_sent_);
            std::memcpy(buf, body.data() + test->body_sent_, n);
            test->body_sent_ += n;
            if (test->body_sent_ == body.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
            return static_cast<ssize_t>(n);
          };
          const nghttp2_nv nva[] = {Nv(":status", "200")};
          nghttp2_submit_response(session, frame->hd.stream_id, nva, 1, &provider);
          return 0;
        });
    nghttp2_session_server_new(&server_, callbacks, this);
    nghttp2_session_callbacks_del(callbacks);
    nghttp2_submit_settings(server_, NGHTTP2_FLAG_NONE, nullptr, 0);
  }
  ~H2SessionTest() override { nghttp2_session_del(server_); }

  // A request whose body never comes, so that its stream stays open after the answer.
  int32_t Request(void* holder) {
    const nghttp2_nv nva[] = {Nv(":method", "POST"), Nv(":scheme", "http"), Nv(":path", "/"),
                              Nv(":authority", "n")};
    nghttp2_data_provider provider{};
    provider.read_callback = [](nghttp2_session*, int32_t, uint8_t*, size_t, uint32_t*,
                                nghttp2_data_source*,
                                void*) -> ssize_t { return NGHTTP2_ERR_DEFERRED; };
    return nghttp2_submit_request(client_.session(), nullptr, nva, 4, &provider, holder);
  }
  // Moves bytes both ways until neither side has anything to send.
  void Exchange() {
    for (bool moved = true; moved;) {
      const bool to_server = Pass(client_.session(), server_);
      const bool to_client = Pass(server_, client_.session());
      moved = to_server || to_client;
    }
  }
  static bool Pass(nghttp2_session* from, nghttp2_session* to) {
    bool moved = false;
    for (;;) {
      const uint8_t* data = nullptr;
      const ssize_t n = nghttp2_session_mem_send(from, &data);
      if (n <= 0) return moved;
      EXPECT_EQ(nghttp2_session_mem_recv(to, data, static_cast<size_t>(n)), n);
      moved = true;
    }
  }

  std::string body_ = std::string(32768, 'a');
  size_t body_sent_ = 0;
  nghttp2_session* server_ = nullptr;
  ClientSession client_;
};

// A 32 KiB answer is half of the default 64 KiB windows: acknowledging all of it sends a
// WINDOW_UPDATE, which brings the unacknowledged count back to zero.
TEST_F(H2SessionTest, ChunkOfAHeldStreamIsAcknowledgedOnTheConnectionOnly) {
  int holder = 0;
  const int32_t id = Request(&holder);
  Exchange();
  EXPECT_GT(client_.held(), 0);
  EXPECT_EQ(nghttp2_session_get_effective_recv_data_length(client_.session()), 0);
  EXPECT_EQ(nghttp2_session_get_stream_effective_recv_data_length(client_.session(), id), 32768)
      << "the stream waits for its attempt to pass the bytes on";
}

TEST_F(H2SessionTest, ChunkOfAStreamNobodyHoldsIsAcknowledgedOnTheStreamToo) {
  const int32_t id = Request(nullptr);
  Exchange();
  EXPECT_EQ(client_.held(), 0);
  EXPECT_EQ(nghttp2_session_get_effective_recv_data_length(client_.session()), 0);
  EXPECT_EQ(nghttp2_session_get_stream_effective_recv_data_length(client_.session(), id), 0);
}

TEST_F(H2SessionTest, OpenConnectionWindowSetsTheConnectionWindow) {
  client_.OpenWindow(ClientSession::kUnbounded);
  EXPECT_EQ(nghttp2_session_get_local_window_size(client_.session()), ClientSession::kUnbounded);
}

}  // namespace
}  // namespace qpool::server
