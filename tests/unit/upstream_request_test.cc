// UpstreamRequest, the request as qpoold holds it, driven by hand as the call and its attempts
// drive it: the app's bytes in (Append, End), an attempt's data source out (Read, ReadHedgeCopy),
// a retry's Rewind, the commit point, Drop. A fake RequestWindow records the credit the app gets;
// no sockets, no nghttp2 session.
#include "daemon/server/upstream_request.h"

#include <nghttp2/nghttp2.h>

#include <atomic>
#include <string>
#include <string_view>

#include "gtest/gtest.h"

namespace qpool::server {
namespace {

// The app's stream as the request sees it: records the credit given back.
class FakeWindow : public RequestWindow {
 public:
  void AcknowledgeRequestBytes(size_t n) override { credited += n; }
  size_t credited = 0;
};

retry::ReplayLimits Limits(std::atomic<int64_t>* total) {
  retry::ReplayLimits limits;
  limits.total_bytes = total;
  return limits;
}

class UpstreamRequestTest : public ::testing::Test {
 protected:
  UpstreamRequestTest() { request_.EndHeaders(); }

  // The app sends `bytes`.
  void Send(std::string_view bytes) {
    EXPECT_TRUE(request_.Append(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  }
  // An attempt's data source is read once for up to `max` bytes (the hedge's own copy with
  // `hedge`); `*eof` tells whether it set NGHTTP2_DATA_FLAG_EOF. "deferred" for
  // NGHTTP2_ERR_DEFERRED.
  std::string Read(size_t max, bool* eof = nullptr, bool hedge = false) {
    std::string buf(max, '\0');
    uint32_t flags = 0;
    auto* out = reinterpret_cast<uint8_t*>(buf.data());
    const ssize_t n =
        hedge ? request_.ReadHedgeCopy(out, max, &flags) : request_.Read(out, max, &flags);
    if (eof != nullptr) *eof = (flags & NGHTTP2_DATA_FLAG_EOF) != 0;
    if (n == NGHTTP2_ERR_DEFERRED) return "deferred";
    buf.resize(static_cast<size_t>(n));
    return buf;
  }

  std::atomic<int64_t> buffered_{0};      // unsent bytes (ProxyCounters::buffered_bytes)
  std::atomic<int64_t> replay_bytes_{0};  // replay copies (ReplayLimits::total_bytes)
  retry::ReplayLimits limits_ = Limits(&replay_bytes_);
  FakeWindow window_;
  UpstreamRequest request_{window_, &buffered_, limits_, nullptr};
};

TEST_F(UpstreamRequestTest, TheAppGetsCreditOnlyForTheBytesForwarded) {
  Send("0123456789");
  EXPECT_EQ(window_.credited, 0u);  // held, not sent: the window stays closed by them
  EXPECT_EQ(buffered_.load(), 10);

  EXPECT_EQ(Read(4), "0123");
  EXPECT_EQ(window_.credited, 4u);
  EXPECT_EQ(buffered_.load(), 6);
  bool eof = true;
  EXPECT_EQ(Read(100, &eof), "456789");
  EXPECT_FALSE(eof);  // the app has not ended the request
  EXPECT_EQ(window_.credited, 10u);
  EXPECT_EQ(buffered_.load(), 0);
}

TEST_F(UpstreamRequestTest, TheDataSourceWaitsForMoreAndEndsAtTheAppsEnd) {
  EXPECT_EQ(Read(16), "deferred");
  Send("ab");
  EXPECT_TRUE(request_.HasBodyToSend(/*hedge=*/false));
  EXPECT_TRUE(request_.End());
  EXPECT_FALSE(request_.AllSent());
  bool eof = false;
  EXPECT_EQ(Read(16, &eof), "ab");
  EXPECT_TRUE(eof);
  EXPECT_TRUE(request_.AllSent());
  EXPECT_FALSE(request_.HasBodyToSend(/*hedge=*/false));
}

TEST_F(UpstreamRequestTest, ARetrySendsTheSameBytesAgainWithoutCreditingThemTwice) {
  Send("hello");
  EXPECT_EQ(Read(100), "hello");
  EXPECT_EQ(window_.credited, 5u);
  Send(" world");  // arrives while the first attempt fails

  ASSERT_TRUE(request_.CanReplay());
  request_.Rewind();
  EXPECT_EQ(request_.unsent_bytes(), 11u);
  EXPECT_EQ(Read(100), "hello world");
  EXPECT_EQ(window_.credited, 11u);  // "hello" once, " world" once
}

TEST_F(UpstreamRequestTest, TheReplayCopyHoldsEveryByteSentUntilTheCommitPoint) {
  Send("abc");
  EXPECT_EQ(Read(2), "ab");
  Send("def");
  EXPECT_EQ(Read(100), "cdef");
  EXPECT_TRUE(request_.CanReplay());
  EXPECT_EQ(replay_bytes_.load(), 6);

  request_.Rewind();  // a second attempt gets all of it, in order
  EXPECT_EQ(Read(100), "abcdef");
  EXPECT_TRUE(request_.CanReplay());
  EXPECT_EQ(replay_bytes_.load(), 6);

  request_.Commit();
  EXPECT_FALSE(request_.CanReplay());
  EXPECT_EQ(replay_bytes_.load(), 0);
  Send("g");  // bytes after the commit point still go, without a copy
  EXPECT_EQ(Read(100), "g");
  EXPECT_EQ(replay_bytes_.load(), 0);
}

TEST_F(UpstreamRequestTest, AHedgeReadsItsOwnCopyOfTheWholeRequest) {
  Send("abcdef");
  ASSERT_TRUE(request_.End());
  bool eof = false;
  EXPECT_EQ(Read(100, &eof), "abcdef");
  ASSERT_TRUE(eof);

  request_.CopyForHedge();
  EXPECT_TRUE(request_.HasBodyToSend(/*hedge=*/true));
  EXPECT_EQ(Read(4, &eof, /*hedge=*/true), "abcd");
  EXPECT_FALSE(eof);
  EXPECT_EQ(Read(100, &eof, /*hedge=*/true), "ef");
  EXPECT_TRUE(eof);
  EXPECT_EQ(window_.credited, 6u);  // the app had its credit for these bytes already
  // The primary's side is as it was: all sent, and the replay copy still whole.
  EXPECT_EQ(Read(100, &eof), "");
  EXPECT_TRUE(eof);
  ASSERT_TRUE(request_.CanReplay());
  request_.Rewind();
  EXPECT_EQ(Read(100), "abcdef");
  EXPECT_EQ(window_.credited, 6u);
}

TEST_F(UpstreamRequestTest, DropReleasesEverythingAndTheAppSendsOn) {
  Send("abcdef");
  EXPECT_EQ(Read(2), "ab");
  ASSERT_EQ(window_.credited, 2u);

  request_.Drop();
  EXPECT_EQ(request_.state(), UpstreamRequest::State::kDropped);
  EXPECT_EQ(window_.credited, 6u);  // the unsent bytes too
  EXPECT_EQ(buffered_.load(), 0);
  EXPECT_EQ(replay_bytes_.load(), 0);
  EXPECT_FALSE(request_.CanReplay());

  // What the app sends from now on is credited at once and kept nowhere.
  EXPECT_FALSE(request_.Append(reinterpret_cast<const uint8_t*>("xyz"), 3));
  EXPECT_EQ(window_.credited, 9u);
  EXPECT_EQ(buffered_.load(), 0);
  EXPECT_FALSE(request_.End());
  EXPECT_EQ(request_.state(), UpstreamRequest::State::kDropped);
}

TEST_F(UpstreamRequestTest, DropAfterARewindCreditsTheRewoundBytesOnce) {
  Send("abcd");
  EXPECT_EQ(Read(100), "abcd");
  request_.Rewind();  // the four bytes are unsent again; the app had its credit for them
  request_.Drop();
  EXPECT_EQ(window_.credited, 4u);
}

}  // namespace
}  // namespace qpool::server
