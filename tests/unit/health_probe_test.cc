// How a medium or deep probe judges an answer: grpc-status, and the few reply fields it reads with
// its own small protobuf decoder (HealthCheckReply.version, HealthCheckResponse.status,
// CollectionExistsResponse.result.exists). Replies are built with the generated classes.
#include "daemon/server/health_probe.h"

#include "daemon/common/grpc_frame.h"
#include "gtest/gtest.h"
#include "qdrant/collections.pb.h"
#include "qdrant/health.pb.h"
#include "qdrant/qdrant.pb.h"

namespace qpool::server {
namespace {

std::string Framed(const google::protobuf::MessageLite& message) {
  return GrpcFrame(message.SerializeAsString());
}

TEST(ProbeJudgeTest, QdrantHealthCheckReportsTheVersion) {
  qdrant::HealthCheckReply reply;
  reply.set_title("qdrant - vector search engine");
  reply.set_version("1.19.2");
  reply.set_commit("abc");
  health::ProbeResult result =
      JudgeProbeAnswer(ProbeSpec::QdrantHealthCheck(), 0, "", Framed(reply));
  EXPECT_TRUE(result.success) << result.detail;
  EXPECT_EQ(result.version, "1.19.2");
}

TEST(ProbeJudgeTest, NonZeroStatusFailsAndSaysWhy) {
  health::ProbeResult result =
      JudgeProbeAnswer(ProbeSpec::QdrantHealthCheck(), 14, "shard unavailable", "");
  EXPECT_FALSE(result.success);
  EXPECT_EQ(result.detail, "qdrant.Qdrant/HealthCheck: grpc-status 14 shard unavailable");
  EXPECT_FALSE(JudgeProbeAnswer(ProbeSpec::ListCollections(), -1, "", "").success);
}

TEST(ProbeJudgeTest, GrpcHealthMustBeServing) {
  grpc::health::v1::HealthCheckResponse reply;
  reply.set_status(grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_TRUE(JudgeProbeAnswer(ProbeSpec::GrpcHealthCheck(), 0, "", Framed(reply)).success);
  reply.set_status(grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  health::ProbeResult result = JudgeProbeAnswer(ProbeSpec::GrpcHealthCheck(), 0, "", Framed(reply));
  EXPECT_FALSE(result.success);
  EXPECT_EQ(result.detail, "grpc.health.v1.Health/Check: status 2");
}

TEST(ProbeJudgeTest, CollectionExistsMustSayTrue) {
  qdrant::CollectionExistsResponse reply;
  reply.set_time(0.001);
  reply.mutable_result()->set_exists(true);
  const ProbeSpec spec = ProbeSpec::CollectionExists("docs");
  EXPECT_TRUE(JudgeProbeAnswer(spec, 0, "", Framed(reply)).success);
  reply.mutable_result()->set_exists(false);
  EXPECT_FALSE(JudgeProbeAnswer(spec, 0, "", Framed(reply)).success);
}

TEST(ProbeJudgeTest, CollectionExistsRequestIsTheProtobufEncoding) {
  qdrant::CollectionExistsRequest request;
  request.set_collection_name(std::string(200, 'x'));  // a two-byte length varint
  EXPECT_EQ(ProbeSpec::CollectionExists(std::string(200, 'x')).message,
            request.SerializeAsString());
}

TEST(ProbeJudgeTest, TruncatedOrCompressedRepliesFail) {
  qdrant::HealthCheckReply reply;
  reply.set_version("1.19.0");
  std::string framed = Framed(reply);
  EXPECT_FALSE(
      JudgeProbeAnswer(ProbeSpec::QdrantHealthCheck(), 0, "", framed.substr(0, framed.size() - 1))
          .success);
  framed[0] = 1;  // compressed flag
  EXPECT_FALSE(JudgeProbeAnswer(ProbeSpec::QdrantHealthCheck(), 0, "", framed).success);
}

}  // namespace
}  // namespace qpool::server
