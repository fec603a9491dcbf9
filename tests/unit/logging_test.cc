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

TEST(LoggingTest, JsonLineHasTimestampLevelAndMessage) {
  const std::string line = LoggedBy("info", "json", [] { spdlog::warn("pool {} full", 3); });
  EXPECT_TRUE(std::regex_match(
      line, std::regex(R"(\{"ts":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z","level":"warn",)"
                       R"("msg":"pool 3 full"\}\n)")))
      << line;
}

TEST(LoggingTest, JsonEscapesQuotesBackslashesNewlinesAndControlChars) {
  const std::string line = LoggedBy("info", "json", [] {
    spdlog::error("say \"hi\" to C:\\qpool\nsecond line\ttab\r\x01\x1f\b\f end");
  });
  EXPECT_THAT(line, HasSubstr(R"("level":"error","msg":"say \"hi\" to C:\\qpool\nsecond line\ttab)"
                              R"(\r\u0001\u001f\b\f end"})"));
  EXPECT_EQ(line.find('\n'), line.size() - 1) << "one line per message: " << line;
}

TEST(LoggingTest, JsonKeepsUtf8AndReplacesInvalidBytes) {
  const std::string line =
      LoggedBy("info", "json", [] { spdlog::info("caf\xc3\xa9 \xff\xfe ok \xe2\x82"); });
  EXPECT_THAT(line, HasSubstr("\"msg\":\"caf\xc3\xa9 \\ufffd\\ufffd ok \\ufffd\\ufffd\"}"));
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

}  // namespace
}  // namespace qpool
