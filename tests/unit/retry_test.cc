// Retry decisions: method classes (from the path and the request's points selector, gzip or not),
// the policy (which outcomes retry, backoff, deadline, max attempts) and the budget.
#include <zlib.h>

#include <string>

#include "daemon/common/grpc_frame.h"
#include "daemon/retry/method_class.h"
#include "daemon/retry/retry_policy.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "gtest/gtest.h"
#include "tests/unit/fake_event_loop.h"

namespace qpool::retry {
namespace {

using google::protobuf::io::CodedOutputStream;
using google::protobuf::io::StringOutputStream;
using namespace std::chrono_literals;

// A length-delimited field `field` holding `bytes`.
std::string Field(int field, const std::string& bytes) {
  std::string out;
  {
    StringOutputStream stream(&out);
    CodedOutputStream coded(&stream);
    coded.WriteTag((field << 3) | 2);
    coded.WriteVarint32(static_cast<uint32_t>(bytes.size()));
    coded.WriteString(bytes);
  }
  return out;
}

std::string IdsSelector() { return Field(1, Field(1, std::string("\x08\x07", 2))); }
std::string FilterSelector() { return Field(2, Field(1, "must")); }
const std::string kCollection = Field(1, "docs");

std::string Gzip(const std::string& data) {
  z_stream stream{};
  deflateInit2(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&stream, data.size()) + 32, '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  deflate(&stream, Z_FINISH);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

// DeletePoints { collection_name = 1; points = 3 (PointsSelector) }.
std::string DeleteRequest(const std::string& selector) { return kCollection + Field(3, selector); }
// SetPayloadPoints { collection_name = 1; payload = 3 (map); points_selector = 5 }.
std::string SetPayloadRequest(const std::string& selector) {
  return kCollection + Field(3, Field(1, "key") + Field(2, "value")) + Field(5, selector);
}

TEST(MethodClassTest, ReadsAreReadsWhateverTheBody) {
  MethodClassifier classifier;
  for (const char* path :
       {"/qdrant.Points/Search", "/qdrant.Points/Query", "/qdrant.Points/QueryBatch",
        "/qdrant.Points/Scroll", "/qdrant.Points/Count", "/qdrant.Collections/List",
        "/qdrant.Collections/CollectionExists", "/qdrant.Qdrant/HealthCheck",
        "/grpc.health.v1.Health/Check", "/qdrant.Snapshots/List"}) {
    EXPECT_FALSE(classifier.NeedsFirstMessage(path)) << path;
    EXPECT_EQ(classifier.Classify(path, "", ""), RetryClass::kRead) << path;
  }
}

TEST(MethodClassTest, CollectionChangesSnapshotsAndUnknownMethodsAreNeverRepeated) {
  MethodClassifier classifier;
  for (const char* path :
       {"/qdrant.Collections/Create", "/qdrant.Collections/Delete", "/qdrant.Collections/Update",
        "/qdrant.Collections/UpdateAliases", "/qdrant.Snapshots/Create",
        "/qdrant.Points/CreateFieldIndex", "/qdrant.Collections/CreateShardKey",
        "/some.Other/Method", "/qdrant.Points/NewMethodFromTheFuture"}) {
    EXPECT_EQ(classifier.Classify(path, "", ""), RetryClass::kNeverRepeat) << path;
  }
}

TEST(MethodClassTest, UpsertIsAnIdScopedWrite) {
  MethodClassifier classifier;
  ASSERT_TRUE(classifier.NeedsFirstMessage("/qdrant.Points/Upsert"));
  EXPECT_EQ(
      classifier.Classify("/qdrant.Points/Upsert", GrpcFrame(kCollection + Field(3, "pt")), ""),
      RetryClass::kIdScopedWrite);
}

TEST(MethodClassTest, ConditionalUpsertIsAFilterScopedWrite) {
  MethodClassifier classifier;
  const std::string request = kCollection + Field(3, "pt") + Field(6, Field(1, "cond"));
  EXPECT_EQ(classifier.Classify("/qdrant.Points/Upsert", GrpcFrame(request), ""),
            RetryClass::kFilterScopedWrite);
}

TEST(MethodClassTest, DeleteByIdsIsIdScopedAndByFilterIsFilterScoped) {
  MethodClassifier classifier;
  EXPECT_EQ(
      classifier.Classify("/qdrant.Points/Delete", GrpcFrame(DeleteRequest(IdsSelector())), ""),
      RetryClass::kIdScopedWrite);
  EXPECT_EQ(
      classifier.Classify("/qdrant.Points/Delete", GrpcFrame(DeleteRequest(FilterSelector())), ""),
      RetryClass::kFilterScopedWrite);
}

TEST(MethodClassTest, SetPayloadReadsItsSelectorPastThePayload) {
  MethodClassifier classifier;
  EXPECT_EQ(classifier.Classify("/qdrant.Points/SetPayload",
                                GrpcFrame(SetPayloadRequest(IdsSelector())), ""),
            RetryClass::kIdScopedWrite);
  EXPECT_EQ(classifier.Classify("/qdrant.Points/OverwritePayload",
                                GrpcFrame(SetPayloadRequest(FilterSelector())), ""),
            RetryClass::kFilterScopedWrite);
}

TEST(MethodClassTest, MissingSelectorIsTreatedAsAFilter) {
  MethodClassifier classifier;
  EXPECT_EQ(classifier.Classify("/qdrant.Points/ClearPayload", GrpcFrame(kCollection), ""),
            RetryClass::kFilterScopedWrite);
}

TEST(MethodClassTest, GzipRequestsAreInflatedForInspection) {
  MethodClassifier classifier;
  EXPECT_EQ(classifier.Classify("/qdrant.Points/Delete",
                                GrpcFrame(Gzip(DeleteRequest(IdsSelector())), true), "gzip"),
            RetryClass::kIdScopedWrite);
  EXPECT_EQ(classifier.Classify("/qdrant.Points/Delete",
                                GrpcFrame(Gzip(DeleteRequest(FilterSelector())), true), "gzip"),
            RetryClass::kFilterScopedWrite);
}

TEST(MethodClassTest, UnreadableRequestsAreTreatedAsFilterScoped) {
  MethodClassifier classifier;
  const std::string good = GrpcFrame(DeleteRequest(IdsSelector()));
  // Truncated frame, corrupt gzip, compressed with an encoding qpool does not know, garbage.
  EXPECT_EQ(classifier.Classify("/qdrant.Points/Delete", good.substr(0, good.size() - 1), ""),
            RetryClass::kFilterScopedWrite);
  EXPECT_EQ(
      classifier.Classify("/qdrant.Points/Delete", GrpcFrame("not gzip at all", true), "gzip"),
      RetryClass::kFilterScopedWrite);
  EXPECT_EQ(classifier.Classify("/qdrant.Points/Delete",
                                GrpcFrame(Gzip(DeleteRequest(IdsSelector())), true), "snappy"),
            RetryClass::kFilterScopedWrite);
  EXPECT_EQ(classifier.Classify("/qdrant.Points/Delete", GrpcFrame("\xff\xff\xff\xff"), ""),
            RetryClass::kFilterScopedWrite);
}

TEST(MethodClassTest, OverrideWins) {
  MethodClassifier classifier;
  classifier.Override("/qdrant.Points/Delete", RetryClass::kNeverRepeat);
  classifier.Override("/qdrant.Collections/Create", RetryClass::kRead);
  EXPECT_FALSE(classifier.NeedsFirstMessage("/qdrant.Points/Delete"));
  EXPECT_EQ(
      classifier.Classify("/qdrant.Points/Delete", GrpcFrame(DeleteRequest(IdsSelector())), ""),
      RetryClass::kNeverRepeat);
  EXPECT_EQ(classifier.Classify("/qdrant.Collections/Create", "", ""), RetryClass::kRead);
}

class RetryPolicyTest : public ::testing::Test {
 protected:
  AttemptOutcome Failed(Failure failure, Duration took = 10ms) {
    AttemptOutcome outcome;
    outcome.failure = failure;
    outcome.took = took;
    return outcome;
  }
  RetryPolicy policy_{RetryPolicyOptions{}};
  testing::FakeRandom random_{1.0};
  MonoTime now_{std::chrono::seconds(100)};
};

TEST_F(RetryPolicyTest, UnavailableRetriesReadsAndIdScopedWritesOnly) {
  EXPECT_TRUE(
      policy_.Decide(RetryClass::kRead, 1, Failed(Failure::kUnavailable), now_, {}, random_).retry);
  EXPECT_TRUE(
      policy_
          .Decide(RetryClass::kIdScopedWrite, 1, Failed(Failure::kUnavailable), now_, {}, random_)
          .retry);
  EXPECT_FALSE(policy_
                   .Decide(RetryClass::kFilterScopedWrite, 1, Failed(Failure::kUnavailable), now_,
                           {}, random_)
                   .retry);
  EXPECT_FALSE(
      policy_.Decide(RetryClass::kNeverRepeat, 1, Failed(Failure::kUnavailable), now_, {}, random_)
          .retry);
}

TEST_F(RetryPolicyTest, NeverReachedUpstreamRetriesEveryClassAtOnce) {
  AttemptOutcome outcome = Failed(Failure::kNeverReached);
  for (RetryClass c : {RetryClass::kRead, RetryClass::kIdScopedWrite,
                       RetryClass::kFilterScopedWrite, RetryClass::kNeverRepeat}) {
    RetryDecision decision = policy_.Decide(c, 1, outcome, now_, {}, random_);
    EXPECT_TRUE(decision.retry) << RetryClassName(c);
    EXPECT_EQ(decision.reason, RetryReason::kTransparent);
    EXPECT_EQ(decision.delay, Duration::zero());
  }
}

TEST_F(RetryPolicyTest, OtherOutcomesAreFinal) {
  // An answer, another status (DEADLINE_EXCEEDED from Qdrant included), a reset.
  for (Failure failure : {Failure::kNone, Failure::kOther, Failure::kAborted}) {
    EXPECT_FALSE(policy_.Decide(RetryClass::kRead, 1, Failed(failure), now_, {}, random_).retry)
        << static_cast<int>(failure);
  }
}

TEST_F(RetryPolicyTest, ResourceExhaustedRetriesOnlyWithPushbackAndWaitsThatLong) {
  EXPECT_FALSE(
      policy_.Decide(RetryClass::kRead, 1, Failed(Failure::kResourceExhausted), now_, {}, random_)
          .retry);
  AttemptOutcome outcome = Failed(Failure::kResourceExhausted);
  outcome.pushback = 300ms;
  RetryDecision decision = policy_.Decide(RetryClass::kRead, 1, outcome, now_, {}, random_);
  EXPECT_TRUE(decision.retry);
  EXPECT_EQ(decision.reason, RetryReason::kResourceExhausted);
  EXPECT_EQ(decision.delay, Duration(300ms));
}

TEST_F(RetryPolicyTest, PerTryTimeoutRetriesReadsOnly) {
  AttemptOutcome outcome = Failed(Failure::kPerTryTimeout);
  EXPECT_TRUE(policy_.Decide(RetryClass::kRead, 1, outcome, now_, {}, random_).retry);
  EXPECT_FALSE(policy_.Decide(RetryClass::kIdScopedWrite, 1, outcome, now_, {}, random_).retry);
}

TEST_F(RetryPolicyTest, StaleConnectionAttemptsHaveTheirOwnBoundNotMaxAttempts) {
  // retry.max_attempts (3) is not for keep-alive connections the node had closed.
  const AttemptOutcome stale = Failed(Failure::kStaleConnection);
  for (RetryClass c : {RetryClass::kRead, RetryClass::kNeverRepeat}) {
    RetryDecision decision = policy_.Decide(c, 3, stale, now_, {}, random_);
    EXPECT_TRUE(decision.retry) << RetryClassName(c);
    EXPECT_EQ(decision.reason, RetryReason::kTransparent);
    EXPECT_EQ(decision.delay, Duration::zero());
  }
  EXPECT_TRUE(
      policy_.Decide(RetryClass::kRead, kMaxStaleConnectionAttempts - 1, stale, now_, {}, random_)
          .retry);
  RetryDecision decision =
      policy_.Decide(RetryClass::kRead, kMaxStaleConnectionAttempts, stale, now_, {}, random_);
  EXPECT_FALSE(decision.retry);
  EXPECT_EQ(decision.refused, RetryRefusal::kMaxAttempts);
  // A refused stream is the node's answer: it keeps the max_attempts rule.
  decision =
      policy_.Decide(RetryClass::kRead, 3, Failed(Failure::kNeverReached), now_, {}, random_);
  EXPECT_FALSE(decision.retry);
  EXPECT_EQ(decision.refused, RetryRefusal::kMaxAttempts);
}

TEST_F(RetryPolicyTest, MaxAttemptsCountsTheFirstAttempt) {
  EXPECT_TRUE(
      policy_.Decide(RetryClass::kRead, 2, Failed(Failure::kUnavailable), now_, {}, random_).retry);
  RetryDecision decision =
      policy_.Decide(RetryClass::kRead, 3, Failed(Failure::kUnavailable), now_, {}, random_);
  EXPECT_FALSE(decision.retry);
  EXPECT_EQ(decision.refused, RetryRefusal::kMaxAttempts);
}

TEST_F(RetryPolicyTest, BackoffIsFullJitterDoublingUpToTheMax) {
  random_.set(1.0);
  EXPECT_EQ(policy_.Backoff(1, random_), Duration(25ms));
  EXPECT_EQ(policy_.Backoff(2, random_), Duration(50ms));
  EXPECT_EQ(policy_.Backoff(3, random_), Duration(100ms));
  EXPECT_EQ(policy_.Backoff(7, random_), Duration(1s));  // 1.6 s capped at 1 s
  EXPECT_EQ(policy_.Backoff(30, random_), Duration(1s));
  random_.set(0.5);
  EXPECT_EQ(policy_.Backoff(2, random_), Duration(25ms));
  random_.set(0.0);
  EXPECT_EQ(policy_.Backoff(5, random_), Duration::zero());
}

TEST_F(RetryPolicyTest, NoRetryStartsThatCannotFinishBeforeTheDeadline) {
  random_.set(1.0);  // backoff after attempt 1: 25 ms
  const Duration took = 40ms;
  // 25 ms wait + 40 ms run = 65 ms needed.
  EXPECT_TRUE(policy_
                  .Decide(RetryClass::kRead, 1, Failed(Failure::kUnavailable, took), now_,
                          now_ + 66ms, random_)
                  .retry);
  RetryDecision decision = policy_.Decide(RetryClass::kRead, 1, Failed(Failure::kUnavailable, took),
                                          now_, now_ + 65ms, random_);
  EXPECT_FALSE(decision.retry);
  EXPECT_EQ(decision.refused, RetryRefusal::kDeadline);
  // A pushback longer than the time left is not waited for.
  AttemptOutcome outcome = Failed(Failure::kResourceExhausted, 1ms);
  outcome.pushback = 2s;
  EXPECT_FALSE(policy_.Decide(RetryClass::kRead, 1, outcome, now_, now_ + 1s, random_).retry);
  // Nor is a transparent retry past the deadline.
  AttemptOutcome refused = Failed(Failure::kNeverReached);
  EXPECT_FALSE(policy_.Decide(RetryClass::kRead, 1, refused, now_, now_, random_).retry);
}

TEST(RetryBudgetTest, FailuresDrainTheBucketUntilRetriesStop) {
  RetryBudget budget(RetryBudget::Options{});
  int allowed_failures = 0;
  while (budget.MayRetry(1000)) {
    budget.OnAttemptFailed();
    allowed_failures++;
    ASSERT_LT(allowed_failures, 1000);
  }
  // Starts at 100 tokens, retries allowed while more than 50 remain.
  EXPECT_EQ(allowed_failures, 50);
  // Successes refill it slowly: 0.1 token each.
  for (int i = 0; i < 10; ++i) budget.OnAttemptSucceeded();
  EXPECT_TRUE(budget.MayRetry(1000));
}

TEST(RetryBudgetTest, RetriesInFlightAreCappedAtTheLargerOfThreeAndTwentyPercent) {
  RetryBudget budget(RetryBudget::Options{});
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(budget.MayRetry(1));
    budget.RetryStarted();
  }
  EXPECT_FALSE(budget.MayRetry(1));   // max(3, 0.2) = 3
  EXPECT_TRUE(budget.MayRetry(100));  // max(3, 20) = 20
  for (int i = 3; i < 20; ++i) budget.RetryStarted();
  EXPECT_FALSE(budget.MayRetry(100));
  budget.RetryEnded();
  EXPECT_TRUE(budget.MayRetry(100));
}

}  // namespace
}  // namespace qpool::retry
