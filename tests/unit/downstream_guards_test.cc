// What an app connection decides about hostile clients without a socket: the header limits of a
// request header block (daemon/server/header_block_guard.h) and the sweep's handshake and idle
// timeouts (daemon/server/connection_timeouts.h); and ConnectionDefences
// (daemon/server/connection_defences.h) carrying the verdicts out on real calls through a fake
// connection: header limits, abuse budgets, server.max_message_size,
// server.connection_buffer_limit and server.stream_idle_timeout. The abuse budgets' buckets are in
// abuse_budget_test.cc; the whole connection against hostile clients, in
// tests/integration/hostile_test.cc.
#include <nghttp2/nghttp2.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "daemon/config/config.h"
#include "daemon/metrics/worker_metrics.h"
#include "daemon/pool/balancer.h"
#include "daemon/retry/retry_context.h"
#include "daemon/server/call.h"
#include "daemon/server/connection_defences.h"
#include "daemon/server/connection_timeouts.h"
#include "daemon/server/header_block_guard.h"
#include "daemon/server/proxy_counters.h"
#include "gtest/gtest.h"
#include "tests/unit/fake_event_loop.h"

namespace qpool::server {
namespace {

using std::chrono::seconds;
using OverLimit = HeaderBlockGuard::OverLimit;
using Action = ConnectionTimeouts::Action;

// A field of `n` octets (name and value together): RFC 9113 counts it as n + 32.
bool AddField(HeaderBlockGuard& guard, size_t n) { return guard.Add(n / 2, n - n / 2); }

TEST(HeaderBlockGuardTest, FieldsWithinBothLimitsPass) {
  HeaderBlockGuard guard(/*max_header_list_size=*/1000, /*max_headers=*/10);
  guard.BeginBlock();
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(AddField(guard, 68)) << i;  // 10 x 100 = 1000 octets
  EXPECT_FALSE(guard.over_limit(1));
}

TEST(HeaderBlockGuardTest, CountsNameAndValueOctetsPlus32) {
  HeaderBlockGuard guard(100, 10);
  guard.BeginBlock();
  EXPECT_TRUE(guard.Add(30, 38));  // 100 octets: at the limit
  guard.BeginBlock();
  EXPECT_FALSE(guard.Add(30, 39));  // 101
}

TEST(HeaderBlockGuardTest, OneFieldTooManyIsOverTheCountLimit) {
  HeaderBlockGuard guard(1 << 20, 3);
  guard.BeginBlock();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(AddField(guard, 1));
  ASSERT_FALSE(AddField(guard, 1));
  EXPECT_EQ(guard.OnOverLimit(1), OverLimit::kFirst);
  EXPECT_TRUE(guard.over_count());
  EXPECT_EQ(guard.message(), "qpool: request headers over server.max_headers (3 fields)");
}

TEST(HeaderBlockGuardTest, TheFirstFieldOverTheLimitRejectsAndTheRestAreSkipped) {
  HeaderBlockGuard guard(200, 100);
  guard.BeginBlock();
  ASSERT_TRUE(AddField(guard, 100));
  ASSERT_FALSE(AddField(guard, 100));  // 264 octets
  EXPECT_EQ(guard.OnOverLimit(5), OverLimit::kFirst);
  EXPECT_FALSE(guard.over_count());
  ASSERT_FALSE(AddField(guard, 100));
  EXPECT_EQ(guard.OnOverLimit(5), OverLimit::kRest);
  EXPECT_TRUE(guard.over_limit(5));
  EXPECT_FALSE(guard.over_limit(7));
  EXPECT_EQ(guard.message(), "qpool: request headers over server.max_header_list_size (200 bytes)");
  guard.EndOverLimit();
  EXPECT_FALSE(guard.over_limit(5));
}

TEST(HeaderBlockGuardTest, ABlockPastFourTimesTheSizeLimitIsAFlood) {
  HeaderBlockGuard guard(1000, 1000);
  guard.BeginBlock();
  ASSERT_FALSE(AddField(guard, 3968));  // 4000 octets: over the limit, not past 4x
  EXPECT_EQ(guard.OnOverLimit(1), OverLimit::kFirst);
  ASSERT_FALSE(AddField(guard, 0));  // 4032
  EXPECT_EQ(guard.OnOverLimit(1), OverLimit::kFlood);
}

TEST(HeaderBlockGuardTest, ABlockPastFourTimesTheCountLimitIsAFlood) {
  HeaderBlockGuard guard(1 << 20, 2);
  guard.BeginBlock();
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(AddField(guard, 0));
  for (int i = 3; i <= 8; ++i) {
    ASSERT_FALSE(AddField(guard, 0));
    EXPECT_NE(guard.OnOverLimit(1), OverLimit::kFlood) << i << " fields";
  }
  ASSERT_FALSE(AddField(guard, 0));  // the 9th: past 4 x 2
  EXPECT_EQ(guard.OnOverLimit(1), OverLimit::kFlood);
}

TEST(HeaderBlockGuardTest, ANewBlockStartsTheCountOver) {
  HeaderBlockGuard guard(200, 2);
  guard.BeginBlock();
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(AddField(guard, 50));
  ASSERT_FALSE(AddField(guard, 50));
  ASSERT_EQ(guard.OnOverLimit(1), OverLimit::kFirst);
  guard.BeginBlock();  // the next stream's block; a rejected block's stream is forgotten too
  EXPECT_FALSE(guard.over_limit(1));
  EXPECT_TRUE(AddField(guard, 50));
  EXPECT_TRUE(AddField(guard, 50));
}

const MonoTime kAccepted = MonoTime{} + std::chrono::hours(1);
constexpr Duration kHandshake = seconds(10);
constexpr Duration kIdle = seconds(60);

TEST(ConnectionTimeoutsTest, NoHandshakeWithinTheTimeoutIsDue) {
  ConnectionTimeouts timeouts(kAccepted);
  EXPECT_EQ(timeouts.Check(kAccepted + seconds(9), false, kHandshake, kIdle), Action::kNone);
  EXPECT_EQ(timeouts.Check(kAccepted + seconds(10), false, kHandshake, kIdle),
            Action::kHandshakeTimeout);
}

TEST(ConnectionTimeoutsTest, ZeroTimeoutsAreOff) {
  ConnectionTimeouts silent(kAccepted);
  EXPECT_EQ(silent.Check(kAccepted + seconds(1000), false, Duration::zero(), kIdle), Action::kNone);
  ConnectionTimeouts idle(kAccepted);
  idle.OnHandshakeDone();
  EXPECT_EQ(idle.Check(kAccepted, false, kHandshake, Duration::zero()), Action::kNone);
  EXPECT_EQ(idle.Check(kAccepted + seconds(1000), false, kHandshake, Duration::zero()),
            Action::kNone);
}

TEST(ConnectionTimeoutsTest, IdleCountsFromTheFirstSweepThatSawNoStream) {
  ConnectionTimeouts timeouts(kAccepted);
  timeouts.OnHandshakeDone();
  const MonoTime first = kAccepted + seconds(100);  // long after the handshake
  EXPECT_EQ(timeouts.Check(first, false, kHandshake, kIdle), Action::kNone);
  EXPECT_EQ(timeouts.Check(first + seconds(59), false, kHandshake, kIdle), Action::kNone);
  EXPECT_EQ(timeouts.Check(first + seconds(60), false, kHandshake, kIdle), Action::kIdleTimeout);
}

TEST(ConnectionTimeoutsTest, AStreamOrBusinessSinceTheLastSweepRestartsTheIdleClock) {
  ConnectionTimeouts timeouts(kAccepted);
  timeouts.OnHandshakeDone();
  EXPECT_EQ(timeouts.Check(kAccepted, false, kHandshake, kIdle), Action::kNone);
  timeouts.OnStreamOpened();  // a call came and went between two sweeps
  EXPECT_EQ(timeouts.Check(kAccepted + seconds(60), false, kHandshake, kIdle), Action::kNone);
  EXPECT_EQ(timeouts.Check(kAccepted + seconds(61), false, kHandshake, kIdle), Action::kNone);
  EXPECT_EQ(timeouts.Check(kAccepted + seconds(120), true, kHandshake, kIdle), Action::kNone);
  EXPECT_EQ(timeouts.Check(kAccepted + seconds(121), false, kHandshake, kIdle), Action::kNone);
  EXPECT_EQ(timeouts.Check(kAccepted + seconds(181), false, kHandshake, kIdle),
            Action::kIdleTimeout);
}

// --- ConnectionDefences ---------------------------------------------------------------------

using Headers = std::map<std::string, std::string>;

std::string Text(const uint8_t* data, size_t len) {
  return std::string(reinterpret_cast<const char*>(data), len);
}

// The app connection as the defences see it (what they ask, recorded) and as its calls see it.
class FakeConnection : public DefendedConnection, public CallDownstream {
 public:
  // DefendedConnection.
  void SubmitReset(int32_t stream_id, uint32_t h2_error_code) override {
    resets.emplace_back(stream_id, h2_error_code);
  }
  void SubmitLocalReply(int32_t stream_id, const nghttp2_nv* nva, size_t nvlen) override {
    Headers& reply = replies[stream_id];
    for (const nghttp2_nv* nv = nva; nv != nva + nvlen; ++nv) {
      reply[Text(nv->name, nv->namelen)] = Text(nv->value, nv->valuelen);
    }
  }
  void EndCall(Call& call, uint32_t h2_error_code) override {
    ended.emplace_back(call.downstream_stream_id(), h2_error_code);
    calls.erase(calls.iterator_to(call));
    call.OnDownstreamClosed(h2_error_code);
    delete &call;
  }
  bool WaitingOnApp(const Call& call) override {
    return app_may_send.count(call.downstream_stream_id()) > 0 || call.response_buffered() > 0;
  }
  bool CloseWithGoaway(uint32_t h2_error_code, std::string_view why, const absl::Status&) override {
    if (closed) return false;
    closed = true;
    goaways.emplace_back(h2_error_code, std::string(why));
    return true;
  }

  // CallDownstream: the calls' answers are not looked at here.
  int SubmitResponse(Call&, const nghttp2_nv*, size_t, bool) override { return 0; }
  int SubmitTrailers(Call&, const nghttp2_nv*, size_t) override { return 0; }
  void ResumeResponseData(Call&) override {}
  void ResetStream(Call&, uint32_t) override {}
  void ConsumeRequestData(Call&, size_t) override {}
  int64_t* response_bytes_held() override { return response_bytes; }
  pool::ShareAccount& share_account() override { return account; }
  const std::string& peer() const override { return peer_name; }

  int64_t* response_bytes = nullptr;  // the defences'
  DownstreamCallList calls;
  std::set<int32_t> app_may_send;                    // streams whose request the app may still send
  std::vector<std::pair<int32_t, uint32_t>> resets;  // RST_STREAM: stream, error code
  std::map<int32_t, Headers> replies;                // local replies by stream
  std::vector<std::pair<int32_t, uint32_t>> ended;   // calls ended: stream, error code
  std::vector<std::pair<uint32_t, std::string>> goaways;
  bool closed = false;
  pool::ShareAccount account;
  std::string peer_name = "127.0.0.1:1";
};

class ConnectionDefencesTest : public ::testing::Test {
 protected:
  ConnectionDefencesTest() {
    server_.max_header_list_size = 1000;
    server_.max_headers = 2;
    server_.connection_buffer_limit = 100;
    server_.max_message_size = 100;
    server_.stream_idle_timeout = absl::Seconds(10);
  }
  ~ConnectionDefencesTest() override {
    connection_.calls.clear_and_dispose([](Call* call) {
      call->OnDownstreamClosed(NGHTTP2_CANCEL);
      delete call;
    });
  }

  // The defences under test, made from server_ as it is then.
  ConnectionDefences& Defences() {
    if (!defences_) {
      defences_.emplace(connection_, counters_, loop_, server_, connection_.peer_name);
      connection_.response_bytes = defences_->response_bytes_held();
    }
    return *defences_;
  }
  // A call on stream `stream_id` holding `unread` response bytes for the app.
  Call& OpenCall(int32_t stream_id, size_t unread = 0) {
    Defences();
    auto* call = new Call(context_, connection_, stream_id);
    connection_.calls.push_back(*call);
    const std::string bytes(unread, 'x');
    call->answer().AppendData(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    return *call;
  }
  std::vector<int32_t> OpenStreams() const {
    std::vector<int32_t> ids;
    for (const Call& call : connection_.calls) ids.push_back(call.downstream_stream_id());
    return ids;
  }
  uint64_t Resets(StreamResetReason reason) const {
    return counters_.downstream_stream_resets[static_cast<size_t>(reason)].load();
  }
  uint64_t Abuse(AbuseReason reason) const {
    return counters_.downstream_abuse[static_cast<size_t>(reason)].load();
  }

  testing::FakeEventLoop loop_;
  testing::SweepRandom random_;
  ProxyCounters counters_;
  metrics::WorkerMetrics metrics_{1};
  retry::RetryContext retry_{retry::RetryPolicyOptions{}, retry::RetryBudget::Options{},
                             /*nodes=*/1, nullptr};
  pool::Balancer balancer_{loop_, random_, metrics_, nullptr};
  CallContext context_{loop_, random_, counters_, metrics_, retry_, balancer_};
  config::ServerConfig server_;
  FakeConnection connection_;
  std::optional<ConnectionDefences> defences_;
};

TEST_F(ConnectionDefencesTest, TheBufferCheckIsAskedForOnceWhenPastTheLimit) {
  ConnectionDefences& defences = Defences();
  OpenCall(1, 100);
  EXPECT_FALSE(defences.OnResponseQueued());  // at the limit
  OpenCall(3, 1);
  EXPECT_TRUE(defences.OnResponseQueued());
  EXPECT_FALSE(defences.OnResponseQueued());  // one check pending is enough
  defences.RunBufferCheck(connection_.calls);
  OpenCall(5, 100);
  EXPECT_TRUE(defences.OnResponseQueued());  // asked for again once it ran
}

TEST_F(ConnectionDefencesTest, ABufferLimitOfZeroIsOff) {
  server_.connection_buffer_limit = 0;
  OpenCall(1, 1000);
  EXPECT_FALSE(Defences().OnResponseQueued());
}

TEST_F(ConnectionDefencesTest, TheBufferCheckResetsTheStreamsHoldingTheMostUntilUnderTheLimit) {
  OpenCall(1, 40);
  OpenCall(3, 70);
  OpenCall(5, 50);
  OpenCall(7, 60);  // 220 bytes: over 100 until streams 3 and 7 go
  ASSERT_TRUE(Defences().OnResponseQueued());
  Defences().RunBufferCheck(connection_.calls);
  using Reset = std::pair<int32_t, uint32_t>;
  EXPECT_EQ(connection_.resets,
            (std::vector<Reset>{{3, NGHTTP2_ENHANCE_YOUR_CALM}, {7, NGHTTP2_ENHANCE_YOUR_CALM}}));
  EXPECT_EQ(connection_.ended, connection_.resets);  // ended on both sides
  EXPECT_EQ(OpenStreams(), (std::vector<int32_t>{1, 5}));
  EXPECT_EQ(*Defences().response_bytes_held(), 90);
  EXPECT_EQ(Resets(StreamResetReason::kBufferLimit), 2u);
}

TEST_F(ConnectionDefencesTest, TheSweepResetsTheStreamsThatWaitedOnTheAppWithNoProgress) {
  OpenCall(1);                     // the app may send its request, and does not
  OpenCall(3, 10);                 // the app does not read its answer
  Call& moving = OpenCall(5, 10);  // the app reads, slowly
  OpenCall(7);                     // waits on the node, not on the app
  connection_.app_may_send = {1, 5};
  const MonoTime start = loop_.Now();
  Defences().CheckStreams(connection_.calls, start);  // first seen waiting
  moving.stall_watch.OnProgress();
  Defences().CheckStreams(connection_.calls, start + seconds(9));
  EXPECT_TRUE(connection_.resets.empty());
  moving.stall_watch.OnProgress();
  Defences().CheckStreams(connection_.calls, start + seconds(10));
  using Reset = std::pair<int32_t, uint32_t>;
  EXPECT_EQ(connection_.resets, (std::vector<Reset>{{1, NGHTTP2_CANCEL}, {3, NGHTTP2_CANCEL}}));
  EXPECT_EQ(connection_.ended, connection_.resets);
  EXPECT_EQ(OpenStreams(), (std::vector<int32_t>{5, 7}));
  EXPECT_EQ(Resets(StreamResetReason::kStreamIdle), 2u);
}

TEST_F(ConnectionDefencesTest, AStreamIdleTimeoutOfZeroIsOff) {
  server_.stream_idle_timeout = absl::ZeroDuration();
  OpenCall(1, 10);
  Defences().CheckStreams(connection_.calls, loop_.Now());
  Defences().CheckStreams(connection_.calls, loop_.Now() + std::chrono::hours(1));
  EXPECT_TRUE(connection_.resets.empty());
  EXPECT_EQ(OpenStreams(), (std::vector<int32_t>{1}));
}

// A gRPC length prefix declaring `length` bytes.
std::vector<uint8_t> Prefix(uint32_t length) {
  return {0, static_cast<uint8_t>(length >> 24), static_cast<uint8_t>(length >> 16),
          static_cast<uint8_t>(length >> 8), static_cast<uint8_t>(length)};
}

TEST_F(ConnectionDefencesTest, AnOversizeMessageIsAnsweredResourceExhaustedAndItsCallGoes) {
  Call& call = OpenCall(1);
  const std::vector<uint8_t> fits = Prefix(100);
  ASSERT_TRUE(Defences().MessageSizeOk(call, fits.data(), fits.size()));
  const std::vector<uint8_t> body(100, 'x');
  ASSERT_TRUE(Defences().MessageSizeOk(call, body.data(), body.size()));
  const std::vector<uint8_t> over = Prefix(101);
  ASSERT_FALSE(Defences().MessageSizeOk(call, over.data(), over.size()));
  Defences().RejectOversizeMessage(call);
  using Ended = std::pair<int32_t, uint32_t>;
  EXPECT_EQ(connection_.ended, (std::vector<Ended>{{1, NGHTTP2_CANCEL}}));
  EXPECT_TRUE(connection_.resets.empty());
  const Headers& reply = connection_.replies[1];
  EXPECT_EQ(reply.at("grpc-status"), "8");
  EXPECT_EQ(reply.at("grpc-message"),
            "qpool: request message of 101 bytes is over server.max_message_size (100 bytes)");
  EXPECT_EQ(Resets(StreamResetReason::kMessageSize), 1u);
  EXPECT_EQ(counters_.local_replies.load(), 1u);
}

TEST_F(ConnectionDefencesTest, AnOversizeMessageAfterTheResponseStartedIsAReset) {
  Call& call = OpenCall(1);
  call.answer().SendHeaders(nullptr, 0, /*end_stream=*/false, 0);
  ASSERT_TRUE(call.response_started());
  const std::vector<uint8_t> over = Prefix(1000);
  ASSERT_FALSE(Defences().MessageSizeOk(call, over.data(), over.size()));
  Defences().RejectOversizeMessage(call);
  using Reset = std::pair<int32_t, uint32_t>;
  EXPECT_EQ(connection_.resets, (std::vector<Reset>{{1, NGHTTP2_ENHANCE_YOUR_CALM}}));
  EXPECT_EQ(connection_.ended, connection_.resets);
  EXPECT_TRUE(connection_.replies.empty());
}

TEST_F(ConnectionDefencesTest, NoMessageSizeLimitPassesAnyPrefix) {
  server_.max_message_size = 0;
  Call& call = OpenCall(1);
  const std::vector<uint8_t> huge = Prefix(0xffffffff);
  EXPECT_TRUE(Defences().MessageSizeOk(call, huge.data(), huge.size()));
}

TEST_F(ConnectionDefencesTest, AHeaderBlockOverALimitDropsItsCallAndIsAnsweredWhenItEnds) {
  ConnectionDefences& defences = Defences();
  Call& call = OpenCall(1);
  defences.BeginHeaderBlock();
  ASSERT_TRUE(defences.AddHeader(5, 10));
  ASSERT_TRUE(defences.AddHeader(5, 10));
  ASSERT_FALSE(defences.AddHeader(5, 10));  // a third field: over server.max_headers
  EXPECT_EQ(defences.OnHeaderOverLimit(1, &call), 0);
  using Ended = std::pair<int32_t, uint32_t>;
  EXPECT_EQ(connection_.ended, (std::vector<Ended>{{1, NGHTTP2_CANCEL}}));
  ASSERT_FALSE(defences.AddHeader(5, 10));  // the rest of the block: decoded, not counted again
  EXPECT_EQ(defences.OnHeaderOverLimit(1, nullptr), 0);
  EXPECT_EQ(counters_.downstream_header_limit_rejections[1].load(), 1u);
  EXPECT_TRUE(connection_.replies.empty());  // not before the block ends
  EXPECT_TRUE(defences.EndHeaderBlock(1, /*request=*/true));
  EXPECT_EQ(connection_.replies[1].at("grpc-status"), "8");
  EXPECT_EQ(connection_.replies[1].at("grpc-message"),
            "qpool: request headers over server.max_headers (2 fields)");
  EXPECT_EQ(counters_.local_replies.load(), 1u);
  EXPECT_FALSE(defences.EndHeaderBlock(1, true));  // answered once
  EXPECT_FALSE(connection_.closed);
}

TEST_F(ConnectionDefencesTest, OverLimitTrailersResetTheirStream) {
  ConnectionDefences& defences = Defences();
  defences.BeginHeaderBlock();
  ASSERT_TRUE(defences.AddHeader(1, 1));
  ASSERT_TRUE(defences.AddHeader(1, 1));
  ASSERT_FALSE(defences.AddHeader(1, 1));
  ASSERT_EQ(defences.OnHeaderOverLimit(3, nullptr), 0);
  EXPECT_TRUE(defences.EndHeaderBlock(3, /*request=*/false));
  using Reset = std::pair<int32_t, uint32_t>;
  EXPECT_EQ(connection_.resets, (std::vector<Reset>{{3, NGHTTP2_ENHANCE_YOUR_CALM}}));
  EXPECT_TRUE(connection_.replies.empty());
}

TEST_F(ConnectionDefencesTest, AHeaderBlockPastFourTimesTheLimitClosesTheConnection) {
  ConnectionDefences& defences = Defences();
  defences.BeginHeaderBlock();
  int last = 0;
  for (int i = 1; i <= 9 && last == 0; ++i) {  // the 9th field is past 4 x 2
    if (!defences.AddHeader(1, 1)) last = defences.OnHeaderOverLimit(1, nullptr);
  }
  EXPECT_EQ(last, NGHTTP2_ERR_CALLBACK_FAILURE);
  using Goaway = std::pair<uint32_t, std::string>;
  EXPECT_EQ(connection_.goaways,
            (std::vector<Goaway>{{NGHTTP2_ENHANCE_YOUR_CALM, "qpool: header_block_flood"}}));
  EXPECT_EQ(Abuse(AbuseReason::kHeaderBlockFlood), 1u);
}

TEST_F(ConnectionDefencesTest, ASpentBudgetClosesTheConnectionOnceWithEnhanceYourCalm) {
  ConnectionDefences& defences = Defences();
  for (uint32_t i = 0; i < kSettingsBudget.burst; ++i) {
    ASSERT_TRUE(defences.Spend(AbuseReason::kSettingsFlood)) << i;
  }
  EXPECT_FALSE(connection_.closed);
  EXPECT_FALSE(defences.Spend(AbuseReason::kSettingsFlood));
  EXPECT_TRUE(defences.abusive());
  EXPECT_FALSE(defences.Spend(AbuseReason::kSettingsFlood));
  using Goaway = std::pair<uint32_t, std::string>;
  EXPECT_EQ(connection_.goaways,
            (std::vector<Goaway>{{NGHTTP2_ENHANCE_YOUR_CALM, "qpool: settings_flood"}}));
  EXPECT_EQ(Abuse(AbuseReason::kSettingsFlood), 1u);
}

TEST_F(ConnectionDefencesTest, APingAfterResponseFramesIsFree) {
  ConnectionDefences& defences = Defences();
  for (uint32_t i = 0; i < kPingBudget.burst; ++i) ASSERT_TRUE(defences.OnPing()) << i;
  defences.OnResponseFrameSent();
  EXPECT_TRUE(defences.OnPing());  // a BDP probe: free
  EXPECT_FALSE(connection_.closed);
  EXPECT_FALSE(defences.OnPing());  // a keepalive, with the budget spent
  ASSERT_EQ(connection_.goaways.size(), 1u);
  EXPECT_EQ(connection_.goaways[0].second, "qpool: ping_flood");
  EXPECT_EQ(Abuse(AbuseReason::kPingFlood), 1u);
}

TEST_F(ConnectionDefencesTest, AConnectionClosedAlreadyIsNotCountedAsAbusive) {
  ConnectionDefences& defences = Defences();
  connection_.closed = true;  // say, by a timeout in the same turn
  for (uint32_t i = 0; i < kResetBudget.burst; ++i) {
    ASSERT_TRUE(defences.Spend(AbuseReason::kRapidReset));
  }
  EXPECT_FALSE(defences.Spend(AbuseReason::kRapidReset));
  EXPECT_TRUE(connection_.goaways.empty());
  EXPECT_EQ(Abuse(AbuseReason::kRapidReset), 0u);
}

}  // namespace
}  // namespace qpool::server
