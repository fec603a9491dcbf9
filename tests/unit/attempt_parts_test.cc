// The attempt controller's parts on their own, with the fake clock: AttemptSlots (the two slots
// and the hedge), UnreachableWait (how long a call waits for an unreachable node),
// RetryPlaceWait (the wait for a place among a node's retries in flight), NodeWaitCount,
// CallWindow and OnDemandTimer. attempt_controller_test drives them together.
#include <optional>
#include <string>
#include <vector>

#include "daemon/retry/attempt_slots.h"
#include "daemon/retry/node_wait.h"
#include "daemon/retry/on_demand_timer.h"
#include "daemon/retry/retry_place_wait.h"
#include "daemon/retry/unreachable_wait.h"
#include "gtest/gtest.h"
#include "tests/unit/fake_event_loop.h"

namespace qpool::retry {
namespace {

using namespace std::chrono_literals;

// Counts what the parts report; only hedges and refusals matter here.
class CountingEvents : public RetryEvents {
 public:
  void OnRetry(RetryClass, RetryReason) override { retries++; }
  void OnRetryRefused(RetryRefusal refusal) override { last_refusal = refusal; }
  void OnHedge(bool won) override { won ? wins++ : starts++; }
  void OnAttemptResult(size_t, bool, double) override {}
  void OnReplayRefused(ReplayLimit) override {}

  int retries = 0;
  int starts = 0;
  int wins = 0;
  std::optional<RetryRefusal> last_refusal;
};

class PartsTest : public ::testing::Test {
 protected:
  RetryBudget& budget(int node) { return context_.budgets[static_cast<size_t>(node)]; }

  testing::FakeEventLoop loop_;
  testing::FakeRandom random_{0.5};
  CountingEvents events_;
  RetryContext context_{RetryPolicyOptions{}, RetryBudget::Options{}, /*nodes=*/2, &events_};
};

// AttemptSlots ---------------------------------------------------------------------------------

// A host for the slots alone: hedges go to node 1, StartAttempt and CancelAttempt are recorded as
// "start <slot> <node>" and "cancel <slot>".
class SlotsHost : public AttemptHost {
 public:
  void StartAttempt(int slot, AttemptKind kind, int node, int avoid_node) override {
    EXPECT_EQ(kind, AttemptKind::kHedge);
    EXPECT_EQ(avoid_node, 0);
    log.push_back("start " + std::to_string(slot) + " " + std::to_string(node));
  }
  void CancelAttempt(int slot) override { log.push_back("cancel " + std::to_string(slot)); }
  int PickHedgeNode(int) override { return 1; }
  RetryClass ClassifyRequest() override { return RetryClass::kRead; }
  bool CanReplay() const override { return true; }
  bool WholeRequestHeld() const override { return whole; }
  void HoldAnswer(int) override {}
  void RewindRequest() override {}
  void PassOnHeldAnswer() override {}
  void FinishWith(const absl::Status&) override {}

  std::vector<std::string> log;
  bool whole = true;
};

class AttemptSlotsTest : public PartsTest {
 protected:
  // The primary (slot 0) sent to node 0, and the hedge armed for 50 ms.
  void PrimarySentAndHedgeArmed() {
    slots_.Asked(0);
    slots_.Sent(0, 0, loop_.Now());
    slots_.ArmHedge(50ms);
  }

  SlotsHost host_;
  AttemptSlots slots_{context_, loop_, host_};
};

TEST_F(AttemptSlotsTest, HedgeStartsAfterItsDelayOnAnotherNodeHoldingAPlace) {
  PrimarySentAndHedgeArmed();
  loop_.Advance(49ms);
  EXPECT_TRUE(host_.log.empty());
  loop_.Advance(1ms);
  EXPECT_EQ(host_.log, std::vector<std::string>{"start 1 1"});
  EXPECT_TRUE(slots_.is_hedge(1));
  EXPECT_FALSE(slots_.hedge_sent());             // asked, not sent yet
  EXPECT_EQ(budget(0).retries_in_flight(), 1u);  // paid on the primary's node
  EXPECT_EQ(events_.starts, 1);
  slots_.Sent(1, 1, loop_.Now());
  EXPECT_TRUE(slots_.hedge_sent());
}

TEST_F(AttemptSlotsTest, NoHedgeOnceItsDelayIsCancelled) {
  PrimarySentAndHedgeArmed();
  slots_.CancelHedgeDelay();
  loop_.Advance(1s);
  EXPECT_TRUE(host_.log.empty());
  EXPECT_EQ(budget(0).retries_in_flight(), 0u);
}

TEST_F(AttemptSlotsTest, NoHedgeUnlessThePrimaryIsOutWithTheWholeRequest) {
  slots_.Asked(0);  // no stream yet
  slots_.ArmHedge(50ms);
  loop_.Advance(1s);
  slots_.Sent(0, 0, loop_.Now());
  host_.whole = false;  // the app is still sending
  slots_.ArmHedge(50ms);
  loop_.Advance(1s);
  EXPECT_TRUE(host_.log.empty());
}

TEST_F(AttemptSlotsTest, NoHedgeWhenThePrimarysBudgetRefuses) {
  for (int i = 0; i < 50; ++i) budget(0).OnAttemptFailed();  // half the tokens: no retries
  PrimarySentAndHedgeArmed();
  loop_.Advance(50ms);
  EXPECT_TRUE(host_.log.empty());
  EXPECT_EQ(events_.last_refusal, RetryRefusal::kBudget);
}

TEST_F(AttemptSlotsTest, PromoteMakesTheHedgeThePrimaryAndCancelsTheOldOne) {
  PrimarySentAndHedgeArmed();
  loop_.Advance(50ms);
  slots_.Sent(1, 1, loop_.Now());
  slots_.Promote();
  EXPECT_EQ(slots_.primary(), 1);
  EXPECT_FALSE(slots_.is_hedge(1));
  EXPECT_EQ(host_.log, (std::vector<std::string>{"start 1 1", "cancel 0"}));
  EXPECT_EQ(budget(0).retries_in_flight(), 0u);  // the winner is no retry any more
  EXPECT_EQ(events_.wins, 1);
  EXPECT_EQ(slots_.node(1), 1);
}

TEST_F(AttemptSlotsTest, DropHedgeCancelsAStartedHedgeOnceAndGivesItsPlaceBack) {
  PrimarySentAndHedgeArmed();
  loop_.Advance(50ms);
  slots_.DropHedge();
  slots_.DropHedge();
  EXPECT_EQ(host_.log, (std::vector<std::string>{"start 1 1", "cancel 1"}));
  EXPECT_EQ(budget(0).retries_in_flight(), 0u);
  EXPECT_EQ(slots_.primary(), 0);
  EXPECT_FALSE(slots_.is_hedge(1));
}

TEST_F(AttemptSlotsTest, CancelAsksTheHostOnlyForASlotInUse) {
  slots_.Cancel(0);  // free
  slots_.Asked(0);
  slots_.Cancel(0);
  slots_.Cancel(0);  // free again
  slots_.Asked(0);
  slots_.Released(0);  // the host let go of it
  slots_.Cancel(0);
  EXPECT_EQ(host_.log, std::vector<std::string>{"cancel 0"});
}

// UnreachableWait -------------------------------------------------------------------------------

class UnreachableWaitTest : public PartsTest {
 protected:
  CallWindow window_{loop_.Now(), std::nullopt, false};
  UnreachableWait wait_{context_, random_};
};

TEST_F(UnreachableWaitTest, WithoutADeadlineTriesMaxAttemptsTimes) {
  // Backoffs with jitter 0.5: 12.5 ms, then 25 ms; retry.max_attempts: 3.
  EXPECT_EQ(wait_.NextTry(window_, loop_.Now(), true), Duration(12500us));
  EXPECT_EQ(wait_.NextTry(window_, loop_.Now(), true), Duration(25ms));
  loop_.Advance(40ms);
  EXPECT_EQ(wait_.NextTry(window_, loop_.Now(), true), std::nullopt);
  EXPECT_EQ(wait_.tries(), 3u);
  EXPECT_EQ(wait_.GiveUpStatus(absl::UnavailableError("no node"), window_, loop_.Now()),
            absl::UnavailableError("no node; tried 3 times over 40 ms (retry.max_attempts)"));
}

TEST_F(UnreachableWaitTest, NextTryIsAtLeastOneMillisecondAway) {
  random_.set(0);  // a backoff of 0
  EXPECT_EQ(wait_.NextTry(window_, loop_.Now(), true), Duration(1ms));
}

TEST_F(UnreachableWaitTest, UnreachableWaitEndsTheWaitAtItsEnd) {
  context_.unreachable_wait = 20ms;
  loop_.Advance(10ms);
  EXPECT_EQ(wait_.NextTry(window_, loop_.Now(), true), Duration(10ms));  // not 12.5 ms: the end
  loop_.Advance(9500us);
  EXPECT_EQ(wait_.NextTry(window_, loop_.Now(), true), std::nullopt);  // under 1 ms left
  EXPECT_EQ(wait_.GiveUpStatus(absl::UnavailableError("x"), window_, loop_.Now()).message(),
            "x; tried 2 times over 19 ms (retry.unreachable_wait)");
}

TEST_F(UnreachableWaitTest, CallersDeadlineKeepsTheAnswerMargin) {
  // A 2 s caller's deadline: the last try must leave 100 ms (a twentieth) for the answer.
  window_.deadline = window_.started_at + 2s;
  window_.callers_deadline = true;
  EXPECT_EQ(window_.AnswerMargin(), Duration(100ms));
  loop_.Advance(1887ms);  // 1887 + 12.5 + 100 < 2000
  EXPECT_EQ(wait_.NextTry(window_, loop_.Now(), true), Duration(12500us));
  loop_.Advance(1ms);  // the second backoff, 25 ms: 1888 + 25 + 100 >= 2000
  EXPECT_EQ(wait_.NextTry(window_, loop_.Now(), true), std::nullopt);
  EXPECT_EQ(wait_.GiveUpStatus(absl::UnavailableError("x"), window_, loop_.Now()).message(),
            "x; tried 2 times over 1888 ms, until the deadline");
}

TEST_F(UnreachableWaitTest, NoRoomAmongTheWaitingCallsGivesUpAtOnce) {
  EXPECT_EQ(wait_.NextTry(window_, loop_.Now(), /*room=*/false), std::nullopt);
  EXPECT_EQ(wait_.GiveUpStatus(absl::UnavailableError("x"), window_, loop_.Now()).message(),
            "x; tried 1 time over 0 ms; upstream.max_pending calls wait for a node already, none "
            "more");
}

// RetryPlaceWait --------------------------------------------------------------------------------

class RecordingOwner : public RetryPlaceWaitOwner {
 public:
  void ScheduleRetry(Duration delay, RetryTicket ticket) override {
    retry_in = delay;
    ticket_held = ticket.held();
    this->ticket = std::move(ticket);
  }
  void FinishWithoutRetry(const absl::Status& status) override { finished = status; }

  std::optional<Duration> retry_in;
  bool ticket_held = false;
  RetryTicket ticket;
  std::optional<absl::Status> finished;
};

class RetryPlaceWaitTest : public PartsTest {
 protected:
  RetryPlaceWaitTest() {
    context_.unreachable_wait = 1s;
    for (int i = 0; i < 3; ++i) places_.emplace_back(budget(0));  // min_retries_in_flight: 3
  }
  // A retry of a read on node 0 after 12.5 ms, its attempt having run 100 ms.
  bool Begin() {
    RetryDecision decision;
    decision.retry = true;
    decision.reason = RetryReason::kUnavailable;
    decision.delay = 12500us;
    return wait_.Begin(window_, 0, decision, RetryClass::kRead, 100ms,
                       absl::UnavailableError("lost"));
  }

  CallWindow window_{loop_.Now(), std::nullopt, false};
  std::vector<RetryTicket> places_;  // other calls' retries
  RecordingOwner owner_;
  NodeWaitCount count_{context_};
  RetryPlaceWait wait_{context_, loop_, count_, owner_};
};

TEST_F(RetryPlaceWaitTest, NoWaitWithoutAWindow) {
  context_.unreachable_wait = Duration::zero();  // and no deadline
  EXPECT_FALSE(Begin());
  EXPECT_FALSE(wait_.waiting());
  EXPECT_FALSE(count_.counted());
  EXPECT_EQ(loop_.NextTimerIn(), Duration::max());
}

TEST_F(RetryPlaceWaitTest, NoWaitWithoutRoomAmongTheWaitingCalls) {
  context_.max_waiting_for_node = 0;
  EXPECT_FALSE(Begin());
  EXPECT_FALSE(wait_.waiting());
}

TEST_F(RetryPlaceWaitTest, NoWaitWhenTheRetryCouldNotRunBeforeTheCallersDeadline) {
  // 150 ms to the deadline, less the margin (7.5 ms) and the 100 ms the retry needs: a 42.5 ms
  // wait; 106 ms to it: 0.7 ms, under 1 ms, no wait.
  window_.deadline = loop_.Now() + 150ms;
  window_.callers_deadline = true;
  EXPECT_TRUE(Begin());
  EXPECT_EQ(loop_.NextTimerIn(), Duration(42500us));
  wait_.Stop();
  window_.deadline = loop_.Now() + 106ms;
  EXPECT_FALSE(Begin());
}

TEST_F(RetryPlaceWaitTest, FreedPlaceIsTakenOnTheSpotAndHandedOverFromTheTimer) {
  ASSERT_TRUE(Begin());
  EXPECT_TRUE(count_.counted());
  loop_.Advance(5ms);
  places_.pop_back();  // another call's retry ended: this call is woken from inside it
  EXPECT_EQ(budget(0).retries_in_flight(), 3u);  // the place is the waiting call's already
  EXPECT_FALSE(owner_.retry_in.has_value());     // but the owner hears of it only from the loop
  loop_.Advance(Duration::zero());
  ASSERT_TRUE(owner_.retry_in.has_value());
  EXPECT_EQ(*owner_.retry_in, Duration(7500us));  // what is left of the 12.5 ms delay
  EXPECT_TRUE(owner_.ticket_held);
  EXPECT_FALSE(wait_.waiting());
  EXPECT_FALSE(count_.counted());
  EXPECT_EQ(events_.retries, 1);
  owner_.ticket.Release();
  EXPECT_EQ(budget(0).retries_in_flight(), 2u);
}

TEST_F(RetryPlaceWaitTest, WindowsEndFailsTheCallWithWhyAndHowLong) {
  ASSERT_TRUE(Begin());
  loop_.Advance(1s);
  ASSERT_TRUE(owner_.finished.has_value());
  EXPECT_EQ(*owner_.finished,
            absl::UnavailableError("lost; not retried: no place among the retries in flight "
                                   "(retry.min_retries_in_flight) after 1000 ms"));
  EXPECT_EQ(events_.last_refusal, RetryRefusal::kInFlight);
  EXPECT_FALSE(count_.counted());
  EXPECT_FALSE(owner_.retry_in.has_value());
}

TEST_F(RetryPlaceWaitTest, TokensRunningOutEndTheWait) {
  ASSERT_TRUE(Begin());
  for (int i = 0; i < 50; ++i) budget(0).OnAttemptFailed();  // half the tokens: wakes the waiter
  loop_.Advance(Duration::zero());
  ASSERT_TRUE(owner_.finished.has_value());
  EXPECT_EQ(owner_.finished->message(),
            "lost; not retried: the node's retry tokens ran out meanwhile "
            "(retry.budget_max_tokens)");
  EXPECT_EQ(events_.last_refusal, RetryRefusal::kBudget);
}

TEST_F(RetryPlaceWaitTest, StopEndsTheWaitWithoutAWordToTheOwner) {
  ASSERT_TRUE(Begin());
  places_.pop_back();  // woken: the place is taken
  wait_.Stop();
  EXPECT_FALSE(wait_.waiting());
  EXPECT_FALSE(count_.counted());
  EXPECT_EQ(budget(0).retries_in_flight(), 2u);  // the place went back
  loop_.Advance(2s);
  EXPECT_FALSE(owner_.retry_in.has_value());
  EXPECT_FALSE(owner_.finished.has_value());
}

// NodeWaitCount, OnDemandTimer -------------------------------------------------------------------

TEST_F(PartsTest, NodeWaitCountCountsACallOnceAndOutWhenGone) {
  context_.max_waiting_for_node = 1;
  {
    NodeWaitCount a(context_);
    NodeWaitCount b(context_);
    EXPECT_TRUE(a.room());
    a.Set(true);
    a.Set(true);
    EXPECT_EQ(context_.waiting_for_node, 1u);
    EXPECT_TRUE(a.room());   // counted already
    EXPECT_FALSE(b.room());  // the one place is a's
  }
  EXPECT_EQ(context_.waiting_for_node, 0u);
}

TEST_F(PartsTest, OnDemandTimerMakesNoTimerUntilArmed) {
  int fired = 0;
  {
    OnDemandTimer timer(loop_);
    timer.Cancel();
    EXPECT_FALSE(timer.armed());
    EXPECT_EQ(loop_.NextTimerIn(), Duration::max());
    timer.Arm(10ms, [&] { fired++; });
    EXPECT_TRUE(timer.armed());
    loop_.Advance(10ms);
    EXPECT_EQ(fired, 1);
    timer.Arm(10ms, [&] { fired++; });
    timer.Cancel();
    loop_.Advance(1s);
    EXPECT_EQ(fired, 1);
    timer.Arm(10ms, [&] { fired++; });
  }  // destroyed: cancelled
  loop_.Advance(1s);
  EXPECT_EQ(fired, 1);
}

}  // namespace
}  // namespace qpool::retry
