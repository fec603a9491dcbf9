// Logging setup: spdlog, to stderr, as text or as one JSON object per line.
// Thread-safety: call SetupLogging once at start-up, before other threads log. SetLogLevel and
// SetLogFormat may be called later from any thread while others log (config reload).
#ifndef QPOOL_DAEMON_COMMON_LOGGING_H_
#define QPOOL_DAEMON_COMMON_LOGGING_H_

#include <chrono>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace qpool {

// `level`: trace|debug|info|warn|error|off; `format`: text|json. kInvalidArgument otherwise.
// JSON lines are one object each, the shape Cloud Logging reads from stderr:
//   {"time":"2026-11-27T03:20:56.123456Z","severity":"WARNING","msg":"...","logger":"qpoold",
//    "thread":1234,"logging.googleapis.com/sourceLocation":{"file":"...","line":12,"function":"..."}}
// `severity` uses Cloud Logging's names (DEBUG, INFO, WARNING, ERROR, CRITICAL), `time` is RFC 3339
// UTC with microseconds, strings are escaped per RFC 8259 (invalid UTF-8 becomes U+FFFD), and the
// source location is present for lines logged with the SPDLOG_* macros. Text lines:
//   2026-11-27T03:20:56.123Z warn qpoold ...
absl::Status SetupLogging(std::string_view level, std::string_view format);

// Changes the level of the logger SetupLogging installed; kInvalidArgument for an unknown level,
// kFailedPrecondition before SetupLogging.
absl::Status SetLogLevel(std::string_view level);

// Changes the line format (text|json) of the logger SetupLogging installed; lines already being
// written finish in the old format. kInvalidArgument / kFailedPrecondition as above.
absl::Status SetLogFormat(std::string_view format);

// One field of a structured line (WriteFieldsLine): a name and its value, a string (JSON: quoted
// and escaped) or, with `number`, written as it is (JSON: a bare number).
struct LogField {
  std::string_view name;
  std::string_view value;
  bool number = false;
};

// A line of `fields` from logger `logger`, at INFO, in `format` (text|json; anything else is text):
//   text: 2026-11-27T03:20:56.123Z info access protocol=grpc method=/qdrant.Points/Search ...
//         (logfmt: a value with a space, '"', '=' or nothing in it is quoted, '"' and '\' escaped)
//   json: {"time":"2026-11-27T03:20:56.123456Z","severity":"INFO","msg":"<logger>",
//          "logger":"<logger>","protocol":"grpc",...}
// One line, ending with '\n'. For the access log (access_log.h) and its tests.
std::string FormatFieldsLine(std::string_view format, std::chrono::system_clock::time_point time,
                             std::string_view logger, absl::Span<const LogField> fields);

// Writes FormatFieldsLine(the current log.format, now, ...) to stderr with one write, whatever
// log.level is (the caller decides whether to write it). Lines of other threads, and spdlog's,
// never interleave with it (stdio locks the stream for each write).
void WriteFieldsLine(std::string_view logger, absl::Span<const LogField> fields);

}  // namespace qpool

#endif  // QPOOL_DAEMON_COMMON_LOGGING_H_
