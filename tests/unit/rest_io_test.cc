// The REST hot path's building blocks: LazyTimer (re-arming later costs nothing, earlier re-arms,
// Disarm and Stop), a session's SessionTimers (the phase timer, the request deadline), an
// upstream connection's RestConnector (up, refused, given up) and fast_io's re-entrant paths: a
// read that completes inline (all buffered) or only after waits (the message arrives in pieces), a
// pipelined second message left in the buffer and parsed without a read, a peer closing mid-body,
// writes a tiny socket buffer takes in parts (WriteAll, WriteBuffers). Real io_context, loopback
// sockets; every run is bounded by run_for.
#include <gtest/gtest.h>

#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/rest/fast_io.h"
#include "daemon/rest/inline_handler.h"
#include "daemon/rest/lazy_timer.h"
#include "daemon/rest/session_timers.h"
#include "daemon/rest/upstream_connector.h"

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

struct TimersOwner final : SessionTimersOwner, std::enable_shared_from_this<TimersOwner> {
  explicit TimersOwner(boost::asio::io_context& io) : timers(io, *this) {}
  std::shared_ptr<void> Hold() override { return shared_from_this(); }
  void OnPhaseTimeout(SessionPhase phase) override { phases.push_back(phase); }
  void OnDeadline() override { deadlines++; }
  SessionTimers timers;
  std::vector<SessionPhase> phases;
  int deadlines = 0;
};

TEST(SessionTimersTest, ThePhaseTimerReportsItsPhaseAndACancelledOneNothing) {
  boost::asio::io_context io;
  auto owner = std::make_shared<TimersOwner>(io);
  owner->timers.ArmPhase(10s, SessionPhase::kIdle);
  owner->timers.ArmPhase(5ms, SessionPhase::kHeader);  // re-armed for another phase, earlier
  io.run_for(5s);
  EXPECT_EQ(owner->phases, std::vector<SessionPhase>{SessionPhase::kHeader});

  io.restart();
  owner->timers.ArmPhase(5ms, SessionPhase::kBody);
  owner->timers.CancelPhase();
  io.run_for(5s);
  EXPECT_EQ(owner->phases.size(), 1u);
  EXPECT_EQ(owner->deadlines, 0);
}

TEST(SessionTimersTest, TheDeadlineFiresOnceAndAZeroBudgetSetsNone) {
  boost::asio::io_context io;
  auto owner = std::make_shared<TimersOwner>(io);
  owner->timers.StartDeadline(MonoClock::now(), Duration::zero(), /*callers=*/true);
  EXPECT_FALSE(owner->timers.deadline().has_value());
  EXPECT_TRUE(owner->timers.callers_deadline());

  const MonoTime now = MonoClock::now();
  owner->timers.StartDeadline(now, 5ms, /*callers=*/false);
  ASSERT_TRUE(owner->timers.deadline().has_value());
  EXPECT_EQ(*owner->timers.deadline(), now + 5ms);
  EXPECT_EQ(owner->timers.deadline_budget(), 5ms);
  EXPECT_FALSE(owner->timers.callers_deadline());
  io.run_for(5s);
  EXPECT_EQ(owner->deadlines, 1);
  EXPECT_TRUE(owner->phases.empty());

  // Disarmed (the answer started): nothing fires, and the deadline stays for the attempts.
  io.restart();
  owner->timers.StartDeadline(MonoClock::now(), 5ms, false);
  owner->timers.DisarmDeadline();
  io.run_for(5s);
  EXPECT_EQ(owner->deadlines, 1);
  EXPECT_TRUE(owner->timers.deadline().has_value());
  owner->timers.ForgetDeadline();
  EXPECT_FALSE(owner->timers.deadline().has_value());
}

TEST(SessionTimersTest, StopReleasesTheOwnerAtOnce) {
  boost::asio::io_context io;
  auto owner = std::make_shared<TimersOwner>(io);
  owner->timers.ArmPhase(10s, SessionPhase::kIdle);
  owner->timers.StartDeadline(MonoClock::now(), 10s, false);
  EXPECT_EQ(owner.use_count(), 3);  // each pending wait holds the owner
  owner->timers.Stop();
  const MonoTime before = MonoClock::now();
  io.run_for(5s);
  EXPECT_LT(MonoClock::now(), before + 5s);
  EXPECT_EQ(owner.use_count(), 1);
  EXPECT_TRUE(owner->phases.empty());
  EXPECT_EQ(owner->deadlines, 0);
}

struct ConnectorOwner final : RestConnectorOwner {
  void OnConnectorUp(std::unique_ptr<tls::TlsEngine> tls) override {
    ups++;
    up_with_tls = tls != nullptr;
  }
  void OnConnectorFailed(const absl::Status& reason) override { failures.push_back(reason); }
  int ups = 0;
  bool up_with_tls = false;
  std::vector<absl::Status> failures;
};

TEST(RestConnectorTest, ACleartextConnectionComesUpNonBlockingWithoutTls) {
  boost::asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  const config::NodeAddress node{"127.0.0.1", acceptor.local_endpoint().port()};
  const std::string name = node.ToString();
  RestStream stream(io);
  ConnectorOwner owner;
  RestConnector connector(io, node, name, 5s, stream, nullptr, nullptr, owner);
  auto keep = std::make_shared<int>(0);
  connector.Start(keep);
  EXPECT_EQ(owner.ups, 0);  // never from inside Start
  io.run_for(5s);           // the connect timer was cancelled: nothing keeps the loop busy
  EXPECT_EQ(owner.ups, 1);
  EXPECT_FALSE(owner.up_with_tls);
  EXPECT_TRUE(owner.failures.empty());
  EXPECT_TRUE(stream.socket().is_open());
  EXPECT_TRUE(stream.socket().non_blocking());
  EXPECT_EQ(keep.use_count(), 1);  // no operation holds it any more
}

TEST(RestConnectorTest, ARefusedConnectAndAGiveUpAreReportedOnce) {
  boost::asio::io_context io;
  uint16_t closed_port;
  {
    tcp::acceptor acceptor(io, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
    closed_port = acceptor.local_endpoint().port();
  }
  const config::NodeAddress node{"127.0.0.1", closed_port};
  const std::string name = node.ToString();
  RestStream stream(io);
  ConnectorOwner owner;
  RestConnector refused(io, node, name, 5s, stream, nullptr, nullptr, owner);
  refused.Start(nullptr);
  io.run_for(5s);
  ASSERT_EQ(owner.failures.size(), 1u);
  EXPECT_EQ(owner.failures[0].code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(owner.failures[0].message().find(name), std::string::npos);
  EXPECT_EQ(owner.ups, 0);

  // Given up while connecting: reported now, and what was pending does nothing.
  io.restart();
  RestStream other(io);
  ConnectorOwner gave_up;
  RestConnector connector(io, node, name, 5s, other, nullptr, nullptr, gave_up);
  connector.Start(nullptr);
  connector.Fail(absl::CancelledError("aborted"));
  ASSERT_EQ(gave_up.failures.size(), 1u);
  EXPECT_EQ(gave_up.failures[0].code(), absl::StatusCode::kCancelled);
  connector.Fail(absl::CancelledError("again"));  // done: no second report
  io.run_for(5s);
  EXPECT_EQ(gave_up.failures.size(), 1u);
  EXPECT_EQ(gave_up.ups, 0);
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

// A connected loopback pair on `io`.
struct Pair {
  explicit Pair(boost::asio::io_context& io)
      : acceptor(io, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0)), near(io) {
    near.connect(acceptor.local_endpoint());
    far = std::make_unique<tcp::socket>(acceptor.accept());
  }
  void Send(std::string_view bytes) {
    boost::asio::write(*far, boost::asio::buffer(bytes.data(), bytes.size()));
  }
  tcp::acceptor acceptor;
  tcp::socket near;
  std::unique_ptr<tcp::socket> far;
};

// A request whose header arrives in three pieces: the handler does not run inline (nothing is
// buffered), then runs once, after the loop read all three; the parse covers every piece.
TEST(FastIoTest, ReadUntilCompletesAfterWaitsWhenTheMessageArrivesInPieces) {
  boost::asio::io_context io;
  Pair pair(io);
  boost::beast::flat_buffer buffer;
  http::request_parser<http::empty_body> parser;
  int calls = 0;
  boost::system::error_code got;
  ReadUntil(pair.near, buffer, parser, HeaderDone{}, [&](boost::system::error_code ec, size_t) {
    got = ec;
    calls++;
  });
  EXPECT_EQ(calls, 0);  // nothing buffered: it waits
  const std::string pieces[] = {"GET /collections/c HT", "TP/1.1\r\nHost: x\r\nX-Lo",
                                "ng: yes\r\n\r\n"};
  for (const std::string& piece : pieces) {
    pair.Send(piece);
    io.run_for(50ms);  // the loop reads this piece; the header is not complete before the last
    if (&piece != &pieces[2]) EXPECT_EQ(calls, 0) << piece;
  }
  io.run_for(5s);  // returns at once when nothing is pending
  ASSERT_EQ(calls, 1);
  EXPECT_FALSE(got) << got.message();
  EXPECT_EQ(parser.get().target(), "/collections/c");
  EXPECT_EQ(parser.get()["X-Long"], "yes");
  EXPECT_EQ(buffer.size(), 0u);
}

// Two pipelined requests in one read: the first completes after a wait, the second is parsed from
// what the first read left in the buffer, inline (the socket is closed first: a read would fail).
TEST(FastIoTest, APipelinedSecondRequestIsParsedFromTheBufferInline) {
  boost::asio::io_context io;
  Pair pair(io);
  pair.Send(
      "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
      "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\ndefg");
  boost::beast::flat_buffer buffer;
  http::request_parser<http::string_body> first;
  first.eager(true);
  bool first_done = false;
  ReadUntil(pair.near, buffer, first, MessageDone{}, [&](boost::system::error_code ec, size_t) {
    EXPECT_FALSE(ec) << ec.message();
    first_done = true;
  });
  io.run_for(5s);
  ASSERT_TRUE(first_done);
  EXPECT_EQ(first.get().target(), "/a");
  EXPECT_EQ(first.get().body(), "abc");
  pair.near.close();
  http::request_parser<http::string_body> second;
  second.eager(true);
  bool second_done = false;
  ReadUntil(pair.near, buffer, second, MessageDone{}, [&](boost::system::error_code ec, size_t) {
    EXPECT_FALSE(ec) << ec.message();
    second_done = true;
  });
  EXPECT_TRUE(second_done);  // inline
  EXPECT_EQ(second.get().target(), "/b");
  EXPECT_EQ(second.get().body(), "defg");
  EXPECT_EQ(buffer.size(), 0u);
}

// The peer closes in the middle of a body of known length: partial_message, not success. A body
// delimited by the close (an answer without Content-Length) ends there: success.
TEST(FastIoTest, APeerClosingMidBodyIsAPartialMessage) {
  {
    boost::asio::io_context io;
    Pair pair(io);
    pair.Send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b");
    pair.far->close();
    boost::beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.eager(true);
    boost::system::error_code got;
    bool done = false;
    ReadUntil(pair.near, buffer, parser, MessageDone{}, [&](boost::system::error_code ec, size_t) {
      got = ec;
      done = true;
    });
    io.run_for(5s);
    ASSERT_TRUE(done);
    EXPECT_EQ(got, http::error::partial_message);
    EXPECT_FALSE(parser.is_done());
  }
  {
    boost::asio::io_context io;
    Pair pair(io);
    pair.Send("HTTP/1.1 200 OK\r\n\r\nclose-delimited");
    pair.far->close();
    boost::beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.eager(true);
    boost::system::error_code got;
    bool done = false;
    ReadUntil(pair.near, buffer, parser, MessageDone{}, [&](boost::system::error_code ec, size_t) {
      got = ec;
      done = true;
    });
    io.run_for(5s);
    ASSERT_TRUE(done);
    EXPECT_FALSE(got) << got.message();
    EXPECT_TRUE(parser.is_done());
    EXPECT_EQ(parser.get().body(), "close-delimited");
  }
}

// WriteBuffers through a tiny send buffer to a reader that reads in small pieces: the first send
// takes part, the rest goes asynchronously, in order, each byte once. A small write that fits
// completes inline.
TEST(FastIoTest, WriteBuffersFinishesInPartsThroughATinySocketBuffer) {
  boost::asio::io_context io;
  Pair pair(io);
  pair.near.set_option(boost::asio::socket_base::send_buffer_size(4096));
  const std::string head = "head:";
  std::string body(512 << 10, '\0');
  for (size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>('a' + (i * 7) % 26);
  const std::string tail = ":tail";
  bool written = false;
  boost::system::error_code write_ec;
  WriteBuffers(pair.near,
               std::array<boost::asio::const_buffer, 3>{
                   boost::asio::buffer(head), boost::asio::buffer(body), boost::asio::buffer(tail)},
               [&](boost::system::error_code ec, size_t) {
                 written = true;
                 write_ec = ec;
               });
  EXPECT_FALSE(written);  // the socket took only part of it
  std::string received;
  std::array<char, 4096> chunk;  // small reads: the writer meets a full socket many times
  std::function<void()> read_more = [&] {
    pair.far->async_read_some(
        boost::asio::buffer(chunk), [&](boost::system::error_code ec, size_t n) {
          received.append(chunk.data(), n);
          if (!ec && received.size() < head.size() + body.size() + tail.size()) {
            read_more();
          }
        });
  };
  read_more();
  io.run_for(20s);
  EXPECT_TRUE(written);
  EXPECT_FALSE(write_ec) << write_ec.message();
  EXPECT_EQ(received, head + body + tail);

  bool small_written = false;
  WriteHeadAndBody(pair.near, boost::asio::buffer(head), boost::asio::buffer(tail),
                   [&](boost::system::error_code ec, size_t) {
                     EXPECT_FALSE(ec) << ec.message();
                     small_written = true;
                   });
  EXPECT_TRUE(small_written);  // inline: the socket took it whole
}

// A write to a peer that has gone (reset) fails inline or at once, with the error, exactly once.
TEST(FastIoTest, WriteToAResetPeerReportsTheErrorOnce) {
  boost::asio::io_context io;
  Pair pair(io);
  pair.far->set_option(boost::asio::socket_base::linger(true, 0));
  pair.far->close();  // RST
  int calls = 0;
  boost::system::error_code got;
  const std::string bytes(64 * 1024, 'x');
  // The first write may still be taken by the kernel before the reset is seen; the next fails.
  int writes = 0;
  for (int i = 0; i < 2 && !got; ++i) {
    writes++;
    WriteHeadAndBody(pair.near, boost::asio::buffer(bytes), boost::asio::buffer(bytes),
                     [&](boost::system::error_code ec, size_t) {
                       got = ec;
                       calls++;
                     });
    io.run_for(1s);
  }
  EXPECT_TRUE(got == boost::asio::error::connection_reset || got == boost::asio::error::broken_pipe)
      << got.message();
  EXPECT_EQ(calls, writes);  // each write's handler ran once
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

TEST(InlineHandlerTest, RunsOnceAndMayHoldTheNextFromInside) {
  InlineHandler<64> pending;
  EXPECT_FALSE(pending);
  std::vector<int> runs;
  auto held = std::make_shared<int>(1);
  pending.Emplace([&, held](boost::system::error_code ec) {
    runs.push_back(ec ? 1 : 0);
    pending.Emplace([&](boost::system::error_code) { runs.push_back(2); });
  });
  EXPECT_TRUE(pending);
  EXPECT_EQ(held.use_count(), 2);
  pending(boost::asio::error::eof);
  EXPECT_EQ(runs, (std::vector<int>{1}));
  EXPECT_EQ(held.use_count(), 1);  // the first handler is gone once it ran
  EXPECT_TRUE(pending);            // the one it left
  pending({});
  pending({});  // empty: nothing
  EXPECT_EQ(runs, (std::vector<int>{1, 2}));
  EXPECT_FALSE(pending);
}

TEST(InlineHandlerTest, ResetAndDestructionDropTheHandlerUnrun) {
  auto held = std::make_shared<int>(1);
  bool ran = false;
  {
    InlineHandler<64> pending;
    pending.Emplace([&ran, held](boost::system::error_code) { ran = true; });
    pending.Reset();
    EXPECT_FALSE(pending);
    EXPECT_EQ(held.use_count(), 1);
    pending.Emplace([&ran, held](boost::system::error_code) { ran = true; });
    EXPECT_EQ(held.use_count(), 2);
  }
  EXPECT_EQ(held.use_count(), 1);
  EXPECT_FALSE(ran);
}

}  // namespace
}  // namespace qpool::rest
