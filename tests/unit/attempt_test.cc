// Attempt, one upstream try of a gRPC call, built with a fake owner (AttemptOwner: records the
// reports, answers with the verdicts a test sets), a fake answer (AnswerSink) and a real request
// (UpstreamRequest, with a fake app window); the stream's events are delivered by hand as
// UpstreamConnection delivers them, no sockets. What the attempt reports when its stream ends
// (a reset, a refused stream, a lost connection; after the answer), and what it does with the
// verdict: the commit point's headers to the answer, the upstream's reset passed on, a hedge's
// answer kept from the app.
#include "daemon/server/attempt.h"

#include <nghttp2/nghttp2.h>

#include <optional>
#include <string>
#include <vector>

#include "daemon/metrics/worker_metrics.h"
#include "daemon/pool/balancer.h"
#include "daemon/retry/retry_context.h"
#include "daemon/server/proxy_counters.h"
#include "gtest/gtest.h"
#include "tests/unit/fake_event_loop.h"

namespace qpool::server {
namespace {

using ::qpool::testing::FakeEventLoop;
using ::qpool::testing::SweepRandom;

// The attempt's call, as the attempt sees it: records each report, answers with `headers_verdict`
// and `end_verdict`; `primary` is the slot whose answer is the call's.
class FakeOwner : public AttemptOwner {
 public:
  void OnAttemptSent(int slot, int node, MonoTime) override {
    reports.push_back("sent " + std::to_string(slot) + " " + std::to_string(node));
  }
  void OnAttemptNotStarted(int slot, int, const absl::Status& status, bool) override {
    reports.push_back("not started " + std::to_string(slot));
    last_status = status;
  }
  retry::HeadersVerdict OnAttemptHeaders(int slot, const retry::AttemptOutcome& outcome,
                                         bool whole_answer, bool) override {
    reports.push_back("headers " + std::to_string(slot) + (whole_answer ? " whole" : ""));
    last_outcome = outcome;
    return headers_verdict;
  }
  retry::EndVerdict OnAttemptEnded(int slot, const retry::AttemptOutcome& outcome,
                                   const absl::Status& final_status) override {
    reports.push_back("ended " + std::to_string(slot));
    last_outcome = outcome;
    last_status = final_status;
    return end_verdict;
  }
  void OnAttemptFinished(int slot) override {
    reports.push_back("finished " + std::to_string(slot));
  }
  bool IsPrimary(int slot) const override { return slot == primary; }

  int primary = 0;
  retry::HeadersVerdict headers_verdict = retry::HeadersVerdict::kForward;
  retry::EndVerdict end_verdict = retry::EndVerdict::kHandled;
  std::vector<std::string> reports;
  retry::AttemptOutcome last_outcome;
  absl::Status last_status;
};

// The call's answer, as the attempt sees it: records what reaches it.
class FakeAnswer : public AnswerSink {
 public:
  void Settle() { finished_ = true; }
  void SendHeaders(const nghttp2_nv*, size_t, bool end_stream, int) override {
    headers.push_back(end_stream);
  }
  void AppendData(const uint8_t*, size_t len) override { data += len; }
  void AddTrailer(std::string_view, std::string_view) override { trailers++; }
  void End() override { ends++; }
  void FinishLocally(const absl::Status& status) override { local = status; }
  void PassOnReset(uint32_t h2_error_code) override { resets.push_back(h2_error_code); }

  std::vector<bool> headers;  // end_stream of each
  size_t data = 0;
  int trailers = 0;
  int ends = 0;
  std::optional<absl::Status> local;
  std::vector<uint32_t> resets;
};

class FakeWindow : public RequestWindow {
 public:
  void AcknowledgeRequestBytes(size_t n) override { credited += n; }
  size_t credited = 0;
};

class AttemptTest : public ::testing::Test {
 protected:
  AttemptTest() {
    request_.EndHeaders();
    const uint8_t body[] = {0, 0, 0, 0, 0};
    request_.Append(body, sizeof(body));
    request_.End();
  }

  FakeEventLoop loop_;
  SweepRandom random_;
  ProxyCounters counters_;
  metrics::WorkerMetrics metrics_{1};
  retry::RetryContext retry_{retry::RetryPolicyOptions{}, retry::RetryBudget::Options{},
                             /*nodes=*/1, nullptr};
  pool::Balancer balancer_{loop_, random_, metrics_, nullptr};
  CallContext context_{loop_, random_, counters_, metrics_, retry_, balancer_};
  FakeOwner owner_;
  FakeAnswer answer_;
  FakeWindow window_;
  pool::ShareAccount account_;
  UpstreamRequest request_{window_, &counters_.buffered_bytes, retry_.replay, nullptr};
  AttemptShared shared_{owner_,          context_,       request_,  answer_,
                        /*deadline=*/{}, /*read=*/false, &account_, /*keys=*/nullptr};
  Attempt attempt_{shared_, /*slot=*/0};
};

TEST_F(AttemptTest, UpstreamResetBeforeTheAnswerIsPassedOnWhenTheOwnerSaysSo) {
  owner_.end_verdict = retry::EndVerdict::kPassOnClose;
  attempt_.OnClosed(NGHTTP2_INTERNAL_ERROR, /*connection_lost=*/false);

  EXPECT_EQ(owner_.reports, std::vector<std::string>{"ended 0"});
  EXPECT_EQ(owner_.last_outcome.failure, retry::Failure::kAborted);
  EXPECT_EQ(answer_.resets, std::vector<uint32_t>{NGHTTP2_INTERNAL_ERROR});
  EXPECT_TRUE(answer_.headers.empty());
  EXPECT_EQ(request_.state(), UpstreamRequest::State::kDropped);  // nothing more goes upstream
  EXPECT_EQ(window_.credited, 5u);                                // the app got its credit back
}

TEST_F(AttemptTest, UpstreamResetTheOwnerHandlesReachesNeitherTheAppNorTheRequest) {
  owner_.end_verdict = retry::EndVerdict::kHandled;  // a retry, say
  attempt_.OnClosed(NGHTTP2_INTERNAL_ERROR, /*connection_lost=*/false);

  EXPECT_EQ(owner_.reports, std::vector<std::string>{"ended 0"});
  EXPECT_TRUE(answer_.resets.empty());
  EXPECT_EQ(request_.state(), UpstreamRequest::State::kEnded);
}

TEST_F(AttemptTest, ConnectionLostBeforeTheAnswerIsReportedUnavailable) {
  attempt_.OnClosed(NGHTTP2_NO_ERROR, /*connection_lost=*/true);

  EXPECT_EQ(owner_.reports, std::vector<std::string>{"ended 0"});
  EXPECT_EQ(owner_.last_outcome.failure, retry::Failure::kUnavailable);
  EXPECT_EQ(owner_.last_status.code(), absl::StatusCode::kUnavailable);  // the app's, if no retry
  EXPECT_NE(owner_.last_status.message().find("lost before the answer"), std::string::npos);
  EXPECT_TRUE(answer_.resets.empty());
}

TEST_F(AttemptTest, RefusedStreamIsReportedNeverReached) {
  attempt_.OnClosed(NGHTTP2_REFUSED_STREAM, /*connection_lost=*/false);

  EXPECT_EQ(owner_.last_outcome.failure, retry::Failure::kNeverReached);
  EXPECT_EQ(owner_.last_status.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(owner_.last_status.message().find("not processed"), std::string::npos);
}

TEST_F(AttemptTest, StreamEndAfterTheAnswerIsFinishedAndDropsTheRequest) {
  answer_.Settle();
  attempt_.OnClosed(NGHTTP2_NO_ERROR, /*connection_lost=*/false);

  EXPECT_EQ(owner_.reports, std::vector<std::string>{"finished 0"});
  EXPECT_TRUE(answer_.resets.empty());
  EXPECT_EQ(request_.state(), UpstreamRequest::State::kDropped);
}

TEST_F(AttemptTest, ForwardedHeadersGoToTheAnswerAndCommitTheRequest) {
  owner_.headers_verdict = retry::HeadersVerdict::kForward;
  attempt_.OnResponseHeadersEnd(/*end_stream=*/false);

  EXPECT_EQ(owner_.reports, std::vector<std::string>{"headers 0"});
  EXPECT_EQ(answer_.headers, std::vector<bool>{false});
  EXPECT_FALSE(request_.CanReplay());  // the commit point: the replay copy went
}

TEST_F(AttemptTest, HeldHeadersStayFromTheAnswer) {
  owner_.headers_verdict = retry::HeadersVerdict::kHeld;
  attempt_.OnResponseHeadersEnd(/*end_stream=*/true);

  EXPECT_EQ(owner_.reports, std::vector<std::string>{"headers 0 whole"});
  EXPECT_TRUE(answer_.headers.empty());
  EXPECT_TRUE(request_.CanReplay());  // it may be sent again
}

TEST_F(AttemptTest, AnswerOfAnAttemptThatIsNotThePrimaryGoesNowhere) {
  owner_.primary = 1;  // this attempt is a hedge that has not won
  const uint8_t data[] = {1, 2, 3};
  attempt_.OnResponseData(data, sizeof(data));
  attempt_.OnResponseTrailersEnd();
  attempt_.OnResponseEnd();
  EXPECT_EQ(answer_.data, 0u);
  EXPECT_EQ(answer_.ends, 0);

  owner_.primary = 0;  // once it is the primary, its answer is the call's
  attempt_.OnResponseData(data, sizeof(data));
  attempt_.OnResponseTrailersEnd();
  EXPECT_EQ(answer_.data, 3u);
  EXPECT_EQ(answer_.ends, 1);
}

TEST_F(AttemptTest, NothingReachesASettledAnswer) {
  answer_.Settle();
  const uint8_t data[] = {1, 2, 3};
  attempt_.OnResponseHeadersEnd(/*end_stream=*/false);
  attempt_.OnResponseData(data, sizeof(data));
  attempt_.OnResponseEnd();

  EXPECT_TRUE(owner_.reports.empty());  // no verdict asked for
  EXPECT_TRUE(answer_.headers.empty());
  EXPECT_EQ(answer_.data, 0u);
  EXPECT_EQ(answer_.ends, 0);
}

}  // namespace
}  // namespace qpool::server
