// PingKeepalive, the fast health tier of one upstream connection, on the fake clock: a PING only
// after a quiet interval, none while frames arrive, the connection closed when the PING goes
// unanswered, the next interval read from the schedule (its back-off), nothing after Stop().
#include "daemon/server/ping_keepalive.h"

#include <chrono>
#include <string>
#include <vector>

#include "daemon/metrics/worker_metrics.h"
#include "gtest/gtest.h"
#include "tests/unit/fake_event_loop.h"

namespace qpool::server {
namespace {

using namespace std::chrono_literals;
using ::qpool::testing::FakeEventLoop;

class FakeSchedule : public PingSchedule {
 public:
  Duration PingInterval(size_t) const override { return interval; }
  Duration PingTimeout() const override { return timeout; }

  Duration interval = 10s;
  Duration timeout = 1s;
};

class PingKeepaliveTest : public ::testing::Test {
 protected:
  PingKeepaliveTest()
      : keepalive_(loop_, schedule_, 0, metrics_,
                   {/*send_ping=*/[this] {
                      ++pings_;
                      return accept_ping_;
                    },
                    /*close=*/[this](const absl::Status& why) { closes_.push_back(why); }}) {}

  // Connected, then quiet for one interval: the first PING is out.
  void StartAndPing() {
    keepalive_.Start();
    loop_.Advance(schedule_.interval);
    ASSERT_EQ(pings_, 1);
  }

  // The next PING goes out exactly `after` from now, not a millisecond earlier.
  void ExpectNextPingIn(Duration after) {
    const int before = pings_;
    loop_.Advance(after - 1ms);
    EXPECT_EQ(pings_, before) << "a PING came early";
    loop_.Advance(1ms);
    EXPECT_EQ(pings_, before + 1);
  }

  FakeEventLoop loop_;
  FakeSchedule schedule_;
  metrics::WorkerMetrics metrics_{1};
  int pings_ = 0;
  bool accept_ping_ = true;
  std::vector<absl::Status> closes_;
  PingKeepalive keepalive_;
};

TEST_F(PingKeepaliveTest, PingsOnlyAfterAQuietInterval) {
  keepalive_.Start();
  ExpectNextPingIn(10s);
}

TEST_F(PingKeepaliveTest, NoPingWhileFramesArrive) {
  keepalive_.Start();
  for (int i = 0; i < 5; ++i) {
    loop_.Advance(5s);
    keepalive_.OnFrame();
  }
  EXPECT_EQ(pings_, 0);
  loop_.Advance(20s);  // quiet from now on: one look finds the last frame, the next pings
  EXPECT_EQ(pings_, 1);
}

TEST_F(PingKeepaliveTest, AnsweredPingCountsAndWaitsAnotherInterval) {
  StartAndPing();
  loop_.Advance(200ms);
  keepalive_.OnFrame();
  keepalive_.OnPingAck();
  EXPECT_EQ(metrics_.node(0).pings_ok.Get(), 1u);
  EXPECT_EQ(metrics_.node(0).pings_failed.Get(), 0u);
  loop_.Advance(5s);  // past the timeout: the ack ended the wait
  EXPECT_TRUE(closes_.empty());
  EXPECT_EQ(pings_, 1);
  loop_.Advance(5s);
  EXPECT_EQ(pings_, 2);
}

TEST_F(PingKeepaliveTest, UnansweredPingClosesTheConnection) {
  StartAndPing();
  loop_.Advance(999ms);
  EXPECT_TRUE(closes_.empty());
  loop_.Advance(1ms);
  ASSERT_EQ(closes_.size(), 1u);
  EXPECT_TRUE(absl::IsUnavailable(closes_[0]));
  EXPECT_NE(std::string(closes_[0].message()).find("health.fast_timeout"), std::string::npos);
  EXPECT_EQ(metrics_.node(0).pings_failed.Get(), 1u);
  EXPECT_EQ(loop_.NextTimerIn(), Duration::max()) << "nothing armed after the close";
}

TEST_F(PingKeepaliveTest, AckOfAPingItDidNotSendIsIgnored) {
  keepalive_.Start();
  keepalive_.OnPingAck();  // the peer's own PING, acked by nghttp2: not ours
  EXPECT_EQ(metrics_.node(0).pings_ok.Get(), 0u);
  loop_.Advance(10s);
  EXPECT_EQ(pings_, 1);
}

TEST_F(PingKeepaliveTest, PingRefusedBySessionLooksAgainNextInterval) {
  accept_ping_ = false;
  keepalive_.Start();
  loop_.Advance(10s);
  EXPECT_EQ(pings_, 1);
  loop_.Advance(5s);
  EXPECT_TRUE(closes_.empty()) << "no PING went out: nothing to time out";
  accept_ping_ = true;
  loop_.Advance(5s);
  EXPECT_EQ(pings_, 2);
}

TEST_F(PingKeepaliveTest, ReadsTheBackedOffIntervalAtEachArming) {
  StartAndPing();
  schedule_.interval = 40s;  // a GOAWAY too_many_pings doubled it twice meanwhile
  keepalive_.OnPingAck();
  ExpectNextPingIn(40s);
}

TEST_F(PingKeepaliveTest, NoPingsWhenTheIntervalIsZero) {
  schedule_.interval = Duration::zero();
  keepalive_.Start();
  EXPECT_EQ(loop_.NextTimerIn(), Duration::max());
}

TEST_F(PingKeepaliveTest, NothingAfterStop) {
  StartAndPing();
  keepalive_.Stop();
  loop_.Advance(60s);
  EXPECT_TRUE(closes_.empty());
  EXPECT_EQ(pings_, 1);
}

}  // namespace
}  // namespace qpool::server
