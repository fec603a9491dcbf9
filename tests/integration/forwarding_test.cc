// Transparent forwarding: real gRPC C++ clients, directly or through an in-process qpoold, to the
// test upstream. One behaviour per test; both routes must pass.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/route_fixture.h"
#include "tests/support/test_util.h"

namespace qpool::testing {
namespace {

using ::testing::HasSubstr;

// Every call gets a deadline, so a hang fails the test instead of the ctest timeout.
void SetDeadline(grpc::ClientContext& ctx, absl::Duration timeout = absl::Seconds(10)) {
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

std::string ToString(grpc::string_ref ref) { return std::string(ref.data(), ref.size()); }

// The single value of `key` in `metadata`, or "<missing>".
std::string ValueOf(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
                    const std::string& key) {
  auto it = metadata.find(key);
  return it == metadata.end() ? "<missing>" : ToString(it->second);
}

std::string StatusText(const grpc::Status& status) {
  return absl::StrCat("code ", status.error_code(), ": ", status.error_message());
}

class ForwardingTest : public RouteTest {};

TEST_P(ForwardingTest, UnaryRoundTrip) {
  EchoRequest request;
  request.set_payload(PatternBytes(1000, 1));
  EchoResponse response;
  grpc::ClientContext ctx;
  SetDeadline(ctx);

  grpc::Status status = stub_->Unary(&ctx, request, &response);

  ASSERT_TRUE(status.ok()) << StatusText(status);
  EXPECT_EQ(response.payload(), request.payload());
  EXPECT_EQ(upstream_stats().CallsStarted(Method::kUnary), 1);
}

TEST_P(ForwardingTest, ClientStreamingRoundTrip) {
  constexpr int kMessages = 300;
  EchoResponse response;
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  auto writer = stub_->ClientStream(&ctx, &response);
  for (int i = 0; i < kMessages; ++i) {
    EchoRequest request;
    request.set_payload(PatternBytes(1024, i));
    if (i == 0) request.set_response_size(64);
    ASSERT_TRUE(writer->Write(request)) << "write " << i;
  }
  ASSERT_TRUE(writer->WritesDone());

  grpc::Status status = writer->Finish();

  ASSERT_TRUE(status.ok()) << StatusText(status);
  EXPECT_EQ(response.messages_received(), kMessages);
  EXPECT_EQ(response.payload_bytes_received(), kMessages * 1024);
  EXPECT_EQ(response.payload(), PatternBytes(64));
}

TEST_P(ForwardingTest, ServerStreamingRoundTrip) {
  constexpr int kMessages = 300;
  EchoRequest request;
  request.set_response_count(kMessages);
  request.set_response_size(1024);
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  auto reader = stub_->ServerStream(&ctx, request);

  EchoResponse response;
  int received = 0;
  while (reader->Read(&response)) {
    EXPECT_EQ(response.index(), received);
    EXPECT_EQ(response.payload(), PatternBytes(1024)) << "message " << received;
    ++received;
  }
  grpc::Status status = reader->Finish();

  ASSERT_TRUE(status.ok()) << StatusText(status);
  EXPECT_EQ(received, kMessages);
}

TEST_P(ForwardingTest, BidiStreamingRoundTrip) {
  constexpr int kMessages = 500;
  grpc::ClientContext ctx;
  SetDeadline(ctx, absl::Seconds(20));
  auto stream = stub_->Bidi(&ctx);

  // Reads concurrently with the writes: both directions are in flight at once.
  std::vector<EchoResponse> responses;
  std::thread reader([&] {
    EchoResponse response;
    while (stream->Read(&response)) responses.push_back(response);
  });
  bool writes_ok = true;
  for (int i = 0; i < kMessages && writes_ok; ++i) {
    EchoRequest request;
    request.set_payload(PatternBytes(512, i));
    writes_ok = stream->Write(request);
  }
  stream->WritesDone();
  reader.join();
  grpc::Status status = stream->Finish();

  ASSERT_TRUE(writes_ok);
  ASSERT_TRUE(status.ok()) << StatusText(status);
  ASSERT_EQ(responses.size(), static_cast<size_t>(kMessages));
  for (int i = 0; i < kMessages; ++i) {
    EXPECT_EQ(responses[i].index(), i);
    EXPECT_EQ(responses[i].payload(), PatternBytes(512, i)) << "message " << i;
  }
}

TEST_P(ForwardingTest, MetadataRoundTrip) {
  const std::string binary_value("\x00\x01\x7f\x80\xfe\xff", 6);
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  ctx.AddMetadata("x-custom-key", "custom value 1");
  ctx.AddMetadata("api-key", "secret-api-key");
  ctx.AddMetadata("x-trace-bin", binary_value);
  EchoResponse response;

  grpc::Status status = stub_->Unary(&ctx, EchoRequest(), &response);

  ASSERT_TRUE(status.ok()) << StatusText(status);
  // What the upstream received.
  auto seen = upstream_stats().LastMetadata();
  auto value = [&](const std::string& key) {
    auto it = seen.find(key);
    return it == seen.end() ? std::string("<missing>") : it->second;
  };
  EXPECT_EQ(value("x-custom-key"), "custom value 1");
  EXPECT_EQ(value("api-key"), "secret-api-key");
  EXPECT_EQ(value("x-trace-bin"), binary_value);
  EXPECT_THAT(value("user-agent"), HasSubstr(kUserAgentPrefix));
  // What came back as the response's initial metadata.
  const auto& initial = ctx.GetServerInitialMetadata();
  EXPECT_EQ(ValueOf(initial, "echo-x-custom-key"), "custom value 1");
  EXPECT_EQ(ValueOf(initial, "echo-api-key"), "secret-api-key");
  EXPECT_EQ(ValueOf(initial, "echo-x-trace-bin"), binary_value);
  EXPECT_THAT(ValueOf(initial, "echo-user-agent"), HasSubstr(kUserAgentPrefix));
}

TEST_P(ForwardingTest, TrailersRoundTrip) {
  const std::string binary_value("\xff\x00trailer\x00", 9);
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  ctx.AddMetadata("x-trailer-key", "trailer value");
  ctx.AddMetadata("x-trailer-bin", binary_value);
  EchoResponse response;

  grpc::Status status = stub_->Unary(&ctx, EchoRequest(), &response);

  ASSERT_TRUE(status.ok()) << StatusText(status);
  const auto& trailers = ctx.GetServerTrailingMetadata();
  EXPECT_EQ(ValueOf(trailers, "echo-x-trailer-key"), "trailer value");
  EXPECT_EQ(ValueOf(trailers, "echo-x-trailer-bin"), binary_value);
}

TEST_P(ForwardingTest, ErrorStatusWithMessageAndDetailsPassesBackUnchanged) {
  const std::string message = "collection `vectors` not found: 100% sure, ü\n(line 2)";
  const std::string details(
      "\x08\x05\x12\x00"
      "details\xff",
      12);
  EchoRequest request;
  request.set_status_code(grpc::StatusCode::FAILED_PRECONDITION);
  request.set_status_message(message);
  request.set_status_details(details);
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  ctx.AddMetadata("x-error-key", "error trailer");
  EchoResponse response;

  grpc::Status status = stub_->Unary(&ctx, request, &response);

  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << StatusText(status);
  EXPECT_EQ(status.error_message(), message);
  EXPECT_EQ(status.error_details(), details);
  EXPECT_EQ(ValueOf(ctx.GetServerTrailingMetadata(), "echo-x-error-key"), "error trailer");
}

TEST_P(ForwardingTest, DeadlinePropagatesToUpstream) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, absl::Seconds(2));
  EchoResponse response;

  grpc::Status status = stub_->Unary(&ctx, EchoRequest(), &response);

  ASSERT_TRUE(status.ok()) << StatusText(status);
  // gRPC's server reads its clock from a per-batch cache, so it may see a deadline up to a few
  // ms later than the client set it; 50 ms covers that and still fails a deadline that grew.
  const absl::Duration slack = absl::Milliseconds(50);
  absl::Duration seen = upstream_stats().LastDeadline();
  EXPECT_LE(seen, absl::Seconds(2) + slack) << "the upstream saw " << seen;
  EXPECT_GE(seen, absl::Milliseconds(1500)) << "the upstream saw " << seen;
  EXPECT_GE(response.deadline_remaining_ms(), 1500);
  EXPECT_LE(response.deadline_remaining_ms(), 2050);
}

TEST_P(ForwardingTest, ClientCancelReachesUpstream) {
  EchoRequest request;
  request.set_sleep_ms(30000);
  EchoResponse response;
  grpc::ClientContext ctx;
  SetDeadline(ctx, absl::Seconds(40));
  absl::Notification done;
  grpc::Status status;
  stub_->async()->Unary(&ctx, &request, &response, [&](grpc::Status s) {
    status = std::move(s);
    done.Notify();
  });
  ASSERT_TRUE(WaitFor([&] { return upstream_stats().InProgress() == 1; }, absl::Seconds(5)))
      << "the call never reached the upstream";

  ctx.TryCancel();

  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << StatusText(status);
  EXPECT_TRUE(WaitFor([&] { return upstream_stats().Cancellations() == 1; }, absl::Seconds(5)))
      << "the upstream never observed the cancellation";
  EXPECT_TRUE(WaitFor([&] { return upstream_stats().InProgress() == 0; }, absl::Seconds(5)));
}

TEST_P(ForwardingTest, SlowUpstreamGivesDeadlineExceededAtTheDeadline) {
  EchoRequest request;
  request.set_sleep_ms(10000);
  EchoResponse response;
  grpc::ClientContext ctx;
  SetDeadline(ctx, absl::Milliseconds(500));
  const absl::Time start = absl::Now();

  grpc::Status status = stub_->Unary(&ctx, request, &response);

  const absl::Duration elapsed = absl::Now() - start;
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << StatusText(status);
  EXPECT_GE(elapsed, absl::Milliseconds(450));
  EXPECT_LE(elapsed, absl::Milliseconds(2500));
  EXPECT_TRUE(WaitFor([&] { return upstream_stats().InProgress() == 0; }, absl::Seconds(5)))
      << "the upstream still runs the expired call";
}

void ExpectLargeMessageRoundTrips(TestService::Stub& stub, size_t size) {
  EchoRequest request;
  request.set_payload(PatternBytes(size, 7));
  EchoResponse response;
  grpc::ClientContext ctx;
  SetDeadline(ctx, absl::Seconds(30));

  grpc::Status status = stub.Unary(&ctx, request, &response);

  ASSERT_TRUE(status.ok()) << StatusText(status);
  ASSERT_EQ(response.payload().size(), size);
  EXPECT_TRUE(response.payload() == request.payload()) << "payload corrupted";
  EXPECT_EQ(response.payload_bytes_received(), static_cast<int64_t>(size));
}

TEST_P(ForwardingTest, OneMebibyteMessageRoundTrips) {
  ExpectLargeMessageRoundTrips(*stub_, size_t{1} << 20);
}

TEST_P(ForwardingTest, SixteenMebibyteMessageRoundTrips) {
  ExpectLargeMessageRoundTrips(*stub_, size_t{16} << 20);
}

TEST_P(ForwardingTest, GzipCompressedCallRoundTrips) {
  std::string payload;
  for (int i = 0; payload.size() < (256 << 10); ++i) {
    absl::StrAppend(&payload, "point ", i, " vector [0.1, 0.2, 0.3];");
  }
  EchoRequest request;
  request.set_payload(payload);
  request.set_compress_response(true);
  EchoResponse response;
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  ctx.set_compression_algorithm(GRPC_COMPRESS_GZIP);

  grpc::Status status = stub_->Unary(&ctx, request, &response);

  ASSERT_TRUE(status.ok()) << StatusText(status);
  // gRPC hides grpc-encoding from the application; a proxy that dropped or altered it would make
  // the upstream (or the client) fail to decode the compressed message instead.
  EXPECT_TRUE(response.payload() == payload) << "payload corrupted";
}

TEST_P(ForwardingTest, UpstreamNotListeningGivesUnavailableQuickly) {
  const uint16_t dead_port = PickFreePort();
  ASSERT_NE(dead_port, 0);
  ASSERT_NO_FATAL_FAILURE(RestartRoute(
      [](config::Config& config) {
        config.upstream.connect_timeout = absl::Seconds(1);
        config.retry.unreachable_wait = absl::ZeroDuration();  // the max_attempts rule
      },
      dead_port));
  grpc::ClientContext ctx;  // no deadline: qpoold tries max_attempts times, a few backoffs apart
  EchoResponse response;
  const absl::Time start = absl::Now();

  grpc::Status status = stub_->Unary(&ctx, EchoRequest(), &response);

  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << StatusText(status);
  EXPECT_LE(absl::Now() - start, absl::Seconds(3));
}

TEST_P(ForwardingTest, UpstreamNotListeningWithoutADeadlineWaitsUnreachableWait) {
  const uint16_t dead_port = PickFreePort();
  ASSERT_NE(dead_port, 0);
  ASSERT_NO_FATAL_FAILURE(RestartRoute(
      [](config::Config& config) {
        config.upstream.connect_timeout = absl::Seconds(1);
        config.retry.unreachable_wait = absl::Milliseconds(1500);
      },
      dead_port));
  grpc::ClientContext ctx;  // no deadline: a wait-for-ready call, up to retry.unreachable_wait
  EchoResponse response;
  const absl::Time start = absl::Now();

  grpc::Status status = stub_->Unary(&ctx, EchoRequest(), &response);

  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << StatusText(status);
  if (through_qpoold()) {
    EXPECT_THAT(status.error_message(), HasSubstr("retry.unreachable_wait"));
    EXPECT_GE(took, absl::Milliseconds(1450));  // the last try at the window's end
    EXPECT_LE(took, absl::Seconds(4));
  }
}

TEST_P(ForwardingTest, UpstreamNotListeningIsRetriedUntilTheDeadline) {
  const uint16_t dead_port = PickFreePort();
  ASSERT_NE(dead_port, 0);
  ASSERT_NO_FATAL_FAILURE(RestartRoute(
      [](config::Config& config) { config.upstream.connect_timeout = absl::Seconds(1); },
      dead_port));
  grpc::ClientContext ctx;
  SetDeadline(ctx, absl::Seconds(2));
  EchoResponse response;
  const absl::Time start = absl::Now();

  grpc::Status status = stub_->Unary(&ctx, EchoRequest(), &response);

  // The request never left qpoold, so it waits for a node within the caller's deadline, and
  // answers before it: no later than the deadline, and not much earlier than the last backoff
  // (at most retry.backoff_max, 1 s) before it.
  const absl::Duration took = absl::Now() - start;
  if (through_qpoold()) {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << StatusText(status);
    EXPECT_THAT(status.error_message(), HasSubstr("tried"));
    EXPECT_GE(took, absl::Milliseconds(900));
  } else {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << StatusText(status);
  }
  EXPECT_LE(took, absl::Milliseconds(2500));
}

INSTANTIATE_TEST_SUITE_P(Routes, ForwardingTest, AllRoutes(), RouteName);

// Limits of qpoold's own pool: only meaningful through qpoold.
class PoolLimitsTest : public RouteTest {};

// Starts a unary call that sleeps `sleep_ms` at the upstream; `done` is notified with its status.
struct AsyncCall {
  EchoRequest request;
  EchoResponse response;
  grpc::ClientContext ctx;
  grpc::Status status;
  absl::Notification done;

  void Start(TestService::Stub& stub, int sleep_ms, absl::Duration timeout) {
    request.set_sleep_ms(sleep_ms);
    SetDeadline(ctx, timeout);
    stub.async()->Unary(&ctx, &request, &response, [this](grpc::Status s) {
      status = std::move(s);
      done.Notify();
    });
  }
};

TEST_P(PoolLimitsTest, FullQueueGivesResourceExhaustedNamingMaxPending) {
  ASSERT_NO_FATAL_FAILURE(RestartRoute([](config::Config& config) {
    config.upstream.min_connections = 1;
    config.upstream.max_connections = 1;
    config.upstream.max_streams_per_connection = 1;
    config.upstream.max_pending = 1;
    config.upstream.acquire_timeout = absl::Seconds(20);
  }));
  AsyncCall holder;  // takes the only upstream stream
  holder.Start(*stub_, 1500, absl::Seconds(20));
  ASSERT_TRUE(WaitFor([&] { return upstream_stats().InProgress() == 1; }, absl::Seconds(5)));
  AsyncCall queued;  // takes the only queue slot (same connection, so qpoold sees it first)
  queued.Start(*stub_, 0, absl::Seconds(20));

  grpc::ClientContext ctx;
  SetDeadline(ctx, absl::Seconds(5));
  EchoResponse response;
  grpc::Status status = stub_->Unary(&ctx, EchoRequest(), &response);

  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << StatusText(status);
  EXPECT_THAT(status.error_message(), HasSubstr("upstream.max_pending"));
  ASSERT_TRUE(holder.done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  ASSERT_TRUE(queued.done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_TRUE(holder.status.ok()) << StatusText(holder.status);
  EXPECT_TRUE(queued.status.ok()) << "the queued call: " << StatusText(queued.status);
  EXPECT_EQ(upstream_stats().CallsStarted(), 2);
}

TEST_P(PoolLimitsTest, AcquireTimeoutGivesUnavailableNamingAcquireTimeout) {
  ASSERT_NO_FATAL_FAILURE(RestartRoute([](config::Config& config) {
    config.upstream.min_connections = 1;
    config.upstream.max_connections = 1;
    config.upstream.max_streams_per_connection = 1;
    config.upstream.max_pending = 8;
    config.upstream.acquire_timeout = absl::Milliseconds(300);
  }));
  AsyncCall holder;
  holder.Start(*stub_, 1500, absl::Seconds(20));
  ASSERT_TRUE(WaitFor([&] { return upstream_stats().InProgress() == 1; }, absl::Seconds(5)));

  grpc::ClientContext ctx;
  SetDeadline(ctx, absl::Seconds(10));
  EchoResponse response;
  const absl::Time start = absl::Now();
  grpc::Status status = stub_->Unary(&ctx, EchoRequest(), &response);
  const absl::Duration elapsed = absl::Now() - start;

  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << StatusText(status);
  EXPECT_THAT(status.error_message(), HasSubstr("upstream.acquire_timeout"));
  EXPECT_GE(elapsed, absl::Milliseconds(250));
  EXPECT_LE(elapsed, absl::Milliseconds(2000));
  EXPECT_EQ(upstream_stats().CallsStarted(), 1) << "the timed-out call reached the upstream";
  ASSERT_TRUE(holder.done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_TRUE(holder.status.ok()) << StatusText(holder.status);
}

TEST_P(PoolLimitsTest, StreamCapBoundsCallsInProgressAtUpstream) {
  constexpr int kConnections = 2;
  constexpr int kStreamsPerConnection = 3;
  constexpr int kCalls = 30;
  ASSERT_NO_FATAL_FAILURE(RestartRoute([](config::Config& config) {
    config.upstream.max_connections = kConnections;
    config.upstream.max_streams_per_connection = kStreamsPerConnection;
    config.upstream.max_pending = 100;
    config.upstream.acquire_timeout = absl::Seconds(10);
  }));
  std::vector<std::unique_ptr<AsyncCall>> calls;
  for (int i = 0; i < kCalls; ++i) {
    calls.push_back(std::make_unique<AsyncCall>());
    calls.back()->Start(*stub_, 100, absl::Seconds(20));
  }
  for (auto& call : calls) {
    ASSERT_TRUE(call->done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  }

  for (auto& call : calls) EXPECT_TRUE(call->status.ok()) << StatusText(call->status);
  EXPECT_EQ(upstream_stats().CallsStarted(), kCalls);
  EXPECT_LE(upstream_stats().MaxUnanswered(), kConnections * kStreamsPerConnection);
  EXPECT_GE(upstream_stats().MaxUnanswered(), 2) << "the calls never ran in parallel";
  EXPECT_LE(upstream_stats().DistinctPeers(), kConnections);
}

INSTANTIATE_TEST_SUITE_P(ThroughQpoold, PoolLimitsTest, ::testing::Values(Route::kThroughQpoold),
                         RouteName);

}  // namespace
}  // namespace qpool::testing
