// WireBuffer, bytes waiting for a socket, on a loopback TCP pair: a write the socket takes whole
// leaves nothing pending; a full socket is not an error, and the rest stays, in order, for the
// next write; storage goes back only when nothing is pending.
#include "daemon/server/wire_buffer.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <vector>

#include "gtest/gtest.h"

namespace qpool::server {
namespace {

using boost::asio::ip::tcp;

class WireBufferTest : public ::testing::Test {
 protected:
  WireBufferTest() : writer_(io_), reader_(io_) {
    tcp::acceptor acceptor(io_, tcp::endpoint(boost::asio::ip::address_v4::loopback(), 0));
    writer_.connect(acceptor.local_endpoint());
    acceptor.accept(reader_);
    writer_.non_blocking(true);
  }

  std::vector<uint8_t> Read(size_t n) {
    std::vector<uint8_t> got(n);
    boost::asio::read(reader_, boost::asio::buffer(got));
    return got;
  }

  boost::asio::io_context io_;
  tcp::socket writer_;
  tcp::socket reader_;
  WireBuffer buffer_;
};

TEST_F(WireBufferTest, WholeWriteLeavesNothingPending) {
  const std::vector<uint8_t> bytes = {1, 2, 3, 4, 5};
  buffer_.Append(bytes.data(), bytes.size());
  EXPECT_EQ(buffer_.pending(), 5u);
  EXPECT_FALSE(buffer_.WriteTo(writer_));
  EXPECT_EQ(buffer_.pending(), 0u);
  EXPECT_EQ(Read(5), bytes);
}

TEST_F(WireBufferTest, FullSocketKeepsTheRestInOrder) {
  writer_.set_option(tcp::socket::send_buffer_size(4096));
  std::vector<uint8_t> bytes(8 << 20);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7);
  buffer_.Append(bytes.data(), bytes.size());
  // Write until the socket takes nothing more: the last writes meet would_block.
  size_t before = 0;
  for (int i = 0; i < 100 && buffer_.pending() != before; ++i) {
    before = buffer_.pending();
    EXPECT_FALSE(buffer_.WriteTo(writer_)) << "a full socket (would_block) is not an error";
  }
  ASSERT_EQ(buffer_.pending(), before) << "the socket never filled up";
  const size_t written = bytes.size() - buffer_.pending();
  ASSERT_GT(buffer_.pending(), 0u) << "the socket took 8 MiB: the test proves nothing";
  EXPECT_EQ(buffer_.unsent()[0], bytes[written]);
  buffer_.ShrinkTo(0);
  EXPECT_EQ(buffer_.pending(), bytes.size() - written) << "shrinking never drops pending bytes";
  EXPECT_EQ(Read(written), std::vector<uint8_t>(bytes.begin(), bytes.begin() + written));
}

TEST_F(WireBufferTest, ShrinkGivesStorageBackWhenIdle) {
  std::vector<uint8_t> bytes(1000, 9);
  buffer_.Append(bytes.data(), bytes.size());
  ASSERT_FALSE(buffer_.WriteTo(writer_));
  ASSERT_EQ(buffer_.pending(), 0u);
  buffer_.ShrinkTo(2000);
  EXPECT_GE(buffer_.bytes().capacity(), 1000u) << "under the limit: kept for the next batch";
  buffer_.ShrinkTo(0);
  EXPECT_EQ(buffer_.bytes().capacity(), 0u);
}

}  // namespace
}  // namespace qpool::server
