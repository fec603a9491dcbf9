#include "daemon/common/logging.h"

#include <regex>
#include <string>

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
