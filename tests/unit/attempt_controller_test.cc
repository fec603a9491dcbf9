// The attempt controller (retries, hedges, per-try timeouts, held answers, budget, unreachable
// nodes) driven by hand with the fake clock, and the replay copy's limits. The host is a fake that
// records what the controller asks of it; the test plays the upstream.
#include "daemon/retry/attempt_controller.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "daemon/retry/replay_buffer.h"
#include "gtest/gtest.h"
#include "tests/unit/fake_event_loop.h"

namespace qpool::retry {
namespace {

using namespace std::chrono_literals;

struct StartCall {
  int slot;
  AttemptKind kind;
  int node;
  int avoid_node;
  MonoTime at;
};

class FakeHost : public AttemptHost {
 public:
  explicit FakeHost(const EventLoop& loop) : loop_(loop) {}

  void StartAttempt(int slot, AttemptKind kind, int node, int avoid_node) override {
    started.push_back({slot, kind, node, avoid_node, loop_.Now()});
  }
  void CancelAttempt(int slot) override { cancelled.push_back(slot); }
  int PickHedgeNode(int node) override { return node == hedge_node ? -1 : hedge_node; }
  RetryClass ClassifyRequest() override { return retry_class; }
  bool CanReplay() const override { return can_replay; }
  bool WholeRequestHeld() const override { return whole_request; }
  void HoldAnswer(int slot) override { held_slot = slot; }
  void RewindRequest() override {
    rewinds++;
    held_slot = -1;
  }
  void PassOnHeldAnswer() override { passed_on = true; }
  void FinishWith(const absl::Status& status) override { finished = status; }

  std::vector<StartCall> started;
  std::vector<int> cancelled;
  int held_slot = -1;
  int rewinds = 0;
  bool passed_on = false;
  std::optional<absl::Status> finished;
  RetryClass retry_class = RetryClass::kRead;
  bool can_replay = true;
  bool whole_request = true;
  int hedge_node = 1;

 private:
  const EventLoop& loop_;
};

class RecordingEvents : public RetryEvents {
 public:
  void OnRetry(RetryClass, RetryReason reason) override { retries[static_cast<int>(reason)]++; }
  void OnRetryRefused(RetryRefusal refusal) override { refused[static_cast<int>(refusal)]++; }
  void OnHedge(bool won) override { (won ? hedges_won : hedges)++; }
  void OnAttemptResult(size_t node, bool node_fault, double) override {
    results++;
    if (node_fault) faults[node]++;
  }
  void OnReplayRefused(ReplayLimit limit) override { replay_refused[static_cast<int>(limit)]++; }

  int retries[5] = {};
  int refused[kRetryRefusalCount] = {};
  int hedges = 0;
  int hedges_won = 0;
  int results = 0;
  int faults[2] = {};
  int replay_refused[kReplayLimitCount] = {};
};

AttemptOutcome Outcome(Failure failure, std::optional<Duration> pushback = std::nullopt) {
  AttemptOutcome outcome;
  outcome.failure = failure;
  outcome.pushback = pushback;
  return outcome;
}

class AttemptControllerTest : public ::testing::Test {
 protected:
  // Builds the controller with the context as the test set it, and starts the call.
  AttemptController& Start(std::optional<MonoTime> deadline = std::nullopt) {
    controller_ = std::make_unique<AttemptController>(context_, loop_, random_, host_);
    controller_->Start(loop_.Now(), deadline);
    return *controller_;
  }
  RetryBudget& budget(int node) { return context_.budgets[static_cast<size_t>(node)]; }
  // Takes node 0's every retry place (min_retries_in_flight: 3), for other calls' retries.
  void TakeEveryRetryPlace() {
    for (int i = 0; i < 3; ++i) places_.emplace_back(budget(0));
  }
  // A call without a deadline (retry.unreachable_wait 10 s) whose attempt lost its connection
  // while every retry place was taken.
  AttemptController& CallRefusedARetryPlace() {
    context_.unreachable_wait = 10s;
    TakeEveryRetryPlace();
    AttemptController& c = Start();
    c.OnAttemptSent(0, 0, loop_.Now());
    c.OnAttemptEnded(0, Outcome(Failure::kUnavailable), absl::UnavailableError("lost"));
    return c;
  }
  // Starts `n` calls without a deadline, each with a fake host of its own (hosts_[i], calls_[i]),
  // for tests of many calls at once.
  void StartCalls(int n) {
    for (int i = 0; i < n; ++i) {
      hosts_.push_back(std::make_unique<FakeHost>(loop_));
      calls_.push_back(std::make_unique<AttemptController>(context_, loop_, random_, *hosts_[i]));
      calls_[i]->Start(loop_.Now(), std::nullopt);
    }
  }
  // Moves the clock in 1 ms steps while `go_on()`: each attempt a call of calls_ starts from now
  // on is handed to `answer(i)` for the test to play the node. Returns the most retries in flight
  // seen on node 0's budget meanwhile.
  uint32_t DriveCalls(const std::function<bool()>& go_on, const std::function<void(int)>& answer) {
    std::vector<size_t> handled(calls_.size(), 0);
    for (size_t i = 0; i < calls_.size(); ++i) handled[i] = hosts_[i]->started.size();
    uint32_t most_in_flight = 0;
    while (go_on()) {
      for (size_t i = 0; i < calls_.size(); ++i) {
        if (hosts_[i]->started.size() == handled[i]) continue;
        handled[i] = hosts_[i]->started.size();
        answer(static_cast<int>(i));
      }
      most_in_flight = std::max(most_in_flight, budget(0).retries_in_flight());
      loop_.Advance(1ms);
    }
    return most_in_flight;
  }

  testing::FakeEventLoop loop_;
  testing::FakeRandom random_{0.5};  // backoff before retry 1: 25 ms x 0.5
  RecordingEvents events_;
  RetryContext context_{RetryPolicyOptions{}, RetryBudget::Options{}, /*nodes=*/2, &events_};
  FakeHost host_{loop_};
  std::unique_ptr<AttemptController> controller_;
  std::vector<RetryTicket> places_;               // TakeEveryRetryPlace
  std::vector<std::unique_ptr<FakeHost>> hosts_;  // StartCalls
  std::vector<std::unique_ptr<AttemptController>> calls_;
};

TEST_F(AttemptControllerTest, FirstAttemptGoesToTheBalancersChoice) {
  AttemptController& c = Start();
  ASSERT_EQ(host_.started.size(), 1u);
  EXPECT_EQ(host_.started[0].slot, 0);
  EXPECT_EQ(host_.started[0].kind, AttemptKind::kFirst);
  EXPECT_EQ(host_.started[0].node, -1);
  EXPECT_EQ(host_.started[0].avoid_node, -1);
  EXPECT_EQ(context_.active_calls, 1u);
  c.OnAttemptSent(0, 0, loop_.Now());
  EXPECT_EQ(c.OnResponseHeaders(0, Outcome(Failure::kNone), false, true), HeadersVerdict::kForward);
  EXPECT_TRUE(c.committed());
  EXPECT_EQ(c.attempts(), 1u);
  EXPECT_EQ(loop_.NextTimerIn(), Duration::max());  // no per-try timeout, no hedge: no timer
  controller_.reset();
  EXPECT_EQ(context_.active_calls, 0u);
}

TEST_F(AttemptControllerTest, HedgeStartsAfterTheDelayAndWinsWhenItAnswersFirst) {
  context_.hedge_delay = 50ms;
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  loop_.Advance(49ms);
  EXPECT_EQ(host_.started.size(), 1u);
  loop_.Advance(1ms);
  ASSERT_EQ(host_.started.size(), 2u);
  EXPECT_EQ(host_.started[1].slot, 1);
  EXPECT_EQ(host_.started[1].kind, AttemptKind::kHedge);
  EXPECT_EQ(host_.started[1].node, 1);  // another node than the primary's
  EXPECT_EQ(events_.hedges, 1);
  EXPECT_EQ(budget(0).retries_in_flight(), 1u);  // the hedge counts on its primary's node
  c.OnAttemptSent(1, 1, loop_.Now());

  EXPECT_EQ(c.OnResponseHeaders(1, Outcome(Failure::kNone), false, true), HeadersVerdict::kForward);
  EXPECT_EQ(host_.cancelled, std::vector<int>{0});  // the slow primary is cancelled
  EXPECT_EQ(c.primary(), 1);
  EXPECT_TRUE(c.committed());
  EXPECT_EQ(events_.hedges_won, 1);
  EXPECT_EQ(budget(0).retries_in_flight(), 0u);
}

TEST_F(AttemptControllerTest, PrimaryAnsweringFirstCancelsTheHedge) {
  context_.hedge_delay = 50ms;
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  loop_.Advance(50ms);
  c.OnAttemptSent(1, 1, loop_.Now());
  EXPECT_EQ(c.OnResponseHeaders(0, Outcome(Failure::kNone), false, true), HeadersVerdict::kForward);
  EXPECT_EQ(host_.cancelled, std::vector<int>{1});
  EXPECT_EQ(c.primary(), 0);
  EXPECT_EQ(events_.hedges_won, 0);
  EXPECT_EQ(budget(0).retries_in_flight(), 0u);
}

TEST_F(AttemptControllerTest, NoHedgeForAWrite) {
  context_.hedge_delay = 50ms;
  host_.retry_class = RetryClass::kIdScopedWrite;
  Start().OnAttemptSent(0, 0, loop_.Now());
  loop_.Advance(100ms);
  EXPECT_EQ(host_.started.size(), 1u);
}

TEST_F(AttemptControllerTest, NoHedgeWhileTheAppIsStillSending) {
  context_.hedge_delay = 50ms;
  host_.whole_request = false;
  Start().OnAttemptSent(0, 0, loop_.Now());
  loop_.Advance(100ms);
  EXPECT_EQ(host_.started.size(), 1u);
}

TEST_F(AttemptControllerTest, NoHedgeWithoutAnotherNode) {
  context_.hedge_delay = 50ms;
  host_.hedge_node = 0;  // PickHedgeNode finds none
  Start().OnAttemptSent(0, 0, loop_.Now());
  loop_.Advance(100ms);
  EXPECT_EQ(host_.started.size(), 1u);
  EXPECT_EQ(budget(0).retries_in_flight(), 0u);
}

TEST_F(AttemptControllerTest, NoHedgeWhenTheBudgetRefuses) {
  context_.hedge_delay = 50ms;
  for (int i = 0; i < 50; ++i) budget(0).OnAttemptFailed();  // half the tokens: no retries
  Start().OnAttemptSent(0, 0, loop_.Now());
  loop_.Advance(100ms);
  EXPECT_EQ(host_.started.size(), 1u);
  EXPECT_EQ(events_.refused[static_cast<int>(RetryRefusal::kBudget)], 1);
  EXPECT_EQ(events_.hedges, 0);
}

TEST_F(AttemptControllerTest, PrimaryFailingWhileHedgingLeavesTheHedgeAsTheAttempt) {
  context_.hedge_delay = 50ms;
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  loop_.Advance(50ms);
  c.OnAttemptSent(1, 1, loop_.Now());
  // A trailers-only UNAVAILABLE from the primary: no retry, the hedge carries on.
  EXPECT_EQ(c.OnResponseHeaders(0, Outcome(Failure::kUnavailable), true, true),
            HeadersVerdict::kDiscard);
  EXPECT_EQ(host_.cancelled, std::vector<int>{0});
  EXPECT_EQ(c.primary(), 1);
  EXPECT_EQ(host_.held_slot, -1);
  EXPECT_EQ(events_.faults[0], 1);  // counted against the primary's node
  loop_.Advance(1s);
  EXPECT_EQ(host_.started.size(), 2u);  // no retry was scheduled
  EXPECT_EQ(c.OnResponseHeaders(1, Outcome(Failure::kNone), false, true), HeadersVerdict::kForward);
  EXPECT_FALSE(host_.finished.has_value());
}

TEST_F(AttemptControllerTest, PrimaryConnectionLostWhileHedgingLeavesTheHedge) {
  context_.hedge_delay = 50ms;
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  loop_.Advance(50ms);
  c.OnAttemptSent(1, 1, loop_.Now());
  EXPECT_EQ(c.OnAttemptEnded(0, Outcome(Failure::kUnavailable), absl::UnavailableError("lost")),
            EndVerdict::kHandled);
  EXPECT_EQ(c.primary(), 1);
  EXPECT_TRUE(host_.cancelled.empty());  // the primary was gone already
  EXPECT_EQ(events_.faults[0], 1);
  EXPECT_FALSE(host_.finished.has_value());
  EXPECT_EQ(host_.started.size(), 2u);
}

TEST_F(AttemptControllerTest, HedgeFailingLeavesThePrimaryAlone) {
  context_.hedge_delay = 50ms;
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  loop_.Advance(50ms);
  c.OnAttemptSent(1, 1, loop_.Now());
  EXPECT_EQ(c.OnResponseHeaders(1, Outcome(Failure::kUnavailable), true, true),
            HeadersVerdict::kDiscard);
  EXPECT_EQ(host_.cancelled, std::vector<int>{1});
  EXPECT_EQ(c.primary(), 0);
  EXPECT_EQ(events_.faults[1], 1);
  EXPECT_EQ(budget(0).retries_in_flight(), 0u);
  EXPECT_EQ(c.OnResponseHeaders(0, Outcome(Failure::kNone), false, true), HeadersVerdict::kForward);
}

TEST_F(AttemptControllerTest, PerTryTimeoutWithARunningHedgeCancelsOnlyThePrimary) {
  context_.per_try_timeout = 100ms;
  context_.hedge_delay = 50ms;
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  loop_.Advance(50ms);
  c.OnAttemptSent(1, 1, loop_.Now());
  loop_.Advance(50ms);
  EXPECT_EQ(host_.cancelled, std::vector<int>{0});
  EXPECT_EQ(c.primary(), 1);
  EXPECT_EQ(events_.hedges_won, 1);
  loop_.Advance(1s);
  EXPECT_EQ(host_.started.size(), 2u);  // no retry on top of the hedge
  EXPECT_FALSE(host_.finished.has_value());
}

TEST_F(AttemptControllerTest, PerTryTimeoutRetriesAReadAfterTheBackoff) {
  context_.per_try_timeout = 100ms;
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  loop_.Advance(100ms);
  EXPECT_EQ(host_.cancelled, std::vector<int>{0});
  EXPECT_EQ(events_.retries[static_cast<int>(RetryReason::kPerTryTimeout)], 1);
  EXPECT_EQ(events_.faults[0], 0);  // qpoold's own timeout is not the node's fault
  loop_.Advance(12500us);
  ASSERT_EQ(host_.started.size(), 2u);
  EXPECT_EQ(host_.started[1].kind, AttemptKind::kRetry);
  EXPECT_EQ(host_.started[1].avoid_node, 0);
}

TEST_F(AttemptControllerTest, HeldAnswerIsRetriedWhenTheMethodAllows) {
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  EXPECT_EQ(c.OnResponseHeaders(0, Outcome(Failure::kUnavailable), true, true),
            HeadersVerdict::kHeld);
  EXPECT_EQ(host_.held_slot, 0);
  EXPECT_EQ(host_.rewinds, 0);  // nothing decided until the exchange ends
  EXPECT_EQ(c.OnAttemptEnded(0, Outcome(Failure::kNone), absl::OkStatus()), EndVerdict::kHandled);
  EXPECT_EQ(host_.rewinds, 1);
  EXPECT_EQ(host_.held_slot, -1);
  EXPECT_EQ(budget(0).retries_in_flight(), 1u);
  loop_.Advance(12500us);
  ASSERT_EQ(host_.started.size(), 2u);
  EXPECT_EQ(events_.retries[static_cast<int>(RetryReason::kUnavailable)], 1);
  c.OnAttemptSent(0, 1, loop_.Now());
  EXPECT_EQ(c.OnResponseHeaders(0, Outcome(Failure::kNone), false, true), HeadersVerdict::kForward);
  EXPECT_EQ(c.attempts(), 2u);
  EXPECT_FALSE(host_.passed_on);
}

TEST_F(AttemptControllerTest, HeldAnswerIsPassedOnWhenTheMethodMayNotRepeat) {
  host_.retry_class = RetryClass::kNeverRepeat;
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  EXPECT_EQ(c.OnResponseHeaders(0, Outcome(Failure::kUnavailable), true, true),
            HeadersVerdict::kHeld);
  c.OnAttemptEnded(0, Outcome(Failure::kNone), absl::OkStatus());
  EXPECT_TRUE(host_.passed_on);
  EXPECT_FALSE(host_.finished.has_value());
  loop_.Advance(1s);
  EXPECT_EQ(host_.started.size(), 1u);
  EXPECT_EQ(events_.faults[0], 1);  // UNAVAILABLE still counts against the node
}

TEST_F(AttemptControllerTest, HeldAnswerBeforeTheWholeRequestWentOutStopsSendingIt) {
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  EXPECT_EQ(c.OnResponseHeaders(0, Outcome(Failure::kUnavailable), true, /*request_sent=*/false),
            HeadersVerdict::kHeld);
  EXPECT_EQ(host_.cancelled, std::vector<int>{0});
  EXPECT_EQ(host_.rewinds, 1);  // decided at once: a retry
  loop_.Advance(12500us);
  EXPECT_EQ(host_.started.size(), 2u);
}

TEST_F(AttemptControllerTest, WholeAnswerWithoutReplayCopyIsForwarded) {
  host_.can_replay = false;  // the request outgrew the replay buffer
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  EXPECT_EQ(c.OnResponseHeaders(0, Outcome(Failure::kUnavailable), true, true),
            HeadersVerdict::kForward);
  EXPECT_EQ(host_.held_slot, -1);
}

TEST_F(AttemptControllerTest, BudgetRefusalPassesTheHeldAnswerOn) {
  for (int i = 0; i < 50; ++i) budget(0).OnAttemptFailed();  // 50 of 100 tokens left
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  c.OnResponseHeaders(0, Outcome(Failure::kUnavailable), true, true);
  c.OnAttemptEnded(0, Outcome(Failure::kNone), absl::OkStatus());
  EXPECT_TRUE(host_.passed_on);
  EXPECT_EQ(events_.refused[static_cast<int>(RetryRefusal::kBudget)], 1);
  EXPECT_EQ(budget(0).retries_in_flight(), 0u);
  loop_.Advance(1s);
  EXPECT_EQ(host_.started.size(), 1u);
}

TEST_F(AttemptControllerTest, RetriesInFlightLimitRefusesWithTokensLeft) {
  // No window to wait for a place in: no deadline, retry.unreachable_wait off (0).
  RetryTicket a(budget(0)), b(budget(0)), c3(budget(0));  // min_retries_in_flight: 3
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  c.OnAttemptEnded(0, Outcome(Failure::kUnavailable), absl::UnavailableError("lost"));
  EXPECT_EQ(events_.refused[static_cast<int>(RetryRefusal::kInFlight)], 1);
  ASSERT_TRUE(host_.finished.has_value());
  EXPECT_EQ(host_.finished->message(), "lost");
}

// Issue 14 item 7: with a window to wait in (retry.unreachable_wait, or the caller's deadline), a
// retry the retries-in-flight limit refuses waits for a place instead of failing the call.
TEST_F(AttemptControllerTest, RetryRefusedForAPlaceWaitsForOneAndStartsWhenOneFrees) {
  AttemptController& c = CallRefusedARetryPlace();
  EXPECT_FALSE(host_.finished.has_value());
  EXPECT_EQ(context_.waiting_for_node, 1u);  // bounded like queued calls
  loop_.Advance(3s);
  EXPECT_EQ(host_.started.size(), 1u);  // no place yet
  places_.pop_back();                   // another call's retry ended
  loop_.Advance(1s);
  ASSERT_EQ(host_.started.size(), 2u);
  EXPECT_EQ(host_.started[1].kind, AttemptKind::kRetry);
  EXPECT_EQ(host_.started[1].avoid_node, 0);
  EXPECT_EQ(budget(0).retries_in_flight(), 3u);  // the retry holds the freed place
  EXPECT_EQ(context_.waiting_for_node, 0u);
  EXPECT_EQ(events_.retries[static_cast<int>(RetryReason::kUnavailable)], 1);
  EXPECT_EQ(events_.refused[static_cast<int>(RetryRefusal::kInFlight)], 0);
  c.OnAttemptSent(0, 0, loop_.Now());
  EXPECT_EQ(c.OnResponseHeaders(0, Outcome(Failure::kNone), false, true), HeadersVerdict::kForward);
}

TEST_F(AttemptControllerTest, WaitForARetryPlaceEndsWithUnreachableWaitAndPassesTheAnswerOn) {
  context_.unreachable_wait = 10s;
  TakeEveryRetryPlace();  // never given back
  const MonoTime start = loop_.Now();
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  c.OnResponseHeaders(0, Outcome(Failure::kUnavailable), true, true);
  c.OnAttemptEnded(0, Outcome(Failure::kNone), absl::OkStatus());
  loop_.Advance(10s - 1ms);
  EXPECT_FALSE(host_.passed_on);
  loop_.Advance(1ms);
  EXPECT_TRUE(host_.passed_on);  // Qdrant's UNAVAILABLE, as it came, at the window's end
  EXPECT_EQ(loop_.Now(), start + 10s);
  EXPECT_EQ(host_.started.size(), 1u);
  EXPECT_EQ(events_.refused[static_cast<int>(RetryRefusal::kInFlight)], 1);
  EXPECT_EQ(context_.waiting_for_node, 0u);
  loop_.Advance(10s);
  EXPECT_EQ(host_.started.size(), 1u);
}

TEST_F(AttemptControllerTest, WaitForARetryPlaceEndsBeforeTheCallersDeadline) {
  context_.unreachable_wait = 10s;  // not for a call with a deadline of its own
  TakeEveryRetryPlace();
  const MonoTime deadline = loop_.Now() + 2s;
  AttemptController& c = Start(deadline);
  c.OnAttemptSent(0, 0, loop_.Now());
  loop_.Advance(300ms);  // the failed attempt took 300 ms: a retry needs as long
  c.OnAttemptEnded(0, Outcome(Failure::kUnavailable), absl::UnavailableError("lost"));
  EXPECT_FALSE(host_.finished.has_value());
  loop_.Advance(1s);
  EXPECT_FALSE(host_.finished.has_value());
  loop_.Advance(1s);
  ASSERT_TRUE(host_.finished.has_value());
  EXPECT_EQ(host_.finished->code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(host_.finished->message().find("retries in flight"), std::string::npos);
  // Given up when a retry could no longer run 300 ms and answer 100 ms before the deadline.
  EXPECT_EQ(events_.refused[static_cast<int>(RetryRefusal::kInFlight)], 1);
  EXPECT_EQ(host_.started.size(), 1u);
}

TEST_F(AttemptControllerTest, WaitForARetryPlaceGivesUpAtTheLatestUsefulMoment) {
  TakeEveryRetryPlace();
  const MonoTime deadline = loop_.Now() + 2s;
  AttemptController& c = Start(deadline);
  c.OnAttemptSent(0, 0, loop_.Now());
  loop_.Advance(300ms);
  c.OnAttemptEnded(0, Outcome(Failure::kUnavailable), absl::UnavailableError("lost"));
  while (!host_.finished.has_value() && loop_.Now() < deadline) loop_.Advance(1ms);
  // deadline - 300 ms (the retry's run) - 100 ms (the answer's margin for a 2 s timeout).
  EXPECT_EQ(loop_.Now(), deadline - 400ms);
}

TEST_F(AttemptControllerTest, AppCancellingEndsTheWaitForARetryPlaceAtOnce) {
  AttemptController& c = CallRefusedARetryPlace();
  EXPECT_EQ(context_.waiting_for_node, 1u);
  c.Stop();
  EXPECT_EQ(context_.waiting_for_node, 0u);
  EXPECT_FALSE(budget(0).has_waiters());
  places_.pop_back();  // not for the stopped call
  loop_.Advance(20s);
  EXPECT_EQ(host_.started.size(), 1u);
  EXPECT_FALSE(host_.finished.has_value());
  EXPECT_EQ(budget(0).retries_in_flight(), 2u);
}

TEST_F(AttemptControllerTest, TokensRunningOutEndTheWaitForARetryPlace) {
  CallRefusedARetryPlace();
  for (int i = 0; i < 50; ++i) budget(0).OnAttemptFailed();  // other calls failing meanwhile
  loop_.Advance(1s);
  ASSERT_TRUE(host_.finished.has_value());
  EXPECT_NE(host_.finished->message().find("tokens"), std::string::npos);
  EXPECT_EQ(events_.refused[static_cast<int>(RetryRefusal::kBudget)], 1);
  EXPECT_EQ(context_.waiting_for_node, 0u);
}

TEST_F(AttemptControllerTest, CallsWaitingForARetryPlaceAreBoundedLikeQueuedOnes) {
  context_.max_waiting_for_node = 0;
  CallRefusedARetryPlace();
  ASSERT_TRUE(host_.finished.has_value());  // no room to wait: refused at once
  EXPECT_EQ(events_.refused[static_cast<int>(RetryRefusal::kInFlight)], 1);
}

// Issue 14 leftover: a waiting retry is woken when a place frees, not found by a later look (the
// looks backed off up to retry.backoff_max, 1 s). No time passes between the two.
TEST_F(AttemptControllerTest, WaitingRetryStartsInTheLoopTurnThePlaceFreesIn) {
  CallRefusedARetryPlace();
  loop_.Advance(3s);  // past the retry's backoff, well into the wait
  ASSERT_EQ(host_.started.size(), 1u);
  const MonoTime freed_at = loop_.Now();
  places_.pop_back();  // another call's retry ended
  loop_.Advance(0ms);  // what the loop runs before its clock moves
  ASSERT_EQ(host_.started.size(), 2u);
  EXPECT_EQ(host_.started[1].kind, AttemptKind::kRetry);
  EXPECT_EQ(host_.started[1].at, freed_at);
  EXPECT_EQ(budget(0).retries_in_flight(), 3u);
  EXPECT_FALSE(budget(0).has_waiters());
  EXPECT_EQ(context_.waiting_for_node, 0u);
}

// Calls that wait for a place get one in the order they started to wait, whatever their
// timers. (The looks did not: the later waiter could look first after a place freed.)
TEST_F(AttemptControllerTest, WaitingRetriesGetPlacesFirstComeFirstServed) {
  context_.unreachable_wait = 10s;
  TakeEveryRetryPlace();
  StartCalls(2);
  for (auto& call : calls_) call->OnAttemptSent(0, 0, loop_.Now());
  calls_[1]->OnAttemptEnded(0, Outcome(Failure::kUnavailable), absl::UnavailableError("lost"));
  loop_.Advance(300ms);
  calls_[0]->OnAttemptEnded(0, Outcome(Failure::kUnavailable), absl::UnavailableError("lost"));
  loop_.Advance(500ms);
  places_.pop_back();
  const MonoTime limit = loop_.Now() + 2s;
  while (hosts_[0]->started.size() == 1 && hosts_[1]->started.size() == 1 && loop_.Now() < limit) {
    loop_.Advance(1ms);
  }
  EXPECT_EQ(hosts_[1]->started.size(), 2u);  // the first to wait
  EXPECT_EQ(hosts_[0]->started.size(), 1u);
  places_.pop_back();
  loop_.Advance(0ms);
  EXPECT_EQ(hosts_[0]->started.size(), 2u);
  EXPECT_EQ(budget(0).retries_in_flight(), 3u);  // one left of TakeEveryRetryPlace, two retries
}

TEST_F(AttemptControllerTest, WaiterDestroyedWhileWaitingIsNeverWoken) {
  context_.unreachable_wait = 10s;
  TakeEveryRetryPlace();
  StartCalls(2);
  for (auto& call : calls_) {
    call->OnAttemptSent(0, 0, loop_.Now());
    call->OnAttemptEnded(0, Outcome(Failure::kUnavailable), absl::UnavailableError("lost"));
  }
  loop_.Advance(1s);
  calls_[0].reset();  // the first in line goes (its app went away), without Stop()
  EXPECT_EQ(context_.waiting_for_node, 1u);
  places_.pop_back();
  loop_.Advance(0ms);
  EXPECT_EQ(hosts_[0]->started.size(), 1u);
  EXPECT_EQ(hosts_[1]->started.size(), 2u);  // the place went to the next in line
  EXPECT_EQ(budget(0).retries_in_flight(), 3u);
  EXPECT_FALSE(budget(0).has_waiters());
}

TEST_F(AttemptControllerTest, MoreCallsInFlightOpenAPlaceForAWaitingRetry) {
  CallRefusedARetryPlace();  // 1 call in flight: the floor (3) is the limit
  loop_.Advance(1s);
  StartCalls(19);  // 20 calls: 20% of them is 4 places
  loop_.Advance(0ms);
  EXPECT_EQ(host_.started.size(), 2u);
  EXPECT_EQ(budget(0).retries_in_flight(), 4u);
}

TEST_F(AttemptControllerTest, RetryFindingItsNodeUnreachableGivesItsPlaceBack) {
  context_.unreachable_wait = 10s;
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  c.OnAttemptEnded(0, Outcome(Failure::kUnavailable), absl::UnavailableError("lost"));
  EXPECT_EQ(budget(0).retries_in_flight(), 1u);
  loop_.Advance(1s);
  ASSERT_EQ(host_.started.size(), 2u);
  c.OnAttemptNotStarted(0, 0, absl::UnavailableError("connect refused"), true);
  EXPECT_EQ(budget(0).retries_in_flight(), 0u);  // it adds no load to the node it waits for
  EXPECT_EQ(context_.waiting_for_node, 1u);
}

// The JS client case of issue 14 at the budget's defaults: 10 calls lose their connection to the
// only node at once, which is down for 2 s. None fails, and no more than the floor of retries (3)
// run at once.
TEST_F(AttemptControllerTest, NodeRestartWithTenCallsInFlightFailsNoCall) {
  context_.unreachable_wait = 10s;
  StartCalls(10);
  for (auto& call : calls_) call->OnAttemptSent(0, 0, loop_.Now());
  for (auto& call : calls_) {  // the node is killed
    call->OnAttemptEnded(0, Outcome(Failure::kUnavailable), absl::UnavailableError("lost"));
  }
  const MonoTime back = loop_.Now() + 2s;
  const uint32_t most_in_flight = DriveCalls(
      [&] { return loop_.Now() < back + 13s; },
      [&](int i) {
        if (loop_.Now() < back) {
          calls_[i]->OnAttemptNotStarted(0, 0, absl::UnavailableError("connect refused"), true);
          return;
        }
        calls_[i]->OnAttemptSent(0, 0, loop_.Now());
        EXPECT_EQ(calls_[i]->OnResponseHeaders(0, Outcome(Failure::kNone), false, true),
                  HeadersVerdict::kForward);
      });
  for (size_t i = 0; i < calls_.size(); ++i) {
    EXPECT_TRUE(calls_[i]->committed()) << "call " << i;
    EXPECT_FALSE(hosts_[i]->finished.has_value())
        << "call " << i << ": " << hosts_[i]->finished->message();
  }
  EXPECT_LE(most_in_flight, 3u);
  EXPECT_EQ(events_.refused[static_cast<int>(RetryRefusal::kInFlight)], 0);
}

// What the budget is for still holds: a node that answers UNAVAILABLE fast to everything gets a
// bounded number of retries, never more than the in-flight limit at once, and the calls fail
// fast (the tokens end their waits), not at the end of retry.unreachable_wait.
TEST_F(AttemptControllerTest, NodeAnsweringUnavailableFastGetsBoundedRetries) {
  context_.unreachable_wait = 10s;
  constexpr int kCalls = 100;
  StartCalls(kCalls);
  const MonoTime start = loop_.Now();
  size_t attempts = 0;
  auto all_answered = [&] {
    return std::all_of(hosts_.begin(), hosts_.end(), [](const auto& h) { return h->passed_on; });
  };
  auto unavailable = [&](int i) {
    ++attempts;
    calls_[i]->OnAttemptSent(0, 0, loop_.Now());
    calls_[i]->OnResponseHeaders(0, Outcome(Failure::kUnavailable), true, true);
    calls_[i]->OnAttemptEnded(0, Outcome(Failure::kNone), absl::OkStatus());
  };
  for (int i = 0; i < kCalls; ++i) unavailable(i);  // the first attempts
  const uint32_t most_in_flight =
      DriveCalls([&] { return !all_answered() && loop_.Now() < start + 20s; }, unavailable);
  EXPECT_TRUE(all_answered());
  EXPECT_LT(loop_.Now(), start + 2s);        // failed fast
  EXPECT_LE(attempts, size_t{kCalls + 50});  // at most half the tokens' worth of retries
  EXPECT_LE(most_in_flight, 20u);            // max(3, 20% of 100 calls in flight)
  EXPECT_GT(events_.refused[static_cast<int>(RetryRefusal::kBudget)], 0);
}

TEST_F(AttemptControllerTest, NeverReachedRetriesAtOnceWithoutSpendingBudget) {
  for (int i = 0; i < 50; ++i) budget(0).OnAttemptFailed();  // policy retries would be refused
  host_.retry_class = RetryClass::kNeverRepeat;              // any method qualifies
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  c.OnAttemptEnded(0, Outcome(Failure::kNeverReached), absl::UnavailableError("refused"));
  ASSERT_EQ(host_.started.size(), 2u);
  EXPECT_EQ(host_.started[1].at, host_.started[0].at);  // no backoff
  EXPECT_EQ(host_.started[1].avoid_node, 0);
  EXPECT_EQ(events_.retries[static_cast<int>(RetryReason::kTransparent)], 1);
  EXPECT_EQ(budget(0).retries_in_flight(), 0u);
  EXPECT_EQ(events_.results, 0);  // a refused stream says nothing about the node
}

TEST_F(AttemptControllerTest, StaleConnectionAttemptsDoNotUseUpMaxAttempts) {
  // A node restarted: the request loses its connection (a policy retry), then meets keep-alive
  // connections the old process left behind; the policy retries left are intact.
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  c.OnAttemptEnded(0, Outcome(Failure::kUnavailable), absl::UnavailableError("lost"));
  loop_.Advance(1s);  // the backoff
  for (int stale = 0; stale < 5; ++stale) {
    c.OnAttemptSent(0, 0, loop_.Now());
    c.OnAttemptEnded(0, Outcome(Failure::kStaleConnection), absl::UnavailableError("stale"));
    loop_.Advance(1ms);
  }
  c.OnAttemptSent(0, 0, loop_.Now());
  c.OnAttemptEnded(0, Outcome(Failure::kUnavailable), absl::UnavailableError("lost again"));
  loop_.Advance(1s);
  EXPECT_FALSE(host_.finished.has_value());  // 2 of retry.max_attempts (3) used
  EXPECT_EQ(host_.started.size(), 8u);
  c.OnAttemptSent(0, 0, loop_.Now());
  c.OnAttemptEnded(0, Outcome(Failure::kUnavailable), absl::UnavailableError("third"));
  ASSERT_TRUE(host_.finished.has_value());
  EXPECT_EQ(host_.finished->message(), "third");
  EXPECT_EQ(events_.retries[static_cast<int>(RetryReason::kTransparent)], 5);
  EXPECT_EQ(events_.refused[static_cast<int>(RetryRefusal::kMaxAttempts)], 1);
}

TEST_F(AttemptControllerTest, StaleConnectionAttemptsAreBounded) {
  AttemptController& c = Start();
  for (uint32_t i = 0; i < kMaxStaleConnectionAttempts; ++i) {
    ASSERT_FALSE(host_.finished.has_value()) << i;
    c.OnAttemptSent(0, 0, loop_.Now());
    c.OnAttemptEnded(0, Outcome(Failure::kStaleConnection), absl::UnavailableError("stale"));
    loop_.Advance(1ms);
  }
  ASSERT_TRUE(host_.finished.has_value());
  EXPECT_EQ(host_.started.size(), kMaxStaleConnectionAttempts);
  EXPECT_EQ(events_.refused[static_cast<int>(RetryRefusal::kMaxAttempts)], 1);
}

TEST_F(AttemptControllerTest, RequestNotSentIsAnsweredNeverRetried) {
  // nghttp2 refused the request on qpool's side (a header block over its send limit): not the
  // node's refusal, and a replay would fail the same way.
  host_.retry_class = RetryClass::kRead;
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  EXPECT_EQ(c.OnAttemptEnded(0, Outcome(Failure::kNotSent), absl::ResourceExhaustedError("big")),
            EndVerdict::kHandled);
  ASSERT_TRUE(host_.finished.has_value());
  EXPECT_EQ(host_.finished->code(), absl::StatusCode::kResourceExhausted);
  loop_.Advance(1s);
  EXPECT_EQ(host_.started.size(), 1u);
  EXPECT_EQ(events_.retries[static_cast<int>(RetryReason::kTransparent)], 0);
  EXPECT_EQ(events_.results, 0);  // says nothing about the node
}

TEST_F(AttemptControllerTest, UnreachableNodeRetriesUpToMaxAttemptsWithoutADeadline) {
  AttemptController& c = Start();
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(host_.started.size(), static_cast<size_t>(i + 1));
    c.OnAttemptNotStarted(0, 0, absl::UnavailableError("connect refused"), true);
    EXPECT_EQ(host_.started.size(), static_cast<size_t>(i + 1));  // never from inside the call
    loop_.Advance(1s);
  }
  EXPECT_EQ(host_.started.size(), 3u);
  EXPECT_EQ(host_.started[1].avoid_node, 0);
  ASSERT_TRUE(host_.finished.has_value());
  EXPECT_EQ(host_.finished->code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(host_.finished->message().find("tried 3 times"), std::string::npos);
  EXPECT_NE(host_.finished->message().find("retry.max_attempts"), std::string::npos);
  EXPECT_EQ(c.attempts(), 0u);  // nothing was sent
}

TEST_F(AttemptControllerTest, UnreachableNodeWithoutADeadlineWaitsUpToUnreachableWait) {
  // retry.unreachable_wait: a call with no deadline of its own waits for the node like a gRPC
  // wait-for-ready call, tries spread over the window and the last one at its end.
  context_.unreachable_wait = 2s;
  const MonoTime start = loop_.Now();
  AttemptController& c = Start();
  size_t reported = 0;
  while (!host_.finished.has_value() && loop_.Now() < start + 5s) {
    if (host_.started.size() > reported) {
      reported = host_.started.size();
      c.OnAttemptNotStarted(0, 0, absl::UnavailableError("connect refused"), true);
      if (!host_.finished.has_value()) {
        EXPECT_EQ(context_.waiting_for_node, 1u);
      }
    }
    loop_.Advance(1ms);
  }
  ASSERT_TRUE(host_.finished.has_value());
  EXPECT_GT(host_.started.size(), 3u);             // past max_attempts
  EXPECT_EQ(host_.started.back().at, start + 2s);  // the last try at the window's end
  EXPECT_NE(host_.finished->message().find("retry.unreachable_wait"), std::string::npos);
  EXPECT_EQ(context_.waiting_for_node, 0u);
}

TEST_F(AttemptControllerTest, UnreachableWaitEndsAsSoonAsTheNodeTakesTheCall) {
  context_.unreachable_wait = 10s;
  AttemptController& c = Start();
  c.OnAttemptNotStarted(0, 0, absl::UnavailableError("connect refused"), true);
  loop_.Advance(1s);
  ASSERT_EQ(host_.started.size(), 2u);
  EXPECT_EQ(context_.waiting_for_node, 0u);  // trying again, no longer waiting
  c.OnAttemptSent(0, 0, loop_.Now());
  EXPECT_EQ(c.OnResponseHeaders(0, Outcome(Failure::kNone), false, true), HeadersVerdict::kForward);
}

TEST_F(AttemptControllerTest, CallsWaitingForANodeAreBoundedLikeQueuedOnes) {
  context_.unreachable_wait = 10s;
  context_.max_waiting_for_node = 1;
  AttemptController& first = Start();
  first.OnAttemptNotStarted(0, 0, absl::UnavailableError("connect refused"), true);
  EXPECT_EQ(context_.waiting_for_node, 1u);
  FakeHost other_host(loop_);
  AttemptController second(context_, loop_, random_, other_host);
  second.Start(loop_.Now(), std::nullopt);
  second.OnAttemptNotStarted(0, 0, absl::UnavailableError("connect refused"), true);
  ASSERT_TRUE(other_host.finished.has_value());  // no room: answered at once
  EXPECT_EQ(other_host.finished->code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(other_host.finished->message().find("upstream.max_pending"), std::string::npos);
  EXPECT_FALSE(host_.finished.has_value());
}

TEST_F(AttemptControllerTest, AppCancellingEndsTheWaitForANodeAtOnce) {
  context_.unreachable_wait = 10s;
  AttemptController& c = Start();
  c.OnAttemptNotStarted(0, 0, absl::UnavailableError("connect refused"), true);
  EXPECT_EQ(context_.waiting_for_node, 1u);
  c.Stop();  // the app cancelled, or went away
  EXPECT_EQ(context_.waiting_for_node, 0u);
  loop_.Advance(20s);
  EXPECT_EQ(host_.started.size(), 1u);
  EXPECT_FALSE(host_.finished.has_value());
}

TEST_F(AttemptControllerTest, UnreachableWaitIsForCallsWithoutADeadlineOnly) {
  // A reached node's UNAVAILABLE keeps the max_attempts rule.
  context_.unreachable_wait = 10s;
  AttemptController& c = Start();
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(host_.started.size(), static_cast<size_t>(i + 1));
    c.OnAttemptSent(0, 0, loop_.Now());
    c.OnResponseHeaders(0, Outcome(Failure::kUnavailable), true, true);
    c.OnAttemptEnded(0, Outcome(Failure::kNone), absl::OkStatus());
    loop_.Advance(2s);
  }
  EXPECT_EQ(host_.started.size(), 3u);
  EXPECT_TRUE(host_.passed_on);  // Qdrant's UNAVAILABLE, as it came
}

TEST_F(AttemptControllerTest, UnreachableNodeRetriesUntilTheDeadline) {
  const MonoTime deadline = loop_.Now() + 2s;
  AttemptController& c = Start(deadline);
  size_t reported = 0;
  while (!host_.finished.has_value() && loop_.Now() < deadline + 1s) {
    if (host_.started.size() > reported) {
      reported = host_.started.size();
      c.OnAttemptNotStarted(0, 0, absl::UnavailableError("connect refused"), true);
    }
    loop_.Advance(1ms);
  }
  ASSERT_TRUE(host_.finished.has_value());
  EXPECT_GT(host_.started.size(), 3u);  // past max_attempts: the deadline bounds the wait
  // The last try leaves a twentieth of the 2 s for the answer to reach the caller before it gives
  // up (UnreachableAnswerMargin): it would otherwise see DEADLINE_EXCEEDED, not the reason.
  EXPECT_LT(host_.started.back().at, deadline - 100ms);
  EXPECT_LT(loop_.Now(), deadline - 100ms);  // answered then, at the latest
  EXPECT_NE(host_.finished->message().find("until the deadline"), std::string::npos);
}

TEST_F(AttemptControllerTest, BackoffDelayIsHonoured) {
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  c.OnAttemptEnded(0, Outcome(Failure::kUnavailable), absl::UnavailableError("lost"));
  loop_.Advance(12ms);
  EXPECT_EQ(host_.started.size(), 1u);
  loop_.Advance(500us);  // 25 ms x 0.5
  ASSERT_EQ(host_.started.size(), 2u);
  c.OnAttemptSent(0, 1, loop_.Now());
  c.OnAttemptEnded(0, Outcome(Failure::kUnavailable), absl::UnavailableError("lost"));
  loop_.Advance(24ms);  // retry 2: 50 ms x 0.5
  EXPECT_EQ(host_.started.size(), 2u);
  loop_.Advance(1ms);
  EXPECT_EQ(host_.started.size(), 3u);
}

TEST_F(AttemptControllerTest, PushbackIsHonoured) {
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  EXPECT_EQ(c.OnResponseHeaders(0, Outcome(Failure::kResourceExhausted, 300ms), true, true),
            HeadersVerdict::kHeld);
  c.OnAttemptEnded(0, Outcome(Failure::kNone), absl::OkStatus());
  loop_.Advance(299ms);
  EXPECT_EQ(host_.started.size(), 1u);
  loop_.Advance(1ms);
  EXPECT_EQ(host_.started.size(), 2u);
  EXPECT_EQ(events_.retries[static_cast<int>(RetryReason::kResourceExhausted)], 1);
  EXPECT_EQ(events_.faults[0], 0);  // rate limiting is not a node fault
}

TEST_F(AttemptControllerTest, ResourceExhaustedWithoutPushbackIsForwarded) {
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  EXPECT_EQ(c.OnResponseHeaders(0, Outcome(Failure::kResourceExhausted), true, true),
            HeadersVerdict::kForward);
}

TEST_F(AttemptControllerTest, DeadlineStopsARetryThatCouldNotFinish) {
  AttemptController& c = Start(loop_.Now() + 100ms);
  c.OnAttemptSent(0, 0, loop_.Now());
  loop_.Advance(80ms);
  // 20 ms left; the retry would wait 12.5 ms and needs the 80 ms the attempt took.
  c.OnAttemptEnded(0, Outcome(Failure::kUnavailable), absl::UnavailableError("lost"));
  EXPECT_EQ(events_.refused[static_cast<int>(RetryRefusal::kDeadline)], 1);
  ASSERT_TRUE(host_.finished.has_value());
  EXPECT_EQ(host_.finished->message(), "lost");
  loop_.Advance(1s);
  EXPECT_EQ(host_.started.size(), 1u);
}

TEST_F(AttemptControllerTest, MaxAttemptsStopsRetries) {
  AttemptController& c = Start();
  for (int i = 0; i < 3; ++i) {
    c.OnAttemptSent(0, 0, loop_.Now());
    c.OnAttemptEnded(0, Outcome(Failure::kUnavailable), absl::UnavailableError("lost"));
    loop_.Advance(1s);
  }
  EXPECT_EQ(host_.started.size(), 3u);
  EXPECT_EQ(events_.refused[static_cast<int>(RetryRefusal::kMaxAttempts)], 1);
  EXPECT_TRUE(host_.finished.has_value());
}

TEST_F(AttemptControllerTest, ResetIsPassedOnNotRetried) {
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  EXPECT_EQ(c.OnAttemptEnded(0, Outcome(Failure::kAborted), absl::OkStatus()),
            EndVerdict::kPassOnClose);
  EXPECT_EQ(events_.faults[0], 1);
  loop_.Advance(1s);
  EXPECT_EQ(host_.started.size(), 1u);
  EXPECT_FALSE(host_.finished.has_value());
}

TEST_F(AttemptControllerTest, ConnectionLostAfterTheCommitPointEndsTheCall) {
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  c.OnResponseHeaders(0, Outcome(Failure::kNone), false, true);
  c.OnAttemptEnded(0, Outcome(Failure::kUnavailable), absl::UnavailableError("lost"));
  ASSERT_TRUE(host_.finished.has_value());
  loop_.Advance(1s);
  EXPECT_EQ(host_.started.size(), 1u);
}

TEST_F(AttemptControllerTest, StopCancelsAttemptsTimersAndTickets) {
  context_.hedge_delay = 50ms;
  context_.per_try_timeout = 500ms;
  AttemptController& c = Start();
  c.OnAttemptSent(0, 0, loop_.Now());
  loop_.Advance(50ms);
  EXPECT_EQ(budget(0).retries_in_flight(), 1u);
  c.Stop();
  EXPECT_EQ(host_.cancelled, (std::vector<int>{1, 0}));
  EXPECT_EQ(budget(0).retries_in_flight(), 0u);
  loop_.Advance(1s);
  EXPECT_EQ(host_.started.size(), 2u);
  EXPECT_EQ(host_.cancelled.size(), 2u);
}

class ReplayBufferTest : public ::testing::Test {
 protected:
  void SetUp() override {
    limits_.per_call = 10;
    limits_.total = 15;
    limits_.total_bytes = &total_;
  }
  std::atomic<int64_t> total_{0};
  ReplayLimits limits_;
  RecordingEvents events_;
  const uint8_t bytes_[8] = {1, 2, 3, 4, 5, 6, 7, 8};
};

TEST_F(ReplayBufferTest, KeepsEveryByteUntilReleased) {
  ReplayBuffer replay(limits_, &events_);
  replay.Keep(bytes_, 4);
  replay.Keep(bytes_ + 4, 4);
  EXPECT_TRUE(replay.intact());
  EXPECT_EQ(replay.size(), 8u);
  EXPECT_EQ(total_.load(), 8);
  std::string copy;
  replay.bytes().CopyPrefix(8, copy);
  EXPECT_EQ(copy, std::string("\1\2\3\4\5\6\7\10", 8));
  replay.Release();
  EXPECT_FALSE(replay.intact());
  EXPECT_EQ(total_.load(), 0);
  replay.Keep(bytes_, 1);  // after the commit point nothing is kept
  EXPECT_EQ(replay.size(), 0u);
}

TEST_F(ReplayBufferTest, PerCallLimitDropsTheCopyForGood) {
  ReplayBuffer replay(limits_, &events_);
  replay.Keep(bytes_, 8);
  replay.Keep(bytes_, 3);  // 11 > 10
  EXPECT_FALSE(replay.intact());
  EXPECT_EQ(replay.size(), 0u);
  EXPECT_EQ(total_.load(), 0);
  EXPECT_EQ(events_.replay_refused[static_cast<int>(ReplayLimit::kPerCall)], 1);
  replay.Keep(bytes_, 1);
  EXPECT_EQ(replay.size(), 0u);
  EXPECT_EQ(events_.replay_refused[static_cast<int>(ReplayLimit::kPerCall)], 1);  // once
}

TEST_F(ReplayBufferTest, TotalLimitCountsEveryCallsCopy) {
  ReplayBuffer first(limits_, &events_);
  ReplayBuffer second(limits_, &events_);
  first.Keep(bytes_, 8);
  second.Keep(bytes_, 8);  // 16 > 15 for the process
  EXPECT_TRUE(first.intact());
  EXPECT_FALSE(second.intact());
  EXPECT_EQ(events_.replay_refused[static_cast<int>(ReplayLimit::kTotal)], 1);
  EXPECT_EQ(total_.load(), 8);
}

}  // namespace
}  // namespace qpool::retry
