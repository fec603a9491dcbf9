// The stall watch behind server.stream_idle_timeout (daemon/server/stream_guard.h), and the
// per-connection total a ByteQueue keeps for server.connection_buffer_limit (byte_queue.h).
#include "daemon/server/stream_guard.h"

#include <chrono>
#include <string>

#include "daemon/common/byte_queue.h"
#include "gtest/gtest.h"

namespace qpool::server {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const MonoTime kStart = MonoTime{} + std::chrono::hours(1);
constexpr Duration kTimeout = seconds(30);

TEST(StreamStallWatchTest, StalledOnlyAfterTheTimeoutWithoutProgress) {
  StreamStallWatch watch;
  EXPECT_FALSE(watch.Stalled(true, kStart, kTimeout));  // first seen waiting: the clock starts
  EXPECT_FALSE(watch.Stalled(true, kStart + seconds(29), kTimeout));
  EXPECT_TRUE(watch.Stalled(true, kStart + seconds(30), kTimeout));
}

TEST(StreamStallWatchTest, ProgressRestartsTheClock) {
  StreamStallWatch watch;
  EXPECT_FALSE(watch.Stalled(true, kStart, kTimeout));
  watch.OnProgress();  // a byte read or written in between
  EXPECT_FALSE(watch.Stalled(true, kStart + seconds(31), kTimeout));
  EXPECT_FALSE(watch.Stalled(true, kStart + seconds(32), kTimeout));  // stalled from here
  EXPECT_FALSE(watch.Stalled(true, kStart + seconds(61), kTimeout));
  EXPECT_TRUE(watch.Stalled(true, kStart + seconds(62), kTimeout));
}

TEST(StreamStallWatchTest, WaitingOnTheUpstreamNeverCounts) {
  StreamStallWatch watch;
  // The request is complete and nothing waits for the app: Qdrant takes its time.
  for (int i = 0; i < 100; ++i) {
    EXPECT_FALSE(watch.Stalled(false, kStart + seconds(i), kTimeout)) << i;
  }
  // Then the answer waits for a reader that does not read.
  EXPECT_FALSE(watch.Stalled(true, kStart + seconds(100), kTimeout));
  EXPECT_TRUE(watch.Stalled(true, kStart + seconds(130), kTimeout));
}

TEST(StreamStallWatchTest, AWaitOnTheUpstreamInBetweenRestartsTheClock) {
  StreamStallWatch watch;
  EXPECT_FALSE(watch.Stalled(true, kStart, kTimeout));
  EXPECT_FALSE(watch.Stalled(false, kStart + seconds(20), kTimeout));
  EXPECT_FALSE(watch.Stalled(true, kStart + seconds(40), kTimeout));
  EXPECT_FALSE(watch.Stalled(true, kStart + seconds(69), kTimeout));
  EXPECT_TRUE(watch.Stalled(true, kStart + seconds(70), kTimeout));
}

TEST(StreamStallWatchTest, ReasonNamesAreTheMetricLabels) {
  EXPECT_EQ(StreamResetReasonName(StreamResetReason::kBufferLimit), "buffer_limit");
  EXPECT_EQ(StreamResetReasonName(StreamResetReason::kStreamIdle), "stream_idle");
  EXPECT_EQ(StreamResetReasonName(StreamResetReason::kMessageSize), "message_size");
}

// A gRPC frame prefix: flag byte, then the length, big-endian.
std::string Prefix(uint32_t length) {
  return {'\0', static_cast<char>(length >> 24), static_cast<char>(length >> 16),
          static_cast<char>(length >> 8), static_cast<char>(length)};
}

bool Feed(GrpcMessageSizeGuard& guard, const std::string& bytes, uint32_t limit) {
  return guard.Feed(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), limit);
}

TEST(GrpcMessageSizeGuardTest, PassesMessagesUpToTheLimit) {
  GrpcMessageSizeGuard guard;
  EXPECT_TRUE(Feed(guard, Prefix(100) + std::string(100, 'x'), 100));
  EXPECT_TRUE(Feed(guard, Prefix(0) + Prefix(3) + "abc", 100));  // more messages follow
}

TEST(GrpcMessageSizeGuardTest, StopsAtTheFirstPrefixOverTheLimit) {
  GrpcMessageSizeGuard guard;
  EXPECT_TRUE(Feed(guard, Prefix(10) + std::string(10, 'x'), 100));
  EXPECT_FALSE(Feed(guard, Prefix(101), 100));
  EXPECT_EQ(guard.declared(), 101u);
  EXPECT_FALSE(Feed(guard, "more", 100));  // stays over
}

TEST(GrpcMessageSizeGuardTest, APrefixSplitAcrossChunksIsStillRead) {
  GrpcMessageSizeGuard guard;
  const std::string bytes = Prefix(50) + std::string(50, 'x') + Prefix(0xFFFFFFFFu);
  // One byte at a time: every split of the prefixes and bodies.
  size_t i = 0;
  for (; i < bytes.size() - 1; ++i) ASSERT_TRUE(Feed(guard, bytes.substr(i, 1), 1000)) << i;
  EXPECT_FALSE(Feed(guard, bytes.substr(i, 1), 1000));
  EXPECT_EQ(guard.declared(), 0xFFFFFFFFu);  // a 4 GiB prefix: caught before any body
}

TEST(ByteQueueTest, LocalTotalFollowsEveryQueueOfTheConnection) {
  std::atomic<int64_t> process{0};
  int64_t connection = 0;
  {
    ByteQueue a(&process, &connection);
    ByteQueue b(&process, &connection);
    const std::string bytes(100000, 'x');
    a.Append(reinterpret_cast<const uint8_t*>(bytes.data()), 70000);
    b.Append(reinterpret_cast<const uint8_t*>(bytes.data()), 30000);
    EXPECT_EQ(connection, 100000);
    EXPECT_EQ(process.load(), 100000);
    uint8_t out[5000];
    EXPECT_EQ(a.Read(out, sizeof(out)), sizeof(out));
    EXPECT_EQ(connection, 95000);
    ByteQueue c(&process, &connection);
    c.PrependFrom(b);  // moved within the connection: the total stays
    EXPECT_EQ(connection, 95000);
  }
  EXPECT_EQ(connection, 0);  // destroyed queues give their bytes back
  EXPECT_EQ(process.load(), 0);
}

}  // namespace
}  // namespace qpool::server
