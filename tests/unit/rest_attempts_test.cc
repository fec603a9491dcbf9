// The REST front door's attempts on the shared retry::AttemptController, driven by hand with the
// fake clock: what an HTTP/1.1 exchange reports (a 503, a 429 with Retry-After, a lost keep-alive
// connection, a pool that cannot reach its node) and what the session is asked to do (start,
// cancel, forward, answer locally). The session's sockets are a fake that records the calls.
#include "daemon/rest/rest_attempts.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/fake_event_loop.h"

namespace qpool::rest {
namespace {

using namespace std::chrono_literals;

struct Started {
  int slot;
  int node;
  int avoid_node;
  MonoTime at;
};

struct LocalReply {
  unsigned status;
  std::string message;
  std::optional<int> retry_after;
};

class FakeExchanges : public RestExchanges {
 public:
  explicit FakeExchanges(const EventLoop& loop) : loop_(loop) {}

  void StartExchange(int slot, int node, int avoid_node) override {
    started.push_back({slot, node, avoid_node, loop_.Now()});
  }
  void CancelExchange(int slot) override { cancelled.push_back(slot); }
  int PickOtherNode(int node) override { return node == other_node ? -1 : other_node; }
  void ForwardAnswer(int slot) override { forwarded.push_back(slot); }
  void ReplyLocally(unsigned status, const std::string& message,
                    std::optional<int> retry_after_seconds) override {
    replies.push_back({status, message, retry_after_seconds});
  }

  std::vector<Started> started;
  std::vector<int> cancelled;
  std::vector<int> forwarded;
  std::vector<LocalReply> replies;
  int other_node = 1;

 private:
  const EventLoop& loop_;
};

class Events : public retry::RetryEvents {
 public:
  void OnRetry(retry::RetryClass, retry::RetryReason reason) override {
    retries[static_cast<int>(reason)]++;
  }
  void OnRetryRefused(retry::RetryRefusal refusal) override {
    refused[static_cast<int>(refusal)]++;
  }
  void OnHedge(bool won) override { (won ? hedges_won : hedges)++; }
  void OnAttemptResult(size_t node, bool node_fault, double) override {
    if (node_fault) faults[node]++;
  }
  void OnReplayRefused(retry::ReplayLimit) override {}

  int retries[5] = {};
  int refused[retry::kRetryRefusalCount] = {};
  int hedges = 0;
  int hedges_won = 0;
  int faults[2] = {};
};

class RestAttemptsTest : public ::testing::Test {
 protected:
  testing::FakeEventLoop loop_;
  testing::FakeRandom random_{0.5};  // backoff before retry 1: 25 ms x 0.5
  Events events_;
  retry::RetryContext context_{retry::RetryPolicyOptions{}, retry::RetryBudget::Options{},
                               /*nodes=*/2, &events_};
  FakeExchanges exchanges_{loop_};
  RestAttempts attempts_{context_, loop_, random_, exchanges_};
};

TEST_F(RestAttemptsTest, OkAnswerIsForwardedAndCountsAsActiveUntilTheEnd) {
  attempts_.Begin(std::nullopt, /*callers_deadline=*/false, retry::RetryClass::kRead,
                  /*replayable=*/true);
  ASSERT_EQ(exchanges_.started.size(), 1u);
  EXPECT_EQ(exchanges_.started[0].node, -1);  // the balancer's choice
  EXPECT_EQ(context_.active_calls, 1u);
  attempts_.OnSent(0, 0);
  attempts_.OnAnswerHead(0, 200, std::nullopt);
  EXPECT_EQ(exchanges_.forwarded, std::vector<int>{0});
  EXPECT_TRUE(exchanges_.replies.empty());
  attempts_.End();
  EXPECT_EQ(context_.active_calls, 0u);
  EXPECT_FALSE(attempts_.active());
}

TEST_F(RestAttemptsTest, UnavailableAnswerIsRetriedOnAnotherNodeAfterTheBackoff) {
  attempts_.Begin(std::nullopt, /*callers_deadline=*/false, retry::RetryClass::kRead, true);
  attempts_.OnSent(0, 0);
  attempts_.OnAnswerHead(0, 503, std::nullopt);
  EXPECT_EQ(exchanges_.cancelled, std::vector<int>{0});  // the 503's connection goes
  EXPECT_TRUE(exchanges_.forwarded.empty());
  EXPECT_EQ(exchanges_.started.size(), 1u);
  loop_.Advance(12ms);  // 25 ms x 0.5, less a millisecond
  EXPECT_EQ(exchanges_.started.size(), 1u);
  loop_.Advance(1ms);
  ASSERT_EQ(exchanges_.started.size(), 2u);
  EXPECT_EQ(exchanges_.started[1].avoid_node, 0);
  EXPECT_EQ(events_.retries[static_cast<int>(retry::RetryReason::kUnavailable)], 1);
  EXPECT_EQ(events_.faults[0], 1);  // passive health hears of the 503
  attempts_.OnSent(0, 1);
  attempts_.OnAnswerHead(0, 200, std::nullopt);
  EXPECT_EQ(exchanges_.forwarded, std::vector<int>{0});
}

TEST_F(RestAttemptsTest, UnavailableAnswerOfANonRepeatableWriteIsPassedOnAsItCame) {
  attempts_.Begin(std::nullopt, /*callers_deadline=*/false, retry::RetryClass::kFilterScopedWrite,
                  true);
  attempts_.OnSent(0, 0);
  attempts_.OnAnswerHead(0, 503, std::nullopt);
  EXPECT_EQ(exchanges_.forwarded, std::vector<int>{0});  // Qdrant's own 503, body and all
  loop_.Advance(1s);
  EXPECT_EQ(exchanges_.started.size(), 1u);
}

TEST_F(RestAttemptsTest, StreamedBodyIsNeverRetried) {
  attempts_.Begin(std::nullopt, /*callers_deadline=*/false, retry::RetryClass::kRead,
                  /*replayable=*/false);
  attempts_.OnSent(0, 0);
  attempts_.OnAnswerHead(0, 503, std::nullopt);
  EXPECT_EQ(exchanges_.forwarded, std::vector<int>{0});
  loop_.Advance(1s);
  EXPECT_EQ(exchanges_.started.size(), 1u);
}

TEST_F(RestAttemptsTest, TooManyRequestsWaitsForRetryAfter) {
  attempts_.Begin(std::nullopt, /*callers_deadline=*/false, retry::RetryClass::kRead, true);
  attempts_.OnSent(0, 0);
  attempts_.OnAnswerHead(0, 429, 2);
  loop_.Advance(1999ms);
  EXPECT_EQ(exchanges_.started.size(), 1u);
  loop_.Advance(1ms);
  EXPECT_EQ(exchanges_.started.size(), 2u);
  EXPECT_EQ(events_.faults[0], 0);  // rate limiting is no fault of the node
}

TEST_F(RestAttemptsTest, TooManyRequestsWithoutRetryAfterIsForwarded) {
  attempts_.Begin(std::nullopt, /*callers_deadline=*/false, retry::RetryClass::kRead, true);
  attempts_.OnSent(0, 0);
  attempts_.OnAnswerHead(0, 429, std::nullopt);
  EXPECT_EQ(exchanges_.forwarded, std::vector<int>{0});
}

TEST_F(RestAttemptsTest, BudgetRefusalForwardsQdrantsAnswer) {
  for (int i = 0; i < 60; ++i) context_.budgets[0].OnAttemptFailed();  // tokens under half
  attempts_.Begin(std::nullopt, /*callers_deadline=*/false, retry::RetryClass::kRead, true);
  attempts_.OnSent(0, 0);
  attempts_.OnAnswerHead(0, 503, std::nullopt);
  EXPECT_EQ(exchanges_.forwarded, std::vector<int>{0});
  EXPECT_EQ(events_.refused[static_cast<int>(retry::RetryRefusal::kBudget)], 1);
}

TEST_F(RestAttemptsTest, LostReusedConnectionIsReplayedAtOnceForAnyMethod) {
  attempts_.Begin(std::nullopt, /*callers_deadline=*/false, retry::RetryClass::kNeverRepeat, true);
  attempts_.OnSent(0, 0);
  attempts_.OnLost(0, /*never_reached=*/true, "closed idle");
  ASSERT_EQ(exchanges_.started.size(), 2u);
  EXPECT_EQ(exchanges_.started[1].at, exchanges_.started[0].at);
  EXPECT_EQ(events_.retries[static_cast<int>(retry::RetryReason::kTransparent)], 1);
}

TEST_F(RestAttemptsTest, LostConnectionOfAWriteAnswers502) {
  attempts_.Begin(std::nullopt, /*callers_deadline=*/false, retry::RetryClass::kFilterScopedWrite,
                  true);
  attempts_.OnSent(0, 0);
  attempts_.OnLost(0, /*never_reached=*/false, "lost the connection to REST node n");
  ASSERT_EQ(exchanges_.replies.size(), 1u);
  EXPECT_EQ(exchanges_.replies[0].status, 502u);
  EXPECT_EQ(exchanges_.replies[0].message, "lost the connection to REST node n");
  EXPECT_EQ(events_.faults[0], 1);
}

TEST_F(RestAttemptsTest, FullQueueAnswers429WithRetryAfter) {
  attempts_.Begin(std::nullopt, /*callers_deadline=*/false, retry::RetryClass::kRead, true);
  attempts_.OnNotStarted(0, 0, absl::ResourceExhaustedError("queue full"), false);
  ASSERT_EQ(exchanges_.replies.size(), 1u);
  EXPECT_EQ(exchanges_.replies[0].status, 429u);
  EXPECT_EQ(exchanges_.replies[0].retry_after, 1);
}

TEST_F(RestAttemptsTest, UnreachableNodeIsTriedAgainThenAnswers503) {
  attempts_.Begin(std::nullopt, /*callers_deadline=*/false, retry::RetryClass::kFilterScopedWrite,
                  true);
  for (int i = 0; i < 3 && exchanges_.replies.empty(); ++i) {
    ASSERT_EQ(exchanges_.started.size(), static_cast<size_t>(i + 1));
    attempts_.OnNotStarted(i == 0 ? 0 : exchanges_.started.back().slot, 0,
                           absl::UnavailableError("cannot connect"), true);
    loop_.Advance(1s);
  }
  ASSERT_EQ(exchanges_.replies.size(), 1u);
  EXPECT_EQ(exchanges_.replies[0].status, 503u);
  EXPECT_NE(exchanges_.replies[0].message.find("tried 3 times"), std::string::npos);
}

TEST_F(RestAttemptsTest, QpooldsOwnRequestTimeoutDoesNotStretchTheUnreachableWait) {
  // rest.request_timeout (60 s) bounds the request, but is not the app's deadline: the wait for
  // an unreachable node is bounded as for a request without one.
  attempts_.Begin(loop_.Now() + 60s, /*callers_deadline=*/false,
                  retry::RetryClass::kFilterScopedWrite, true);
  for (int i = 0; i < 10 && exchanges_.replies.empty(); ++i) {
    attempts_.OnNotStarted(exchanges_.started.back().slot, 0,
                           absl::UnavailableError("cannot connect"), true);
    loop_.Advance(1s);
  }
  ASSERT_EQ(exchanges_.replies.size(), 1u);
  EXPECT_EQ(exchanges_.started.size(), 3u);  // retry.max_attempts
  EXPECT_LT(loop_.Now(), MonoTime(std::chrono::seconds(1000)) + 10s);
}

TEST_F(RestAttemptsTest, RequestWithoutATimeoutWaitsUpToUnreachableWait) {
  context_.unreachable_wait = 3s;
  const MonoTime start = loop_.Now();
  attempts_.Begin(start + 60s, /*callers_deadline=*/false, retry::RetryClass::kRead, true);
  size_t reported = 0;
  while (exchanges_.replies.empty() && loop_.Now() < start + 10s) {
    if (exchanges_.started.size() > reported) {
      reported = exchanges_.started.size();
      attempts_.OnNotStarted(exchanges_.started.back().slot, 0,
                             absl::UnavailableError("cannot connect"), true);
    }
    loop_.Advance(1ms);
  }
  ASSERT_EQ(exchanges_.replies.size(), 1u);
  EXPECT_EQ(exchanges_.replies[0].status, 503u);
  EXPECT_EQ(exchanges_.started.back().at, start + 3s);
  EXPECT_NE(exchanges_.replies[0].message.find("retry.unreachable_wait"), std::string::npos);
}

TEST_F(RestAttemptsTest, AppsTimeoutMakesAnUnreachableNodeWaitUpToIt) {
  const MonoTime deadline = loop_.Now() + 5s;
  attempts_.Begin(deadline, /*callers_deadline=*/true, retry::RetryClass::kFilterScopedWrite, true);
  size_t reported = 0;
  while (exchanges_.replies.empty() && loop_.Now() < deadline + 1s) {
    if (exchanges_.started.size() > reported) {
      reported = exchanges_.started.size();
      attempts_.OnNotStarted(exchanges_.started.back().slot, 0,
                             absl::UnavailableError("cannot connect"), true);
    }
    loop_.Advance(1ms);
  }
  ASSERT_EQ(exchanges_.replies.size(), 1u);
  EXPECT_GT(exchanges_.started.size(), 3u);
  EXPECT_LT(exchanges_.started.back().at, deadline);
  EXPECT_NE(exchanges_.replies[0].message.find("until the deadline"), std::string::npos);
}

TEST_F(RestAttemptsTest, PerTryTimeoutRetriesARead) {
  context_.per_try_timeout = 100ms;
  attempts_.Begin(std::nullopt, /*callers_deadline=*/false, retry::RetryClass::kRead, true);
  attempts_.OnSent(0, 0);
  loop_.Advance(100ms);
  EXPECT_EQ(exchanges_.cancelled, std::vector<int>{0});
  loop_.Advance(1s);
  EXPECT_EQ(exchanges_.started.size(), 2u);
  EXPECT_EQ(events_.retries[static_cast<int>(retry::RetryReason::kPerTryTimeout)], 1);
}

TEST_F(RestAttemptsTest, NoPerTryTimeoutForAWrite) {
  context_.per_try_timeout = 100ms;
  attempts_.Begin(std::nullopt, /*callers_deadline=*/false, retry::RetryClass::kIdScopedWrite,
                  true);
  attempts_.OnSent(0, 0);
  loop_.Advance(1s);
  EXPECT_TRUE(exchanges_.cancelled.empty());  // per-try timeouts are for reads
  EXPECT_TRUE(exchanges_.replies.empty());
}

TEST_F(RestAttemptsTest, HedgeRacesASlowReadAndWins) {
  context_.hedge_delay = 50ms;
  attempts_.Begin(std::nullopt, /*callers_deadline=*/false, retry::RetryClass::kRead, true);
  attempts_.OnSent(0, 0);
  loop_.Advance(50ms);
  ASSERT_EQ(exchanges_.started.size(), 2u);
  EXPECT_EQ(exchanges_.started[1].slot, 1);
  EXPECT_EQ(exchanges_.started[1].node, 1);
  EXPECT_EQ(events_.hedges, 1);
  attempts_.OnSent(1, 1);
  attempts_.OnAnswerHead(1, 200, std::nullopt);
  EXPECT_EQ(exchanges_.cancelled, std::vector<int>{0});  // the slow primary goes
  EXPECT_EQ(exchanges_.forwarded, std::vector<int>{1});
  EXPECT_EQ(attempts_.primary(), 1);
  EXPECT_EQ(events_.hedges_won, 1);
}

TEST_F(RestAttemptsTest, PrimaryAnswering503WhileHedgingLeavesTheHedge) {
  context_.hedge_delay = 50ms;
  attempts_.Begin(std::nullopt, /*callers_deadline=*/false, retry::RetryClass::kRead, true);
  attempts_.OnSent(0, 0);
  loop_.Advance(50ms);
  attempts_.OnSent(1, 1);
  attempts_.OnAnswerHead(0, 503, std::nullopt);
  EXPECT_EQ(exchanges_.cancelled, std::vector<int>{0});
  EXPECT_TRUE(exchanges_.forwarded.empty());
  attempts_.OnAnswerHead(1, 200, std::nullopt);
  EXPECT_EQ(exchanges_.forwarded, std::vector<int>{1});
}

TEST_F(RestAttemptsTest, NoHedgeForAStreamedBody) {
  context_.hedge_delay = 50ms;
  attempts_.Begin(std::nullopt, /*callers_deadline=*/false, retry::RetryClass::kRead,
                  /*replayable=*/false);
  attempts_.OnSent(0, 0);
  loop_.Advance(1s);
  EXPECT_EQ(exchanges_.started.size(), 1u);
}

TEST_F(RestAttemptsTest, DeadlineStopsARetryThatCouldNotFinish) {
  attempts_.Begin(loop_.Now() + 10ms, /*callers_deadline=*/false, retry::RetryClass::kRead, true);
  attempts_.OnSent(0, 0);
  loop_.Advance(9ms);
  attempts_.OnAnswerHead(0, 503, std::nullopt);
  EXPECT_EQ(exchanges_.forwarded, std::vector<int>{0});
  EXPECT_EQ(events_.refused[static_cast<int>(retry::RetryRefusal::kDeadline)], 1);
}

TEST_F(RestAttemptsTest, EndCancelsTheAttemptsAndTheBackoff) {
  attempts_.Begin(std::nullopt, /*callers_deadline=*/false, retry::RetryClass::kRead, true);
  attempts_.OnSent(0, 0);
  attempts_.OnAnswerHead(0, 503, std::nullopt);  // a retry waits for its backoff
  attempts_.End();
  loop_.Advance(1s);
  EXPECT_EQ(exchanges_.started.size(), 1u);
  EXPECT_EQ(context_.active_calls, 0u);
  EXPECT_EQ(context_.budgets[0].retries_in_flight(), 0u);
}

TEST(RestAttemptsStatusTest, HttpStatusOfAGivenUpRequest) {
  EXPECT_EQ(HttpStatusOf(absl::ResourceExhaustedError(""), 503), 429u);
  EXPECT_EQ(HttpStatusOf(absl::DeadlineExceededError(""), 503), 504u);
  EXPECT_EQ(HttpStatusOf(absl::UnavailableError(""), 502), 502u);
  EXPECT_EQ(HttpStatusOf(absl::UnavailableError(""), 503), 503u);
  EXPECT_EQ(HttpStatusOf(absl::InternalError(""), 503), 502u);
  EXPECT_EQ(FailureOfHttpStatus(503), retry::Failure::kUnavailable);
  EXPECT_EQ(FailureOfHttpStatus(429), retry::Failure::kResourceExhausted);
  EXPECT_EQ(FailureOfHttpStatus(500), retry::Failure::kNone);
}

}  // namespace
}  // namespace qpool::rest
