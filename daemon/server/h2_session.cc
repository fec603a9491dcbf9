#include "daemon/server/h2_session.h"

namespace qpool::server {

H2Session::~H2Session() {
  if (session_ != nullptr) nghttp2_session_del(session_);
}

nghttp2_option* H2Session::NewSessionOption() {
  nghttp2_option* option;
  nghttp2_option_new(&option);
  nghttp2_option_set_no_auto_window_update(option, 1);
  return option;
}

void H2Session::OpenConnectionWindow(int32_t window) {
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, window);
}

void* H2Session::TakeDataChunk(nghttp2_session* session, int32_t stream_id, size_t len) {
  nghttp2_session_consume_connection(session, len);
  void* holder = nghttp2_session_get_stream_user_data(session, stream_id);
  if (holder == nullptr) nghttp2_session_consume_stream(session, stream_id, len);
  return holder;
}

ssize_t H2Session::SendFrames(const uint8_t** data) {
  const ssize_t n = nghttp2_session_mem_send(session_, data);
  if (n > 0) frames_written_ = true;
  return n;
}

void H2Session::ReleaseIdleSessionPages() {
  if (frames_written_ && session_ != nullptr && !nghttp2_session_want_write(session_)) {
    ReleaseIdlePages(session_pages_);
    frames_written_ = false;
  }
}

}  // namespace qpool::server
