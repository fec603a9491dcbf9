// Logging setup: spdlog, to stderr, as text or as one JSON object per line.
// Thread-safety: call SetupLogging once at start-up, before other threads log. SetLogLevel and
// SetLogFormat may be called later from any thread while others log (config reload).
#ifndef QPOOL_DAEMON_COMMON_LOGGING_H_
#define QPOOL_DAEMON_COMMON_LOGGING_H_

#include <string_view>

#include "absl/status/status.h"

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

}  // namespace qpool

#endif  // QPOOL_DAEMON_COMMON_LOGGING_H_
