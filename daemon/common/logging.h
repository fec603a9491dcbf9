// Logging setup: spdlog, to stderr, as text or as one JSON object per line.
// Thread-safety: call SetupLogging once at start-up, before other threads log.
#ifndef QPOOL_DAEMON_COMMON_LOGGING_H_
#define QPOOL_DAEMON_COMMON_LOGGING_H_

#include <string_view>

#include "absl/status/status.h"

namespace qpool {

// `level`: trace|debug|info|warn|error|off; `format`: text|json. kInvalidArgument otherwise.
// JSON lines look like {"ts":"2026-11-27T03:20:56.123Z","level":"info","msg":"..."} with the
// message escaped per RFC 8259.
absl::Status SetupLogging(std::string_view level, std::string_view format);

}  // namespace qpool

#endif  // QPOOL_DAEMON_COMMON_LOGGING_H_
