// Fault planning and counters, without gRPC.
#include "emulator/faults.h"

#include "gtest/gtest.h"

namespace qpool::emulator {
namespace {

TEST(FaultInjectorTest, NoConfigMeansNoFaultsButCountsCalls) {
  FaultInjector faults(1);
  CallPlan plan = faults.OnCall("qdrant.Points/Upsert");
  EXPECT_EQ(plan.delay, absl::ZeroDuration());
  EXPECT_FALSE(plan.error.has_value());
  EXPECT_FALSE(plan.hang);
  faults.OnCall("qdrant.Points/Upsert");
  faults.CountWrite("docs");
  Counters counters = faults.counters();
  EXPECT_EQ(counters.calls().at("qdrant.Points/Upsert"), 2u);
  EXPECT_EQ(counters.writes().at("docs"), 1u);
  faults.ResetCounters();
  EXPECT_TRUE(faults.counters().calls().empty());
}

TEST(FaultInjectorTest, MostSpecificRuleWins) {
  FaultInjector faults(1);
  ASSERT_TRUE(faults
                  .SetConfigJson(R"({"methods": {
                      "*": {"latency_ms": 1},
                      "Search": {"latency_ms": 2},
                      "qdrant.Points/Search": {"latency_ms": 3}}})")
                  .ok());
  EXPECT_EQ(faults.OnCall("qdrant.Points/Search").delay, absl::Milliseconds(3));
  EXPECT_EQ(faults.OnCall("qdrant.Other/Search").delay, absl::Milliseconds(2));
  EXPECT_EQ(faults.OnCall("qdrant.Points/Count").delay, absl::Milliseconds(1));
}

TEST(FaultInjectorTest, ErrorRateOneAlwaysFailsWithConfiguredCodeAndPhase) {
  FaultInjector faults(1);
  ASSERT_TRUE(faults
                  .SetConfigJson(R"({"methods": {"Upsert": {"error_rate": 1,
                      "error_code": "RESOURCE_EXHAUSTED", "retry_after_s": 3,
                      "error_phase": "after"}}})")
                  .ok());
  for (int i = 0; i < 20; ++i) {
    CallPlan plan = faults.OnCall("qdrant.Points/Upsert");
    ASSERT_TRUE(plan.error.has_value());
    EXPECT_EQ(plan.error->code, absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(plan.error->retry_after_s, 3u);
    EXPECT_TRUE(plan.error->after_handler);
  }
  EXPECT_FALSE(faults.OnCall("qdrant.Points/Search").error.has_value());
}

TEST(FaultInjectorTest, ErrorRateIsRoughlyHonoured) {
  FaultInjector faults(1);
  ASSERT_TRUE(faults.SetConfigJson(R"({"methods": {"*": {"error_rate": 0.3}}})").ok());
  int errors = 0;
  for (int i = 0; i < 2000; ++i) errors += faults.OnCall("m").error.has_value();
  EXPECT_NEAR(errors, 600, 100);
}

TEST(FaultInjectorTest, JitterStaysWithinBounds) {
  FaultInjector faults(1);
  ASSERT_TRUE(
      faults.SetConfigJson(R"({"methods": {"*": {"latency_ms": 10, "jitter_ms": 5}}})").ok());
  for (int i = 0; i < 100; ++i) {
    absl::Duration delay = faults.OnCall("m").delay;
    EXPECT_GE(delay, absl::Milliseconds(10));
    EXPECT_LE(delay, absl::Milliseconds(15));
  }
}

TEST(FaultInjectorTest, CloseAfterEveryNthCall) {
  FaultInjector faults(1);
  ASSERT_TRUE(faults.SetConfigJson(R"({"close_after_calls": 3, "close_mode": "abrupt"})").ok());
  std::vector<CloseMode> modes;
  for (int i = 0; i < 6; ++i) modes.push_back(faults.OnCall("m").close_after);
  EXPECT_EQ(modes,
            (std::vector<CloseMode>{CloseMode::kNone, CloseMode::kNone, CloseMode::kAbrupt,
                                    CloseMode::kNone, CloseMode::kNone, CloseMode::kAbrupt}));
}

TEST(FaultInjectorTest, HangRulesAndHangAll) {
  FaultInjector faults(1);
  ASSERT_TRUE(faults.SetConfigJson(R"({"methods": {"Search": {"hang": true}}})").ok());
  EXPECT_TRUE(faults.OnCall("qdrant.Points/Search").hang);
  EXPECT_FALSE(faults.ShouldHang("qdrant.Points/Count"));
  faults.SetHangAll(true);
  EXPECT_TRUE(faults.ShouldHang("qdrant.Points/Count"));
  EXPECT_EQ(faults.counters().hung_calls(), 1u);
}

TEST(FaultInjectorTest, BadConfigIsRefusedAndOldOneKept) {
  FaultInjector faults(1);
  ASSERT_TRUE(faults.SetConfigJson(R"({"methods": {"*": {"latency_ms": 5}}})").ok());
  EXPECT_EQ(faults.SetConfigJson(R"({"methods": {"*": {"error_code": "NOPE"}}})").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(faults.SetConfigJson(R"({"close_mode": "sideways"})").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(faults.SetConfigJson("{not json").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(faults.OnCall("m").delay, absl::Milliseconds(5));
  EXPECT_EQ(*ParseStatusCode("14"), absl::StatusCode::kUnavailable);
  EXPECT_EQ(*ParseStatusCode("unavailable"), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace qpool::emulator
