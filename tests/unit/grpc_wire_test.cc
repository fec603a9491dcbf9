// grpc-timeout parsing and formatting (daemon/server/grpc_wire.h).
#include "daemon/server/grpc_wire.h"

#include <chrono>

#include "gtest/gtest.h"

namespace qpool::server {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;

TEST(GrpcTimeoutTest, ParsesEachUnit) {
  EXPECT_EQ(ParseGrpcTimeout("2H"), hours(2));
  EXPECT_EQ(ParseGrpcTimeout("10M"), minutes(10));
  EXPECT_EQ(ParseGrpcTimeout("250m"), milliseconds(250));
  EXPECT_EQ(ParseGrpcTimeout("7n"), Duration(7));
}

TEST(GrpcTimeoutTest, RejectsMalformedValues) {
  EXPECT_FALSE(ParseGrpcTimeout("").has_value());
  EXPECT_FALSE(ParseGrpcTimeout("S").has_value());
  EXPECT_FALSE(ParseGrpcTimeout("123456789S").has_value());  // 9 digits
  EXPECT_FALSE(ParseGrpcTimeout("1x").has_value());
  EXPECT_FALSE(ParseGrpcTimeout("-1S").has_value());
}

// Found by tests/fuzz/grpc_timeout_fuzz: 8 digits of hours overflowed a 64-bit nanosecond count
// (undefined behaviour; any app could send it).
TEST(GrpcTimeoutTest, HugeValuesReadAsTheMaximumInsteadOfOverflowing) {
  EXPECT_EQ(ParseGrpcTimeout("99999999H"), kMaxGrpcTimeout);
  EXPECT_EQ(ParseGrpcTimeout("3540340H"), kMaxGrpcTimeout);
  EXPECT_EQ(ParseGrpcTimeout("99999999M"), kMaxGrpcTimeout);
  EXPECT_EQ(ParseGrpcTimeout("100000H"), kMaxGrpcTimeout);
  EXPECT_EQ(ParseGrpcTimeout("99999H"), hours(99'999));
}

TEST(GrpcTimeoutTest, FormatRoundsUpAndParsesBack) {
  for (Duration d : {Duration(1), Duration(999'999'999), Duration(std::chrono::seconds(5)),
                     Duration(kMaxGrpcTimeout)}) {
    const std::optional<Duration> again = ParseGrpcTimeout(FormatGrpcTimeout(d));
    ASSERT_TRUE(again.has_value()) << FormatGrpcTimeout(d);
    EXPECT_GE(*again, d) << FormatGrpcTimeout(d);
  }
}

}  // namespace
}  // namespace qpool::server
