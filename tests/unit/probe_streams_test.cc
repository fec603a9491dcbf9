// ProbeStreams, the health probes' streams on one upstream connection, on a client nghttp2 session
// without a socket: a probe's stream is found by its id, its body goes out whole (in several DATA
// frames when large), Take forgets it, FailAll tells every probe its connection is lost.
#include "daemon/server/probe_streams.h"

#include <nghttp2/nghttp2.h>

#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace qpool::server {
namespace {

class RecordingProbe : public ProbeStream {
 public:
  void OnProbeHeader(std::string_view, std::string_view) override {}
  void OnProbeData(const uint8_t*, size_t) override {}
  void OnProbeClosed(uint32_t h2_error_code, bool connection_lost) override {
    closes.emplace_back(h2_error_code, connection_lost);
  }
  std::vector<std::pair<uint32_t, bool>> closes;
};

nghttp2_nv Nv(const char* name, const char* value) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(name)),
          reinterpret_cast<uint8_t*>(const_cast<char*>(value)), strlen(name), strlen(value),
          NGHTTP2_NV_FLAG_NONE};
}

class ProbeStreamsTest : public ::testing::Test {
 protected:
  ProbeStreamsTest() {
    nghttp2_session_callbacks* callbacks;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_client_new(&session_, callbacks, nullptr);
    nghttp2_session_callbacks_del(callbacks);
  }
  ~ProbeStreamsTest() override { nghttp2_session_del(session_); }

  int32_t Submit(ProbeStream& probe) {
    const nghttp2_nv nva[] = {Nv(":method", "POST"), Nv(":scheme", "http"),
                              Nv(":path", "/qdrant.Qdrant/HealthCheck"), Nv(":authority", "n")};
    return probes_.Submit(session_, probe, nva, 4);
  }
  // Everything the session has to send; returns the byte count.
  size_t SendAll() {
    size_t total = 0;
    for (;;) {
      const uint8_t* data = nullptr;
      const ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n <= 0) return total;
      total += static_cast<size_t>(n);
    }
  }

  nghttp2_session* session_ = nullptr;
  ProbeStreams probes_;
};

TEST_F(ProbeStreamsTest, FindsAProbeByItsStreamId) {
  RecordingProbe a, b;
  const int32_t id_a = Submit(a);
  const int32_t id_b = Submit(b);
  ASSERT_GT(id_a, 0);
  ASSERT_GT(id_b, 0);
  EXPECT_EQ(probes_.Of(id_a), &a);
  EXPECT_EQ(probes_.Of(id_b), &b);
  EXPECT_EQ(probes_.Of(id_b + 2), nullptr);
  EXPECT_EQ(nghttp2_session_get_stream_user_data(session_, id_a), nullptr)
      << "the user data slot is for a call's Attempt";
}

TEST_F(ProbeStreamsTest, SendsTheBodyWholeAndEndsTheStream) {
  RecordingProbe probe;
  probe.request_body = std::string(40000, 'x');  // three DATA frames at the default 16 KiB
  const int32_t id = Submit(probe);
  ASSERT_GT(id, 0);
  EXPECT_GT(SendAll(), 40000u);
  EXPECT_EQ(probe.request_sent, 40000u);
  EXPECT_EQ(nghttp2_session_get_stream_local_close(session_, id), 1) << "END_STREAM sent";
}

TEST_F(ProbeStreamsTest, TakeForgetsTheProbe) {
  RecordingProbe probe;
  const int32_t id = Submit(probe);
  EXPECT_FALSE(probes_.empty());
  EXPECT_EQ(probes_.Take(id), &probe);
  EXPECT_EQ(probes_.Of(id), nullptr);
  EXPECT_EQ(probes_.Take(id), nullptr);
  EXPECT_TRUE(probes_.empty());
  EXPECT_TRUE(probe.closes.empty());
}

TEST_F(ProbeStreamsTest, FailAllClosesEveryProbeAsConnectionLost) {
  RecordingProbe a, b;
  const int32_t id_a = Submit(a);
  Submit(b);
  probes_.FailAll();
  EXPECT_TRUE(probes_.empty());
  EXPECT_EQ(probes_.Of(id_a), nullptr);
  ASSERT_EQ(a.closes.size(), 1u);
  EXPECT_EQ(a.closes[0], std::make_pair(uint32_t{NGHTTP2_INTERNAL_ERROR}, true));
  ASSERT_EQ(b.closes.size(), 1u);
  EXPECT_EQ(b.closes[0], std::make_pair(uint32_t{NGHTTP2_INTERNAL_ERROR}, true));
}

}  // namespace
}  // namespace qpool::server
