// Call, the downstream half of a gRPC call, with a fake app connection (CallDownstream), the fake
// clock and a real pool whose one connection never finishes connecting, so the call's attempt
// waits in the pool's queue; no sockets. The caller's deadline passing before an answer: a
// DEADLINE_EXCEEDED answer and the attempt cancelled; no stream within the pool's wait: an
// UNAVAILABLE answer; the app's reset cancels the attempt. The call's answer (CallAnswer) on the
// same fake app connection: a local answer after the response headers is trailers after the data
// already queued; an upstream reset is passed on as the same reset (docs/architecture.md, "When
// qpoold answers by itself"). What an attempt does with its stream's events (an upstream reset, a
// lost connection) is tests/unit/attempt_test.cc's.
#include "daemon/server/call.h"

#include <nghttp2/nghttp2.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "daemon/metrics/worker_metrics.h"
#include "daemon/pool/balancer.h"
#include "daemon/pool/slot_pools.h"
#include "daemon/retry/retry_context.h"
#include "daemon/server/proxy_counters.h"
#include "gtest/gtest.h"
#include "tests/unit/fake_event_loop.h"

namespace qpool::server {
namespace {

using namespace std::chrono_literals;
using ::qpool::testing::FakeEventLoop;
using ::qpool::testing::SweepRandom;
using Headers = std::map<std::string, std::string>;

Headers ToMap(const nghttp2_nv* nva, size_t nvlen) {
  Headers headers;
  for (size_t i = 0; i < nvlen; ++i) {
    headers[std::string(reinterpret_cast<const char*>(nva[i].name), nva[i].namelen)] =
        std::string(reinterpret_cast<const char*>(nva[i].value), nva[i].valuelen);
  }
  return headers;
}

// The app connection as the call sees it: records what the call submits.
class FakeDownstream : public CallDownstream {
 public:
  int SubmitResponse(Call&, const nghttp2_nv* nva, size_t nvlen, bool has_body) override {
    responses.push_back({ToMap(nva, nvlen), has_body});
    return 0;
  }
  int SubmitTrailers(Call&, const nghttp2_nv* nva, size_t nvlen) override {
    trailers.push_back(ToMap(nva, nvlen));
    return 0;
  }
  void ResumeResponseData(Call&) override { resumes++; }
  void ResetStream(Call&, uint32_t h2_error_code) override { resets.push_back(h2_error_code); }
  void ConsumeRequestData(Call&, size_t n) override { consumed += n; }
  int64_t* response_bytes_held() override { return &bytes_held; }
  pool::ShareAccount& share_account() override { return account; }
  const std::string& peer() const override { return peer_name; }

  struct Response {
    Headers headers;
    bool has_body;
  };
  std::vector<Response> responses;
  std::vector<Headers> trailers;
  std::vector<uint32_t> resets;
  int resumes = 0;
  size_t consumed = 0;
  int64_t bytes_held = 0;
  pool::ShareAccount account;
  std::string peer_name = "127.0.0.1:1";
};

// A connection that stays connecting: a call's attempt waits in the pool's queue.
class ConnectingForever : public pool::PoolConnection {
 public:
  explicit ConnectingForever(pool::PoolConnectionEvents& events) : events_(events) {}
  void Drain() override {}
  void Abort() override {
    if (done_) return;
    done_ = true;
    events_.OnConnectFailed(this, absl::CancelledError("aborted"));
  }

 private:
  pool::PoolConnectionEvents& events_;
  bool done_ = false;
};

class ConnectingFactory : public pool::SlotConnectionFactory {
 public:
  std::shared_ptr<pool::PoolConnection> Connect(pool::PoolConnectionEvents& events) override {
    return std::make_shared<ConnectingForever>(events);
  }
};

class GrpcParts : public pool::SlotPoolParts {
 public:
  Duration acquire_timeout = 1h;  // the caller's deadline comes first

  const config::NodeAddress& EndpointOf(const config::NodeSlot& slot) const override {
    return slot.grpc;
  }
  pool::NodePoolOptions OptionsFor(const config::NodeSlot& slot) const override {
    pool::NodePoolOptions options;
    options.node_name = slot.name;
    options.min_connections = 0;
    options.acquire_timeout = acquire_timeout;
    return options;
  }
  std::unique_ptr<pool::SlotConnectionFactory> NewFactory(size_t,
                                                          const config::NodeSlot&) override {
    return std::make_unique<ConnectingFactory>();
  }
  std::unique_ptr<pool::PoolObserver> NewObserver(size_t) override { return nullptr; }
};

// Request headers as DownstreamSession gets them: nghttp2 rcbufs, decoded by a real server
// session from a client session's HEADERS frame.
class DecodedRequest {
 public:
  explicit DecodedRequest(const std::vector<std::pair<std::string, std::string>>& headers) {
    nghttp2_session_callbacks* callbacks;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_header_callback2(callbacks, &OnHeader);
    nghttp2_session_client_new(&client_, callbacks, nullptr);
    nghttp2_session_server_new(&server_, callbacks, this);
    nghttp2_session_callbacks_del(callbacks);
    std::vector<nghttp2_nv> nva;
    for (const auto& [name, value] : headers) {
      nva.push_back({reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                     reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                     value.size(), NGHTTP2_NV_FLAG_NONE});
    }
    nghttp2_submit_settings(client_, NGHTTP2_FLAG_NONE, nullptr, 0);
    nghttp2_submit_request(client_, nullptr, nva.data(), nva.size(), nullptr, nullptr);
    const uint8_t* data;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(client_, &data)) > 0) {
      EXPECT_EQ(nghttp2_session_mem_recv(server_, data, static_cast<size_t>(n)), n);
    }
  }
  ~DecodedRequest() {
    for (auto& [name, value] : refs_) {
      nghttp2_rcbuf_decref(name);
      nghttp2_rcbuf_decref(value);
    }
    nghttp2_session_del(client_);
    nghttp2_session_del(server_);
  }

  // Hands the headers to `call` as DownstreamSession's callbacks do, up to the end of the request.
  void DeliverTo(Call& call) const {
    for (const auto& [name, value] : refs_) call.OnRequestHeader(name, value);
    call.OnRequestHeadersEnd();
    call.OnRequestEnd();
  }

 private:
  static int OnHeader(nghttp2_session*, const nghttp2_frame*, nghttp2_rcbuf* name,
                      nghttp2_rcbuf* value, uint8_t, void* user_data) {
    nghttp2_rcbuf_incref(name);
    nghttp2_rcbuf_incref(value);
    static_cast<DecodedRequest*>(user_data)->refs_.emplace_back(name, value);
    return 0;
  }

  nghttp2_session* client_ = nullptr;
  nghttp2_session* server_ = nullptr;
  std::vector<std::pair<nghttp2_rcbuf*, nghttp2_rcbuf*>> refs_;
};

// An Upsert (a write: never retried after it may have reached Qdrant), with `timeout` as its
// grpc-timeout (empty: none).
std::vector<std::pair<std::string, std::string>> Upsert(const std::string& timeout) {
  std::vector<std::pair<std::string, std::string>> headers = {{":method", "POST"},
                                                              {":scheme", "http"},
                                                              {":path", "/qdrant.Points/Upsert"},
                                                              {":authority", "qdrant"},
                                                              {"content-type", "application/grpc"},
                                                              {"te", "trailers"}};
  if (!timeout.empty()) headers.emplace_back("grpc-timeout", timeout);
  return headers;
}

class CallTest : public ::testing::Test {
 protected:
  CallTest() {
    config::NodeSlot slot;
    slot.active = true;
    slot.generation = 1;
    slot.grpc = config::NodeAddress{"qdrant", 6334};
    slot.name = slot.grpc.ToString();
    table_.slots.push_back(slot);
    retry_.policy_retries = false;  // each test sees its first attempt's end
    pools_.Apply(table_);
    balancer_.SetPools(pool::Protocol::kGrpc, &pools_);
    balancer_.Rebuild(table_, health_config_);
    context_.nodes = &table_;
    context_.start_at_bytes = 1 << 20;
  }

  // Calls waiting in the node's queue for a stream.
  uint32_t Waiting() const { return pools_.pool(0)->stats().waiting; }

  // A call on stream 1 whose app sent a whole Upsert (`timeout`: its grpc-timeout, empty: none),
  // its attempt waiting in the node's queue by the time it returns.
  Call& StartUpsert(const std::string& timeout) {
    request_.emplace(Upsert(timeout));
    Call& call = call_.emplace(context_, downstream_, 1);
    request_->DeliverTo(call);
    loop_.RunPosted();
    return call;
  }

  FakeEventLoop loop_;
  SweepRandom random_;
  ProxyCounters counters_;
  metrics::WorkerMetrics metrics_{1};
  retry::RetryContext retry_{retry::RetryPolicyOptions{}, retry::RetryBudget::Options{},
                             /*nodes=*/1, nullptr};
  pool::PendingBudget budget_{100, 0};
  config::NodeTable table_;
  config::HealthConfig health_config_;
  GrpcParts* parts_ = new GrpcParts;  // owned by pools_
  pool::SlotPools pools_{std::unique_ptr<GrpcParts>(parts_), budget_, loop_, random_};
  pool::Balancer balancer_{loop_, random_, metrics_, nullptr};
  CallContext context_{loop_, random_, counters_, metrics_, retry_, balancer_};
  FakeDownstream downstream_;
  // StartUpsert's: the call holds references into the request's decoded headers, so it goes first.
  std::optional<DecodedRequest> request_;
  std::optional<Call> call_;
};

TEST_F(CallTest, DeadlineBeforeTheAnswerAnswersDeadlineExceededAndCancelsTheAttempt) {
  Call& call = StartUpsert("1S");
  ASSERT_EQ(Waiting(), 1u);

  loop_.Advance(999ms);
  EXPECT_TRUE(downstream_.responses.empty());
  EXPECT_EQ(Waiting(), 1u);

  loop_.Advance(1ms);
  ASSERT_EQ(downstream_.responses.size(), 1u);
  EXPECT_FALSE(downstream_.responses[0].has_body);                  // trailers-only
  EXPECT_EQ(downstream_.responses[0].headers["grpc-status"], "4");  // DEADLINE_EXCEEDED
  EXPECT_NE(downstream_.responses[0].headers["grpc-message"].find("grpc-timeout"),
            std::string::npos);
  EXPECT_TRUE(call.finished());
  EXPECT_EQ(Waiting(), 0u);  // the attempt left the pool's queue
  EXPECT_EQ(counters_.local_replies.load(), 1u);
  EXPECT_TRUE(downstream_.resets.empty());
  call.OnDownstreamClosed(NGHTTP2_NO_ERROR);
}

TEST_F(CallTest, AppResetCancelsTheAttempt) {
  Call& call = StartUpsert("");
  ASSERT_EQ(Waiting(), 1u);

  call.OnDownstreamClosed(NGHTTP2_CANCEL);
  EXPECT_EQ(Waiting(), 0u);
  EXPECT_TRUE(downstream_.responses.empty());
  EXPECT_TRUE(downstream_.resets.empty());
  loop_.Advance(1h);  // nothing left to fire at the call
  EXPECT_TRUE(downstream_.responses.empty());
}

TEST_F(CallTest, NoStreamWithinThePoolsWaitAnswersUnavailable) {
  parts_->acquire_timeout = 2s;
  pools_.Apply(table_);
  Call& call = StartUpsert("10S");
  ASSERT_EQ(Waiting(), 1u);

  loop_.Advance(2s);
  EXPECT_EQ(Waiting(), 0u);
  ASSERT_EQ(downstream_.responses.size(), 1u);
  EXPECT_FALSE(downstream_.responses[0].has_body);                   // trailers-only
  EXPECT_EQ(downstream_.responses[0].headers["grpc-status"], "14");  // UNAVAILABLE
  EXPECT_NE(downstream_.responses[0].headers["grpc-message"].find("acquire_timeout"),
            std::string::npos);
  EXPECT_TRUE(call.finished());
  EXPECT_EQ(counters_.local_replies.load(), 1u);
  loop_.Advance(10s);  // the deadline no longer answers
  EXPECT_EQ(downstream_.responses.size(), 1u);
  call.OnDownstreamClosed(NGHTTP2_NO_ERROR);
}

// The call's answer alone, on the same fake app connection (its Call only names the stream).
class CallAnswerTest : public CallTest {
 protected:
  CallAnswerTest() : call_for_answer_(context_, downstream_, 3) {}

  Call call_for_answer_;
  CallAnswer answer_{call_for_answer_, downstream_, counters_};
};

TEST_F(CallAnswerTest, LocalAnswerAfterTheResponseHeadersEndsWithTrailersAfterTheData) {
  // Headers and some data went out already (as an attempt would have passed them on).
  const nghttp2_nv nva[] = {MakeNv(":status", "200"), MakeNv("content-type", "application/grpc")};
  answer_.SendHeaders(nva, 2, /*end_stream=*/false, -1);
  const uint8_t data[] = {0, 0, 0, 0, 0};
  answer_.AppendData(data, sizeof(data));
  EXPECT_TRUE(answer_.started());
  EXPECT_FALSE(answer_.finished());

  answer_.FinishLocally(absl::DeadlineExceededError("qpool: deadline exceeded (grpc-timeout)"));
  EXPECT_TRUE(answer_.finished());
  EXPECT_EQ(downstream_.responses.size(), 1u);  // no second HEADERS
  EXPECT_TRUE(downstream_.trailers.empty());    // after the data queued
  uint8_t buf[64];
  uint32_t flags = 0;
  EXPECT_EQ(answer_.Read(buf, sizeof(buf), &flags), 5);
  EXPECT_TRUE(flags & NGHTTP2_DATA_FLAG_EOF);
  EXPECT_TRUE(flags & NGHTTP2_DATA_FLAG_NO_END_STREAM);
  ASSERT_EQ(downstream_.trailers.size(), 1u);
  EXPECT_EQ(downstream_.trailers[0]["grpc-status"], "4");
  EXPECT_EQ(answer_.grpc_code(), 4);
  EXPECT_EQ(counters_.local_replies.load(), 1u);
}

TEST_F(CallAnswerTest, UpstreamResetIsPassedOnAsTheSameReset) {
  answer_.PassOnReset(NGHTTP2_INTERNAL_ERROR);

  EXPECT_TRUE(downstream_.responses.empty());
  EXPECT_EQ(downstream_.resets, std::vector<uint32_t>{NGHTTP2_INTERNAL_ERROR});
  EXPECT_TRUE(answer_.finished());
  EXPECT_TRUE(answer_.started());  // a local answer now has to be a reset
  EXPECT_EQ(answer_.grpc_code(), -1);
}

TEST_F(CallAnswerTest, NothingGoesToTheAppOnceItsStreamClosed) {
  answer_.Close();
  answer_.FinishLocally(absl::UnavailableError("qpool: too late"));

  EXPECT_TRUE(answer_.closed());
  EXPECT_TRUE(downstream_.responses.empty());
  EXPECT_EQ(counters_.local_replies.load(), 0u);
}

}  // namespace
}  // namespace qpool::server
