// The REST hot path's building blocks: LazyTimer (re-arming later costs nothing, earlier re-arms,
// Disarm and Stop) and fast_io's WriteAll (a socket that would block falls back to an
// asynchronous write that finishes the message). Real io_context, loopback sockets; every run is
// bounded by run_for.
#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <memory>
#include <string>

#include "daemon/rest/fast_io.h"
#include "daemon/rest/lazy_timer.h"

namespace qpool::rest {
namespace {

using namespace std::chrono_literals;
using boost::asio::ip::tcp;
namespace http = boost::beast::http;

struct Owner : std::enable_shared_from_this<Owner> {
  explicit Owner(boost::asio::io_context& io)
      : timer(io, [this] {
          fired++;
          fired_at = MonoClock::now();
        }) {}
  LazyTimer timer;
  int fired = 0;
  MonoTime fired_at{};
};

TEST(LazyTimerTest, ALaterExpiryMovesTheFiringLater) {
  boost::asio::io_context io;
  auto owner = std::make_shared<Owner>(io);
  const MonoTime start = MonoClock::now();
  owner->timer.ArmAt(start + 20ms, *owner);
  owner->timer.ArmAt(start + 80ms, *owner);  // recorded; the 20 ms wait waits again
  io.run_for(5s);                            // returns once nothing is pending
  EXPECT_EQ(owner->fired, 1);
  EXPECT_GE(owner->fired_at, start + 80ms);
  EXPECT_FALSE(owner->timer.armed());
}

TEST(LazyTimerTest, AnEarlierExpiryFiresEarly) {
  boost::asio::io_context io;
  auto owner = std::make_shared<Owner>(io);
  const MonoTime start = MonoClock::now();
  owner->timer.ArmAt(start + 10s, *owner);
  owner->timer.ArmAt(start + 10ms, *owner);
  io.run_for(5s);  // the 10 s wait was superseded: nothing keeps the loop busy after 10 ms
  EXPECT_EQ(owner->fired, 1);
  EXPECT_GE(owner->fired_at, start + 10ms);
  EXPECT_LT(owner->fired_at, start + 5s);
}

TEST(LazyTimerTest, DisarmRunsNothingAndStopReleasesTheOwnerAtOnce) {
  boost::asio::io_context io;
  auto owner = std::make_shared<Owner>(io);
  owner->timer.ArmAt(MonoClock::now() + 10ms, *owner);
  owner->timer.Disarm();
  io.run_for(5s);
  EXPECT_EQ(owner->fired, 0);

  io.restart();
  owner->timer.ArmAt(MonoClock::now() + 10s, *owner);
  EXPECT_EQ(owner.use_count(), 2);  // the pending wait holds the owner
  owner->timer.Stop();
  const MonoTime before = MonoClock::now();
  io.run_for(5s);  // the cancelled wait completes at once
  EXPECT_LT(MonoClock::now(), before + 5s);
  EXPECT_EQ(owner.use_count(), 1);
  EXPECT_EQ(owner->fired, 0);
}

TEST(LazyTimerTest, ReArmingFromTheCallbackWorks) {
  boost::asio::io_context io;
  struct Again : std::enable_shared_from_this<Again> {
    explicit Again(boost::asio::io_context& io)
        : timer(io, [this] {
            if (++fired < 3) timer.ArmAt(MonoClock::now() + 1ms, *this);
          }) {}
    LazyTimer timer;
    int fired = 0;
  };
  auto again = std::make_shared<Again>(io);
  again->timer.ArmAt(MonoClock::now() + 1ms, *again);
  io.run_for(5s);
  EXPECT_EQ(again->fired, 3);
}

TEST(FastIoTest, WriteAllFinishesAMessageTheSocketCannotTakeAtOnce) {
  boost::asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  tcp::socket writer(io);
  writer.connect(acceptor.local_endpoint());
  tcp::socket reader = acceptor.accept();
  // A small send buffer: 2 MiB of body cannot go out in one non-blocking send.
  writer.set_option(boost::asio::socket_base::send_buffer_size(16 * 1024));
  http::response<http::string_body> response(http::status::ok, 11);
  response.body() = std::string(2 << 20, 'x');
  response.prepare_payload();
  http::response_serializer<http::string_body> serializer(response);
  bool written = false;
  boost::system::error_code write_ec;
  WriteAll(writer, serializer, [&](boost::system::error_code ec, size_t) {
    written = true;
    write_ec = ec;
  });
  EXPECT_FALSE(written);  // would have blocked: the rest goes asynchronously
  EXPECT_TRUE(writer.non_blocking());

  // The reader drains on another strand of the same loop; Beast parses what arrived.
  boost::beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(16 << 20);
  bool read_done = false;
  ReadUntil(reader, buffer, parser, MessageDone{}, [&](boost::system::error_code ec, size_t) {
    EXPECT_FALSE(ec) << ec.message();
    read_done = true;
  });
  io.run_for(20s);
  EXPECT_TRUE(written);
  EXPECT_FALSE(write_ec) << write_ec.message();
  ASSERT_TRUE(read_done);
  EXPECT_EQ(parser.get().body().size(), size_t{2 << 20});
}

TEST(FastIoTest, ReadUntilParsesWhatIsBufferedWithoutReading) {
  boost::asio::io_context io;
  tcp::socket socket(io);  // never opened: a read on it would fail
  boost::beast::flat_buffer buffer;
  const std::string bytes = "GET /collections HTTP/1.1\r\nHost: x\r\n\r\nGET /next";
  buffer.commit(boost::asio::buffer_copy(buffer.prepare(bytes.size()), boost::asio::buffer(bytes)));
  http::request_parser<http::empty_body> parser;
  bool done = false;
  ReadUntil(socket, buffer, parser, HeaderDone{}, [&](boost::system::error_code ec, size_t) {
    EXPECT_FALSE(ec) << ec.message();
    done = true;
  });
  EXPECT_TRUE(done);  // inline: no read was needed
  EXPECT_EQ(parser.get().target(), "/collections");
  EXPECT_EQ(buffer.size(), std::string_view("GET /next").size());  // the next request stays
}

TEST(FastIoTest, ReadUntilReportsEndOfStreamBeforeAnyByte) {
  boost::asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  tcp::socket client(io);
  client.connect(acceptor.local_endpoint());
  tcp::socket server = acceptor.accept();
  client.close();
  boost::beast::flat_buffer buffer;
  http::request_parser<http::empty_body> parser;
  boost::system::error_code got;
  bool done = false;
  ReadUntil(server, buffer, parser, HeaderDone{}, [&](boost::system::error_code ec, size_t) {
    got = ec;
    done = true;
  });
  io.run_for(5s);
  ASSERT_TRUE(done);
  EXPECT_EQ(got, http::error::end_of_stream);
}

}  // namespace
}  // namespace qpool::rest
