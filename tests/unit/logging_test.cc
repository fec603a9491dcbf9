#include "daemon/common/logging.h"

#include <chrono>
#include <regex>
#include <string>
#include <vector>

#include "daemon/common/access_log.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "spdlog/spdlog.h"

namespace qpool {
namespace {

using ::testing::HasSubstr;

// What SetupLogging(level, format) writes to stderr for `log`.
template <typename LogFn>
std::string LoggedBy(std::string_view level, std::string_view format, LogFn log) {
  EXPECT_TRUE(SetupLogging(level, format).ok());
  testing::internal::CaptureStderr();
  log();
  spdlog::default_logger()->flush();
  return testing::internal::GetCapturedStderr();
}

TEST(LoggingTest, TextLineHasTimestampLevelNameAndMessage) {
  const std::string line =
      LoggedBy("info", "text", [] { spdlog::info("listening on {}", "127.0.0.1:6334"); });
  EXPECT_TRUE(std::regex_match(
      line, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info qpoold listening on )"
                       R"(127\.0\.0\.1:6334\n)")))
      << line;
}

TEST(LoggingTest, JsonLineHasTimeSeverityMessageAndFields) {
  const std::string line = LoggedBy("info", "json", [] { spdlog::warn("pool {} full", 3); });
  EXPECT_TRUE(std::regex_match(
      line, std::regex(R"(\{"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z","severity":"WARNING",)"
                       R"("msg":"pool 3 full","logger":"qpoold","thread":\d+\}\n)")))
      << line;
}

TEST(LoggingTest, JsonSeverityUsesCloudLoggingNames) {
  const std::string lines = LoggedBy("trace", "json", [] {
    spdlog::trace("t");
    spdlog::debug("d");
    spdlog::info("i");
    spdlog::warn("w");
    spdlog::error("e");
    spdlog::critical("c");
  });
  for (const char* expected :
       {R"("severity":"DEBUG","msg":"t")", R"("severity":"DEBUG","msg":"d")",
        R"("severity":"INFO","msg":"i")", R"("severity":"WARNING","msg":"w")",
        R"("severity":"ERROR","msg":"e")", R"("severity":"CRITICAL","msg":"c")"}) {
    EXPECT_THAT(lines, HasSubstr(expected));
  }
}

TEST(LoggingTest, JsonCarriesTheSourceLocationOfMacroLines) {
  const std::string line = LoggedBy("info", "json", [] { SPDLOG_INFO("from a macro"); });
  EXPECT_TRUE(std::regex_search(
      line,
      std::regex(R"("msg":"from a macro",.*"logging\.googleapis\.com/sourceLocation":)"
                 R"(\{"file":"tests/unit/logging_test\.cc","line":\d+,"function":"[^"]+"\}\}\n$)")))
      << line;
}

TEST(LoggingTest, LevelAndFormatChangeWhileRunning) {
  ASSERT_TRUE(SetupLogging("info", "text").ok());
  testing::internal::CaptureStderr();
  spdlog::debug("hidden");
  ASSERT_TRUE(SetLogLevel("debug").ok());
  spdlog::debug("shown");
  ASSERT_TRUE(SetLogFormat("json").ok());
  spdlog::info("as json");
  EXPECT_EQ(SetLogLevel("loud").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SetLogFormat("xml").code(), absl::StatusCode::kInvalidArgument);
  spdlog::default_logger()->flush();
  const std::string output = testing::internal::GetCapturedStderr();
  EXPECT_THAT(output, Not(HasSubstr("hidden")));
  EXPECT_THAT(output, HasSubstr(" debug qpoold shown\n"));
  EXPECT_THAT(output, HasSubstr(R"("severity":"INFO","msg":"as json")"));
}

TEST(LoggingTest, JsonEscapesQuotesBackslashesNewlinesAndControlChars) {
  const std::string line = LoggedBy("info", "json", [] {
    spdlog::error("say \"hi\" to C:\\qpool\nsecond line\ttab\r\x01\x1f\b\f end");
  });
  EXPECT_THAT(line,
              HasSubstr(R"("severity":"ERROR","msg":"say \"hi\" to C:\\qpool\nsecond line\ttab)"
                        R"(\r\u0001\u001f\b\f end",)"));
  EXPECT_EQ(line.find('\n'), line.size() - 1) << "one line per message: " << line;
}

TEST(LoggingTest, JsonKeepsUtf8AndReplacesInvalidBytes) {
  const std::string line =
      LoggedBy("info", "json", [] { spdlog::info("caf\xc3\xa9 \xff\xfe ok \xe2\x82"); });
  EXPECT_THAT(line, HasSubstr("\"msg\":\"caf\xc3\xa9 \\ufffd\\ufffd ok \\ufffd\\ufffd\","));
}

TEST(LoggingTest, LevelFiltersLessSevereMessages) {
  const std::string output = LoggedBy("warn", "text", [] {
    spdlog::info("hidden");
    spdlog::warn("shown");
  });
  EXPECT_THAT(output, Not(HasSubstr("hidden")));
  EXPECT_THAT(output, HasSubstr(" warn qpoold shown\n"));
}

TEST(LoggingTest, OffLogsNothing) {
  EXPECT_EQ(LoggedBy("off", "text", [] { spdlog::error("nothing"); }), "");
}

TEST(LoggingTest, UnknownLevelIsRefused) {
  absl::Status status = SetupLogging("loud", "text");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("loud"));
}

TEST(LoggingTest, UnknownFormatIsRefused) {
  absl::Status status = SetupLogging("info", "xml");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("xml"));
}

// --- The access log (access_log.h) -----------------------------------------------------------

// 2026-11-27T03:20:56.123456Z
std::chrono::system_clock::time_point FixedTime() {
  return std::chrono::system_clock::time_point(std::chrono::seconds(1795749656)) +
         std::chrono::microseconds(123456);
}

AccessRecord GrpcRecord() {
  AccessRecord record;
  record.protocol = "grpc";
  record.method = "/qdrant.Points/Search";
  record.retry_class = "read";
  record.status = 0;
  record.duration = std::chrono::microseconds(412);
  record.node = "10.0.0.7:6334";
  record.attempts = 1;
  record.peer = "127.0.0.1:51234";
  return record;
}

AccessRecord RestRecord() {
  AccessRecord record;
  record.protocol = "rest";
  record.method = "POST";
  record.route = "/collections/{}/points/search";
  record.retry_class = "read";
  record.status = 503;
  record.duration = std::chrono::microseconds(1250);
  record.attempts = 3;
  record.node = "10.0.0.8:6333";
  record.peer = "127.0.0.1:40112";
  return record;
}

TEST(AccessLogTest, TextLineIsLogfmtAfterTimeLevelAndLogger) {
  EXPECT_EQ(FormatAccessLine(GrpcRecord(), "text", FixedTime()),
            "2026-11-27T03:20:56.123Z info access protocol=grpc method=/qdrant.Points/Search "
            "retry_class=read status=0 duration_ms=0.412 node=10.0.0.7:6334 attempts=1 "
            "peer=127.0.0.1:51234\n");
  EXPECT_EQ(FormatAccessLine(RestRecord(), "text", FixedTime()),
            "2026-11-27T03:20:56.123Z info access protocol=rest method=POST "
            "route=/collections/{}/points/search retry_class=read status=503 duration_ms=1.250 "
            "node=10.0.0.8:6333 attempts=3 peer=127.0.0.1:40112\n");
}

TEST(AccessLogTest, JsonLineHasTimeSeverityMsgAndTypedFields) {
  EXPECT_EQ(FormatAccessLine(RestRecord(), "json", FixedTime()),
            R"({"time":"2026-11-27T03:20:56.123456Z","severity":"INFO","msg":"access",)"
            R"("logger":"access","protocol":"rest","method":"POST",)"
            R"("route":"/collections/{}/points/search","retry_class":"read","status":503,)"
            R"("duration_ms":1.250,"node":"10.0.0.8:6333","attempts":3,)"
            R"("peer":"127.0.0.1:40112"})"
            "\n");
  // A gRPC line has no route; a call reset before any status is -1; no attempt sent: node "-".
  AccessRecord reset = GrpcRecord();
  reset.status = -1;
  reset.node = "";
  reset.attempts = 0;
  const std::string line = FormatAccessLine(reset, "json", FixedTime());
  EXPECT_THAT(line, Not(HasSubstr("\"route\"")));
  EXPECT_THAT(line, HasSubstr(R"("status":-1,"duration_ms":0.412,"node":"-","attempts":0,)"));
}

TEST(AccessLogTest, TextQuotesAndJsonEscapesOddValues) {
  AccessRecord record = GrpcRecord();
  record.peer = "";
  record.method = "say \"hi\"";
  EXPECT_THAT(FormatAccessLine(record, "text", FixedTime()), HasSubstr(R"( method="say \"hi\"" )"));
  EXPECT_THAT(FormatAccessLine(record, "text", FixedTime()), HasSubstr(" peer=\"\"\n"));
  EXPECT_THAT(FormatAccessLine(record, "json", FixedTime()), HasSubstr(R"("method":"say \"hi\"")"));
}

// Hands out the draws the test lists, and counts them.
class ScriptedRandom : public Random {
 public:
  explicit ScriptedRandom(std::vector<double> draws) : draws_(std::move(draws)) {}
  double Uniform01() override { return draws_[calls_++ % draws_.size()]; }
  size_t calls() const { return calls_; }

 private:
  std::vector<double> draws_;
  size_t calls_ = 0;
};

TEST(AccessLogTest, OffDrawsNothingAndLogsNothing) {
  SetAccessLogSample(0);
  ScriptedRandom random({0.0});
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(AccessLogSampled(random));
  EXPECT_EQ(random.calls(), 0u);
}

TEST(AccessLogTest, AFractionLogsTheCallsWhoseDrawIsBelowIt) {
  SetAccessLogSample(0.25);
  ScriptedRandom random({0.1, 0.3, 0.2499, 0.25, 0.9});
  std::vector<bool> sampled;
  for (int i = 0; i < 5; ++i) sampled.push_back(AccessLogSampled(random));
  EXPECT_THAT(sampled, testing::ElementsAre(true, false, true, false, false));
  // 1 logs every call (draws are below 1); a later change applies to the next call.
  SetAccessLogSample(1);
  ScriptedRandom highest({0.999999});
  EXPECT_TRUE(AccessLogSampled(highest));
  SetAccessLogSample(0);
  EXPECT_FALSE(AccessLogSampled(highest));
}

TEST(AccessLogTest, WriteFollowsTheLogFormatWhateverTheLevel) {
  const std::string text = LoggedBy("off", "text", [] { WriteAccessLine(GrpcRecord()); });
  EXPECT_TRUE(std::regex_match(
      text, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info access protocol=grpc .*)"
                       R"( peer=127\.0\.0\.1:51234\n)")))
      << text;
  std::string json;
  {
    ASSERT_TRUE(SetupLogging("error", "text").ok());
    ASSERT_TRUE(SetLogFormat("json").ok());
    testing::internal::CaptureStderr();
    WriteAccessLine(RestRecord());
    json = testing::internal::GetCapturedStderr();
  }
  EXPECT_THAT(json, HasSubstr(R"(,"severity":"INFO","msg":"access","logger":"access",)"
                              R"("protocol":"rest","method":"POST",)"));
}

TEST(LoggingTest, TextLinesNameEveryLevelAsTheConfigDoes) {
  const std::string lines = LoggedBy("trace", "text", [] {
    spdlog::trace("t");
    spdlog::debug("d");
    spdlog::error("e");
    spdlog::critical("c");
  });
  for (const char* expected : {"Z trace qpoold t\n", "Z debug qpoold d\n", "Z error qpoold e\n",
                               "Z critical qpoold c\n"}) {
    EXPECT_THAT(lines, HasSubstr(expected));
  }
}

TEST(LoggingTest, JsonReplacesOverlongSurrogateAndOutOfRangeSequences) {
  // Each invalid lead byte becomes U+FFFD; its continuation bytes then stand alone and do too.
  const std::string line = LoggedBy("info", "json", [] {
    spdlog::info("a\xe0\x80\xafg\xed\xa0\x80h\xf0\x80\x80\xafi\xf4\x90\x80\x80j\xc0\xafz");
  });
  EXPECT_THAT(line, HasSubstr("\"msg\":\"a\\ufffd\\ufffd\\ufffdg\\ufffd\\ufffd\\ufffdh"
                              "\\ufffd\\ufffd\\ufffd\\ufffdi\\ufffd\\ufffd\\ufffd\\ufffdj"
                              "\\ufffd\\ufffdz\","));
  // Valid 3- and 4-byte sequences, and DEL (escaped), pass.
  const std::string valid =
      LoggedBy("info", "json", [] { spdlog::info("\xe2\x82\xac \xf0\x9f\x98\x80 \x7f"); });
  EXPECT_THAT(valid, HasSubstr("\"msg\":\"\xe2\x82\xac \xf0\x9f\x98\x80 \\u007f\","));
}

TEST(LoggingTest, RuntimeChangesRefuseUnknownValuesAndKeepTheOldOnes) {
  ASSERT_TRUE(SetupLogging("info", "text").ok());
  EXPECT_EQ(SetLogLevel("loud").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SetLogFormat("xml").code(), absl::StatusCode::kInvalidArgument);
  testing::internal::CaptureStderr();
  spdlog::debug("hidden");
  spdlog::info("still text");
  spdlog::default_logger()->flush();
  const std::string output = testing::internal::GetCapturedStderr();
  EXPECT_THAT(output, Not(HasSubstr("hidden")));                          // still at info
  EXPECT_THAT(output, ::testing::EndsWith(" info qpoold still text\n"));  // still text
}

}  // namespace
}  // namespace qpool
