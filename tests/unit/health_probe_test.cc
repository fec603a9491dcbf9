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

// The probe's own protobuf reader on hand-made replies: 32-bit fields (wire type 5) are skipped
// like 64-bit ones (a newer Qdrant may add either); a fixed field cut short, a group or another
// unknown wire type, or a varint cut short fails the probe as a malformed reply.
TEST(ProbeJudgeTest, ThirtyTwoBitFieldsAreSkippedAndMalformedWireDataFails) {
  const ProbeSpec spec = ProbeSpec::QdrantHealthCheck();
  const std::string version = std::string("\x12\x05") + "1.2.3";  // field 2, 5 bytes
  // Field 9 as fixed32 (key 0x4D) and field 10 as fixed64 (key 0x51) ahead of the version.
  const std::string skipped = std::string("\x4D\x01\x02\x03\x04", 5) +
                              std::string("\x51\x01\x02\x03\x04\x05\x06\x07\x08", 9);
  health::ProbeResult result = JudgeProbeAnswer(spec, 0, "", GrpcFrame(skipped + version));
  EXPECT_TRUE(result.success) << result.detail;
  EXPECT_EQ(result.version, "1.2.3");
  for (const std::string& malformed : {
           version + std::string("\x4D\x01\x02", 3),          // fixed32 cut short
           version + std::string("\x51\x01\x02\x03\x04", 5),  // fixed64 cut short
           version + std::string("\x4B\x00", 2),              // a group (wire type 3)
           version + std::string("\x4E\x00", 2),              // wire type 6
           version + std::string("\x08\x80\x80", 3),          // a varint cut short
           version + std::string("\x12\x80"),                 // a length varint cut short
       }) {
    result = JudgeProbeAnswer(spec, 0, "", GrpcFrame(malformed));
    EXPECT_FALSE(result.success) << testing::PrintToString(malformed);
    EXPECT_EQ(result.detail, "qdrant.Qdrant/HealthCheck: malformed reply")
        << testing::PrintToString(malformed);
  }
}

}  // namespace
}  // namespace qpool::server
