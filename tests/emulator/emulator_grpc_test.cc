// qdrant-emulator through a gRPC C++ client: every implemented method, Qdrant's error shapes,
// gzip, UNIMPLEMENTED for the rest, each fault knob, and the HTTP control endpoint.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <future>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "emulator/control_api.h"
#include "emulator/control_http.h"
#include "emulator/server.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "qdrant/collections_service.grpc.pb.h"
#include "qdrant/health.grpc.pb.h"
#include "qdrant/points_service.grpc.pb.h"
#include "qdrant/qdrant.grpc.pb.h"
#include "qdrant/snapshots_service.grpc.pb.h"
#include "tests/support/test_util.h"

namespace qpool::emulator {
namespace {

using ::testing::HasSubstr;

using ::qpool::testing::WaitFor;

// One HTTP/1.1 request to the control endpoint; returns {status, body}.
std::pair<int, std::string> Http(const std::string& address, const std::string& method,
                                 const std::string& path, const std::string& body = "") {
  size_t colon = address.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(std::stoi(address.substr(colon + 1)));
  inet_pton(AF_INET, address.substr(0, colon).c_str(), &addr.sin_addr);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return {0, ""};
  }
  std::string request = absl::StrCat(
      method, " ", path, " HTTP/1.1\r\nHost: x\r\nContent-Length: ", body.size(), "\r\n\r\n", body);
  (void)!send(fd, request.data(), request.size(), 0);
  std::string response;
  char buffer[4096];
  ssize_t n;
  while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) response.append(buffer, n);
  close(fd);
  int status = 0;
  if (response.size() > 12) (void)absl::SimpleAtoi(response.substr(9, 3), &status);
  size_t body_start = response.find("\r\n\r\n");
  return {status, body_start == std::string::npos ? "" : response.substr(body_start + 4)};
}

class EmulatorTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(ServerOptions()); }

  void Start(ServerOptions options) {
    control_.reset();
    server_.reset();
    options.listen = "127.0.0.1:0";
    auto server = EmulatorServer::Start(options, storage_, faults_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    auto control =
        ControlHttpServer::Start("127.0.0.1:0", MakeControlHandler(faults_, {server_.get()}));
    ASSERT_TRUE(control.ok()) << control.status();
    control_ = *std::move(control);
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    qdrant_ = qdrant::Qdrant::NewStub(channel_);
    collections_ = qdrant::Collections::NewStub(channel_);
    points_ = qdrant::Points::NewStub(channel_);
  }

  void TearDown() override {
    control_.reset();
    if (server_) server_->Shutdown();
  }

  static std::unique_ptr<grpc::ClientContext> Context() {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return context;
  }

  grpc::Status CreateCollection(const std::string& name, uint64_t dim,
                                qdrant::Distance distance = qdrant::Cosine) {
    qdrant::CreateCollection request;
    request.set_collection_name(name);
    request.mutable_vectors_config()->mutable_params()->set_size(dim);
    request.mutable_vectors_config()->mutable_params()->set_distance(distance);
    qdrant::CollectionOperationResponse reply;
    return collections_->Create(Context().get(), request, &reply);
  }

  // Upserts ids [first, first + n) with vector (i, 1, 0, 0...) of size `dim`, payload
  // {"group": "g<i%3>", "n": i}.
  grpc::Status Upsert(const std::string& name, int first, int n, int dim = 4,
                      grpc::ClientContext* context = nullptr) {
    qdrant::UpsertPoints request;
    request.set_collection_name(name);
    request.set_wait(true);
    for (int i = first; i < first + n; ++i) {
      qdrant::PointStruct* point = request.add_points();
      point->mutable_id()->set_num(i);
      auto* data = point->mutable_vectors()->mutable_vector()->mutable_dense()->mutable_data();
      for (int k = 0; k < dim; ++k) data->Add(k == 0 ? float(i) : k == 1 ? 1.f : 0.f);
      (*point->mutable_payload())["group"].set_string_value(absl::StrCat("g", i % 3));
      (*point->mutable_payload())["n"].set_integer_value(i);
    }
    qdrant::PointsOperationResponse reply;
    auto own = Context();
    return points_->Upsert(context != nullptr ? context : own.get(), request, &reply);
  }

  uint64_t CountPoints(const std::string& name) {
    qdrant::CountPoints request;
    request.set_collection_name(name);
    qdrant::CountResponse reply;
    grpc::Status status = points_->Count(Context().get(), request, &reply);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return reply.result().count();
  }

  grpc::Status HealthCheck() {
    qdrant::HealthCheckReply reply;
    return qdrant_->HealthCheck(Context().get(), qdrant::HealthCheckRequest(), &reply);
  }

  void SetFaults(const std::string& json) {
    auto [status, body] = Http(control_->address(), "PUT", "/faults", json);
    ASSERT_EQ(status, 200) << body;
  }

  Storage storage_;
  FaultInjector faults_{1};
  std::unique_ptr<EmulatorServer> server_;
  std::unique_ptr<ControlHttpServer> control_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<qdrant::Qdrant::Stub> qdrant_;
  std::unique_ptr<qdrant::Collections::Stub> collections_;
  std::unique_ptr<qdrant::Points::Stub> points_;
};

TEST_F(EmulatorTest, HealthChecksAnswer) {
  qdrant::HealthCheckReply reply;
  ASSERT_TRUE(qdrant_->HealthCheck(Context().get(), qdrant::HealthCheckRequest(), &reply).ok());
  EXPECT_EQ(reply.version(), "1.19.0");
  EXPECT_THAT(reply.title(), HasSubstr("qdrant"));
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::health::v1::HealthCheckResponse check;
  ASSERT_TRUE(health->Check(Context().get(), grpc::health::v1::HealthCheckRequest(), &check).ok());
  EXPECT_EQ(check.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(EmulatorTest, CollectionLifecycleAndErrors) {
  ASSERT_TRUE(CreateCollection("docs", 4, qdrant::Euclid).ok());
  grpc::Status again = CreateCollection("docs", 4);
  EXPECT_EQ(again.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(again.error_message(), "Wrong input: Collection `docs` already exists!");

  qdrant::CollectionExistsRequest exists_request;
  exists_request.set_collection_name("docs");
  qdrant::CollectionExistsResponse exists;
  ASSERT_TRUE(collections_->CollectionExists(Context().get(), exists_request, &exists).ok());
  EXPECT_TRUE(exists.result().exists());

  ASSERT_TRUE(Upsert("docs", 1, 3).ok());
  qdrant::GetCollectionInfoRequest get_request;
  get_request.set_collection_name("docs");
  qdrant::GetCollectionInfoResponse info;
  ASSERT_TRUE(collections_->Get(Context().get(), get_request, &info).ok());
  EXPECT_EQ(info.result().points_count(), 3u);
  EXPECT_EQ(info.result().status(), qdrant::Green);
  EXPECT_EQ(info.result().config().params().vectors_config().params().size(), 4u);
  EXPECT_EQ(info.result().config().params().vectors_config().params().distance(), qdrant::Euclid);

  qdrant::ListCollectionsResponse list;
  ASSERT_TRUE(collections_->List(Context().get(), qdrant::ListCollectionsRequest(), &list).ok());
  ASSERT_EQ(list.collections_size(), 1);
  EXPECT_EQ(list.collections(0).name(), "docs");

  qdrant::DeleteCollection delete_request;
  delete_request.set_collection_name("docs");
  qdrant::CollectionOperationResponse deleted;
  ASSERT_TRUE(collections_->Delete(Context().get(), delete_request, &deleted).ok());
  EXPECT_TRUE(deleted.result());
  ASSERT_TRUE(collections_->Delete(Context().get(), delete_request, &deleted).ok());
  EXPECT_FALSE(deleted.result()) << "deleting a missing collection answers OK, result=false";

  grpc::Status missing = collections_->Get(Context().get(), get_request, &info);
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(missing.error_message(), "Not found: Collection `docs` doesn't exist!");
}

TEST_F(EmulatorTest, PointsMethodsRoundTrip) {
  ASSERT_TRUE(CreateCollection("p", 4, qdrant::Dot).ok());
  ASSERT_TRUE(Upsert("p", 0, 30).ok());

  grpc::Status wrong_size = Upsert("p", 100, 1, /*dim=*/3);
  EXPECT_EQ(wrong_size.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(wrong_size.error_message(),
            "Wrong input: Vector dimension error: expected dim: 4, got 3");

  qdrant::GetPoints get;
  get.set_collection_name("p");
  get.add_ids()->set_num(5);
  get.add_ids()->set_num(500);
  get.mutable_with_vectors()->set_enable(true);
  qdrant::GetResponse got;
  ASSERT_TRUE(points_->Get(Context().get(), get, &got).ok());
  ASSERT_EQ(got.result_size(), 1);
  EXPECT_EQ(got.result(0).payload().at("n").integer_value(), 5);
  EXPECT_EQ(got.result(0).vectors().vector().dense().data(0), 5.f);

  qdrant::SearchPoints search;
  search.set_collection_name("p");
  for (float x : {1.f, 0.f, 0.f, 0.f}) search.add_vector(x);
  search.set_limit(3);
  search.mutable_with_payload()->set_enable(true);
  qdrant::SearchResponse found;
  ASSERT_TRUE(points_->Search(Context().get(), search, &found).ok());
  ASSERT_EQ(found.result_size(), 3);
  EXPECT_EQ(found.result(0).id().num(), 29u);
  EXPECT_FLOAT_EQ(found.result(0).score(), 29.f);
  EXPECT_EQ(found.result(0).payload().at("group").string_value(), "g2");
  search.set_score_threshold(27.5);
  search.set_limit(10);
  ASSERT_TRUE(points_->Search(Context().get(), search, &found).ok());
  EXPECT_EQ(found.result_size(), 2);

  qdrant::QueryPoints query;
  query.set_collection_name("p");
  for (float x : {1.f, 0.f, 0.f, 0.f}) {
    query.mutable_query()->mutable_nearest()->mutable_dense()->add_data(x);
  }
  auto* condition = query.mutable_filter()->add_must()->mutable_field();
  condition->set_key("group");
  condition->mutable_match()->set_keyword("g0");
  query.set_limit(2);
  qdrant::QueryResponse queried;
  ASSERT_TRUE(points_->Query(Context().get(), query, &queried).ok());
  ASSERT_EQ(queried.result_size(), 2);
  EXPECT_EQ(queried.result(0).id().num(), 27u);
  EXPECT_EQ(queried.result(1).id().num(), 24u);

  qdrant::ScrollPoints scroll;
  scroll.set_collection_name("p");
  scroll.set_limit(10);
  qdrant::ScrollResponse page;
  ASSERT_TRUE(points_->Scroll(Context().get(), scroll, &page).ok());
  EXPECT_EQ(page.result_size(), 10);
  EXPECT_EQ(page.next_page_offset().num(), 10u);

  qdrant::DeletePoints by_ids;
  by_ids.set_collection_name("p");
  by_ids.set_wait(true);
  by_ids.mutable_points()->mutable_points()->add_ids()->set_num(0);
  qdrant::PointsOperationResponse deleted;
  ASSERT_TRUE(points_->Delete(Context().get(), by_ids, &deleted).ok());
  EXPECT_EQ(CountPoints("p"), 29u);
  qdrant::DeletePoints by_filter;
  by_filter.set_collection_name("p");
  by_filter.set_wait(true);
  auto* field = by_filter.mutable_points()->mutable_filter()->add_must()->mutable_field();
  field->set_key("n");
  field->mutable_match()->set_integer(7);
  ASSERT_TRUE(points_->Delete(Context().get(), by_filter, &deleted).ok());
  EXPECT_EQ(deleted.result().status(), qdrant::Completed);
  EXPECT_EQ(CountPoints("p"), 28u);
}

TEST_F(EmulatorTest, GzipCompressedRequestsAndAnswersWork) {
  ASSERT_TRUE(CreateCollection("z", 64).ok());
  grpc::ClientContext context;
  context.set_compression_algorithm(GRPC_COMPRESS_GZIP);
  ASSERT_TRUE(Upsert("z", 0, 500, 64, &context).ok());
  EXPECT_EQ(CountPoints("z"), 500u);

  grpc::ChannelArguments args;
  args.SetCompressionAlgorithm(GRPC_COMPRESS_GZIP);
  auto gzip_channel =
      grpc::CreateCustomChannel(server_->address(), grpc::InsecureChannelCredentials(), args);
  qdrant::ScrollPoints scroll;
  scroll.set_collection_name("z");
  scroll.set_limit(500);
  scroll.mutable_with_vectors()->set_enable(true);
  grpc::ClientContext scroll_context;
  qdrant::ScrollResponse page;
  ASSERT_TRUE(qdrant::Points::NewStub(gzip_channel)->Scroll(&scroll_context, scroll, &page).ok());
  EXPECT_EQ(page.result_size(), 500);
}

TEST_F(EmulatorTest, OtherMethodsAnswerUnimplemented) {
  qdrant::RecommendResponse recommend;
  EXPECT_EQ(points_->Recommend(Context().get(), qdrant::RecommendPoints(), &recommend).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  qdrant::CollectionOperationResponse aliases;
  EXPECT_EQ(
      collections_->UpdateAliases(Context().get(), qdrant::ChangeAliases(), &aliases).error_code(),
      grpc::StatusCode::UNIMPLEMENTED);
  qdrant::ListSnapshotsResponse snapshots;
  EXPECT_EQ(qdrant::Snapshots::NewStub(channel_)
                ->List(Context().get(), qdrant::ListSnapshotsRequest(), &snapshots)
                .error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(EmulatorTest, LatencyDelaysOnlyTheNamedMethod) {
  SetFaults(R"({"methods": {"HealthCheck": {"latency_ms": 300}}})");
  auto start = absl::Now();
  ASSERT_TRUE(HealthCheck().ok());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));
  start = absl::Now();
  qdrant::ListCollectionsResponse list;
  ASSERT_TRUE(collections_->List(Context().get(), qdrant::ListCollectionsRequest(), &list).ok());
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(300));
}

TEST_F(EmulatorTest, ErrorBeforeHandlerRefusesWithoutWriting) {
  ASSERT_TRUE(CreateCollection("w", 4).ok());
  faults_.ResetCounters();
  SetFaults(R"({"methods": {"qdrant.Points/Upsert": {"error_rate": 1,
      "error_code": "RESOURCE_EXHAUSTED", "retry_after_s": 2, "error_phase": "before"}}})");
  grpc::ClientContext context;
  grpc::Status status = Upsert("w", 0, 1, 4, &context);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  auto retry_after = context.GetServerTrailingMetadata().find("retry-after");
  ASSERT_NE(retry_after, context.GetServerTrailingMetadata().end());
  EXPECT_EQ(std::string(retry_after->second.data(), retry_after->second.size()), "2");
  SetFaults("{}");
  EXPECT_EQ(CountPoints("w"), 0u);
  Counters counters = faults_.counters();
  EXPECT_EQ(counters.calls().at("qdrant.Points/Upsert"), 1u);
  EXPECT_EQ(counters.writes().count("w"), 0u);
  EXPECT_EQ(counters.injected_errors(), 1u);
}

TEST_F(EmulatorTest, ErrorAfterHandlerWritesThenFails) {
  ASSERT_TRUE(CreateCollection("w", 4).ok());
  faults_.ResetCounters();
  SetFaults(R"({"methods": {"Upsert": {"error_rate": 1, "error_phase": "after"}}})");
  EXPECT_EQ(Upsert("w", 0, 1).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Upsert("w", 0, 1).error_code(), grpc::StatusCode::UNAVAILABLE);
  SetFaults("{}");
  EXPECT_EQ(CountPoints("w"), 1u);
  EXPECT_EQ(faults_.counters().writes().at("w"), 2u) << "both attempts were applied";
}

TEST_F(EmulatorTest, HangParksCallsUntilResume) {
  ASSERT_EQ(Http(control_->address(), "POST", "/hang").first, 200);
  std::future<grpc::Status> call = std::async(std::launch::async, [this] { return HealthCheck(); });
  ASSERT_TRUE(WaitFor([this] { return faults_.counters().hung_calls() == 1; }, absl::Seconds(10)));
  EXPECT_EQ(call.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout)
      << "a parked call is not answered";
  ASSERT_EQ(Http(control_->address(), "POST", "/resume").first, 200);
  ASSERT_EQ(call.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(call.get().ok());
}

TEST_F(EmulatorTest, GoawayAfterNCallsMovesClientToANewConnection) {
  SetFaults(R"({"close_after_calls": 2, "close_mode": "goaway"})");
  ASSERT_TRUE(HealthCheck().ok());
  ASSERT_TRUE(HealthCheck().ok());
  ASSERT_TRUE(WaitFor([this] { return faults_.counters().goaways() == 1; }, absl::Seconds(10)));
  // Once the client has seen GOAWAY its channel leaves READY; a call sent before that could race
  // with the old server's shutdown (see docs/emulator.md, "GOAWAY").
  ASSERT_TRUE(WaitFor([this] { return channel_->GetState(false) != GRPC_CHANNEL_READY; },
                      absl::Seconds(10)));
  grpc::Status after = HealthCheck();
  ASSERT_TRUE(after.ok()) << "the client reconnects after GOAWAY: " << after.error_code() << " "
                          << after.error_message();
  EXPECT_EQ(faults_.counters().connections_accepted(), 2u);
  EXPECT_EQ(faults_.counters().calls().at("qdrant.Qdrant/HealthCheck"), 3u);
}

TEST_F(EmulatorTest, AbruptCloseAfterProcessingDropsTheAnswer) {
  ASSERT_TRUE(CreateCollection("a", 4).ok());
  SetFaults(R"({"close_after_calls": 1, "close_mode": "abrupt"})");
  grpc::Status status = Upsert("a", 0, 1);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  SetFaults("{}");
  EXPECT_GE(faults_.counters().abrupt_closes(), 1u);
  // The client may try the dead connection once more before it notices; it then reconnects.
  ASSERT_TRUE(WaitFor([this] { return HealthCheck().ok(); }, absl::Seconds(10)));
  EXPECT_EQ(CountPoints("a"), 1u) << "the write was applied before the connection dropped";
  EXPECT_EQ(faults_.counters().connections_accepted(), 2u);
}

TEST_F(EmulatorTest, ControlCloseEndpointClosesConnections) {
  ASSERT_TRUE(HealthCheck().ok());
  ASSERT_EQ(Http(control_->address(), "POST", "/connections/close?mode=abrupt").first, 200);
  EXPECT_EQ(faults_.counters().abrupt_closes(), 1u);
  ASSERT_TRUE(WaitFor([this] { return HealthCheck().ok(); }, absl::Seconds(10)));
  ASSERT_EQ(Http(control_->address(), "POST", "/connections/close?mode=goaway").first, 200);
  EXPECT_TRUE(WaitFor([this] { return faults_.counters().goaways() == 1; }, absl::Seconds(10)));
  ASSERT_TRUE(WaitFor([this] { return channel_->GetState(false) != GRPC_CHANNEL_READY; },
                      absl::Seconds(10)));
  EXPECT_TRUE(HealthCheck().ok());
  EXPECT_EQ(Http(control_->address(), "POST", "/connections/close?mode=sideways").first, 400);
}

TEST_F(EmulatorTest, MaxConcurrentStreamsSerialisesCallsOnOneConnection) {
  ServerOptions options;
  options.max_concurrent_streams = 1;
  Start(options);
  SetFaults(R"({"methods": {"HealthCheck": {"latency_ms": 300}}})");
  ASSERT_TRUE(HealthCheck().ok());  // Connects and learns the limit.
  auto start = absl::Now();
  std::vector<std::future<grpc::Status>> calls;
  for (int i = 0; i < 3; ++i) {
    calls.push_back(std::async(std::launch::async, [this] { return HealthCheck(); }));
  }
  for (auto& call : calls) EXPECT_TRUE(call.get().ok());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(850)) << "one stream at a time";
}

TEST_F(EmulatorTest, ControlEndpointReadsAndResetsCounters) {
  ASSERT_TRUE(HealthCheck().ok());
  auto [status, body] = Http(control_->address(), "GET", "/counters");
  EXPECT_EQ(status, 200);
  EXPECT_THAT(body, HasSubstr(R"("qdrant.Qdrant/HealthCheck":1)"));
  EXPECT_EQ(Http(control_->address(), "POST", "/counters/reset").first, 200);
  EXPECT_TRUE(faults_.counters().calls().empty());
  auto [bad_status, bad_body] =
      Http(control_->address(), "PUT", "/faults", R"({"methods": {"*": {"error_rate": 5}}})");
  EXPECT_EQ(bad_status, 400);
  EXPECT_THAT(bad_body, HasSubstr("error_rate"));
  EXPECT_EQ(Http(control_->address(), "GET", "/nope").first, 404);
}

}  // namespace
}  // namespace qpool::emulator
