#include "daemon/common/logging.h"

#include <stdio.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "spdlog/formatter.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace qpool {
namespace {

constexpr const char* kLoggerName = "qpoold";

// The names the config uses (log.level), not spdlog's ("warning").
std::string_view LevelName(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
      return "trace";
    case spdlog::level::debug:
      return "debug";
    case spdlog::level::info:
      return "info";
    case spdlog::level::warn:
      return "warn";
    case spdlog::level::err:
      return "error";
    case spdlog::level::critical:
      return "critical";
    default:
      return "off";
  }
}

// Cloud Logging's severity names (LogSeverity): trace and debug are DEBUG, warn is WARNING.
std::string_view SeverityName(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
    case spdlog::level::debug:
      return "DEBUG";
    case spdlog::level::info:
      return "INFO";
    case spdlog::level::warn:
      return "WARNING";
    case spdlog::level::err:
      return "ERROR";
    case spdlog::level::critical:
      return "CRITICAL";
    default:
      return "DEFAULT";
  }
}

// RFC 3339 in UTC with `digits` (3 or 6) of the second's fraction: "2026-11-27T03:20:56.123Z".
void AppendTimestamp(spdlog::log_clock::time_point time, spdlog::memory_buf_t& dest,
                     int digits = 3) {
  const auto since_epoch = time.time_since_epoch();
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(since_epoch - seconds).count();
  const time_t t = static_cast<time_t>(seconds.count());
  struct tm utc;
  gmtime_r(&t, &utc);
  fmt::format_to(std::back_inserter(dest), "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}.",
                 utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min,
                 utc.tm_sec);
  if (digits == 6) {
    fmt::format_to(std::back_inserter(dest), "{:06d}Z", static_cast<int>(micros));
  } else {
    fmt::format_to(std::back_inserter(dest), "{:03d}Z", static_cast<int>(micros / 1000));
  }
}

void Append(std::string_view text, spdlog::memory_buf_t& dest) {
  dest.append(text.data(), text.data() + text.size());
}

// Length of the valid UTF-8 sequence at the start of `text`, or 0 when it is not valid.
size_t Utf8SequenceLength(std::string_view text) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  const auto continuation = [&](size_t i) { return i < text.size() && (byte(i) & 0xC0) == 0x80; };
  const unsigned char lead = byte(0);
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return continuation(1) ? 2 : 0;
  if (lead >= 0xE0 && lead <= 0xEF) {
    if (!continuation(1) || !continuation(2)) return 0;
    if (lead == 0xE0 && byte(1) < 0xA0) return 0;   // overlong
    if (lead == 0xED && byte(1) >= 0xA0) return 0;  // UTF-16 surrogate
    return 3;
  }
  if (lead >= 0xF0 && lead <= 0xF4) {
    if (!continuation(1) || !continuation(2) || !continuation(3)) return 0;
    if (lead == 0xF0 && byte(1) < 0x90) return 0;   // overlong
    if (lead == 0xF4 && byte(1) >= 0x90) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}

// Appends `text` as the inside of a JSON string (RFC 8259): quotes, backslashes and control
// characters escaped; bytes that are not valid UTF-8 become U+FFFD so every line stays valid JSON.
void AppendJsonEscaped(std::string_view text, spdlog::memory_buf_t& dest) {
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    switch (c) {
      case '"':
        Append("\\\"", dest);
        break;
      case '\\':
        Append("\\\\", dest);
        break;
      case '\b':
        Append("\\b", dest);
        break;
      case '\f':
        Append("\\f", dest);
        break;
      case '\n':
        Append("\\n", dest);
        break;
      case '\r':
        Append("\\r", dest);
        break;
      case '\t':
        Append("\\t", dest);
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          fmt::format_to(std::back_inserter(dest), "\\u{:04x}", c);
        } else if (c >= 0x80) {
          const size_t length = Utf8SequenceLength(text.substr(i));
          if (length == 0) {
            Append("\\ufffd", dest);
          } else {
            Append(text.substr(i, length), dest);
            i += length;
            continue;
          }
        } else {
          dest.push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
}

// `2026-11-27T03:20:56.123Z info qpoold listening on 127.0.0.1:6334`
class TextFormatter : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    AppendTimestamp(msg.time, dest);
    dest.push_back(' ');
    Append(LevelName(msg.level), dest);
    dest.push_back(' ');
    Append(std::string_view(msg.logger_name.data(), msg.logger_name.size()), dest);
    dest.push_back(' ');
    Append(std::string_view(msg.payload.data(), msg.payload.size()), dest);
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<TextFormatter>();
  }
};

// One JSON object per line, in the shape Cloud Logging (and most log pipelines) read from a
// container's stderr:
//   {"time":"2026-11-27T03:20:56.123456Z","severity":"INFO","msg":"listening on 127.0.0.1:6334",
//    "logger":"qpoold","thread":1234,
//    "logging.googleapis.com/sourceLocation":{"file":"daemon/server/proxy.cc","line":174,
//    "function":"Shutdown"}}
// `time` is RFC 3339 UTC with microseconds; `severity` is DEBUG, INFO, WARNING, ERROR or CRITICAL;
// `thread` is the OS thread id; the source location is there for lines logged with the SPDLOG_*
// macros (which know it).
class JsonFormatter : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    Append("{\"time\":\"", dest);
    AppendTimestamp(msg.time, dest, 6);
    Append("\",\"severity\":\"", dest);
    Append(SeverityName(msg.level), dest);
    Append("\",\"msg\":\"", dest);
    AppendJsonEscaped(std::string_view(msg.payload.data(), msg.payload.size()), dest);
    Append("\",\"logger\":\"", dest);
    AppendJsonEscaped(std::string_view(msg.logger_name.data(), msg.logger_name.size()), dest);
    fmt::format_to(std::back_inserter(dest), "\",\"thread\":{}", msg.thread_id);
    if (!msg.source.empty()) {
      Append(",\"logging.googleapis.com/sourceLocation\":{\"file\":\"", dest);
      // __FILE__ as the build saw it, absolute ("/src/daemon/server/proxy.cc") or relative to
      // the build directory ("../../daemon/..."): written from the repository root.
      std::string_view file = msg.source.filename;
      constexpr std::string_view kRoot = QPOOL_SOURCE_ROOT;
      if (file.substr(0, kRoot.size()) == kRoot) file.remove_prefix(kRoot.size());
      while (file.substr(0, 3) == "../" || file.substr(0, 2) == "./") {
        file.remove_prefix(file[0] == '.' && file[1] == '.' ? 3 : 2);
      }
      AppendJsonEscaped(file, dest);
      fmt::format_to(std::back_inserter(dest), "\",\"line\":{}", msg.source.line);
      if (msg.source.funcname != nullptr && msg.source.funcname[0] != '\0') {
        Append(",\"function\":\"", dest);
        AppendJsonEscaped(msg.source.funcname, dest);
        dest.push_back('"');
      }
      dest.push_back('}');
    }
    Append("}\n", dest);
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

// Appends `value` as a logfmt value: bare when it has no space, '"', '=' or control character
// and is not empty, else quoted with '"' and '\' escaped (control characters as JSON does).
void AppendLogfmtValue(std::string_view value, spdlog::memory_buf_t& dest) {
  bool bare = !value.empty();
  for (char c : value) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20 ||
        c == 0x7F) {
      bare = false;
      break;
    }
  }
  if (bare) {
    Append(value, dest);
    return;
  }
  dest.push_back('"');
  AppendJsonEscaped(value, dest);
  dest.push_back('"');
}

// Whether the installed format is json (WriteFieldsLine); follows SetupLogging and SetLogFormat.
std::atomic<bool> g_json_format{false};

// The sink SetupLogging installed, for SetLogFormat; set once, before other threads log.
std::shared_ptr<spdlog::sinks::stderr_sink_mt>& InstalledSink() {
  static auto* sink = new std::shared_ptr<spdlog::sinks::stderr_sink_mt>();
  return *sink;
}

absl::StatusOr<spdlog::level::level_enum> ParseLevel(std::string_view level) {
  if (level == "trace") return spdlog::level::trace;
  if (level == "debug") return spdlog::level::debug;
  if (level == "info") return spdlog::level::info;
  if (level == "warn") return spdlog::level::warn;
  if (level == "error") return spdlog::level::err;
  if (level == "off") return spdlog::level::off;
  return absl::InvalidArgumentError(
      absl::StrCat("log level must be one of trace, debug, info, warn, error, off, got \"",
                   absl::string_view(level.data(), level.size()), "\""));
}

absl::StatusOr<std::unique_ptr<spdlog::formatter>> MakeFormatter(std::string_view format) {
  if (format == "text") return std::unique_ptr<spdlog::formatter>(new TextFormatter());
  if (format == "json") return std::unique_ptr<spdlog::formatter>(new JsonFormatter());
  return absl::InvalidArgumentError(absl::StrCat("log format must be text or json, got \"",
                                                 absl::string_view(format.data(), format.size()),
                                                 "\""));
}

}  // namespace

absl::Status SetupLogging(std::string_view level, std::string_view format) {
  absl::StatusOr<spdlog::level::level_enum> spdlog_level = ParseLevel(level);
  if (!spdlog_level.ok()) return spdlog_level.status();
  absl::StatusOr<std::unique_ptr<spdlog::formatter>> formatter = MakeFormatter(format);
  if (!formatter.ok()) return formatter.status();
  // The stderr sink writes each line with one fwrite and flushes it, so lines from different
  // threads never interleave and nothing is lost on _Exit.
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  sink->set_formatter(*std::move(formatter));
  auto logger = std::make_shared<spdlog::logger>(kLoggerName, sink);
  logger->set_level(*spdlog_level);
  spdlog::set_default_logger(std::move(logger));
  InstalledSink() = std::move(sink);
  g_json_format.store(format == "json", std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status SetLogLevel(std::string_view level) {
  absl::StatusOr<spdlog::level::level_enum> spdlog_level = ParseLevel(level);
  if (!spdlog_level.ok()) return spdlog_level.status();
  if (InstalledSink() == nullptr) return absl::FailedPreconditionError("logging is not set up");
  spdlog::default_logger()->set_level(*spdlog_level);  // an atomic store in spdlog
  return absl::OkStatus();
}

absl::Status SetLogFormat(std::string_view format) {
  absl::StatusOr<std::unique_ptr<spdlog::formatter>> formatter = MakeFormatter(format);
  if (!formatter.ok()) return formatter.status();
  if (InstalledSink() == nullptr) return absl::FailedPreconditionError("logging is not set up");
  InstalledSink()->set_formatter(*std::move(formatter));  // under the sink's own mutex
  g_json_format.store(format == "json", std::memory_order_relaxed);
  return absl::OkStatus();
}

std::string FormatFieldsLine(std::string_view format, std::chrono::system_clock::time_point time,
                             std::string_view logger, absl::Span<const LogField> fields) {
  spdlog::memory_buf_t dest;
  const auto log_time = std::chrono::time_point_cast<spdlog::log_clock::duration>(time);
  if (format == "json") {
    Append("{\"time\":\"", dest);
    AppendTimestamp(log_time, dest, 6);
    Append("\",\"severity\":\"INFO\",\"msg\":\"", dest);
    AppendJsonEscaped(logger, dest);
    Append("\",\"logger\":\"", dest);
    AppendJsonEscaped(logger, dest);
    dest.push_back('"');
    for (const LogField& field : fields) {
      Append(",\"", dest);
      AppendJsonEscaped(field.name, dest);
      Append("\":", dest);
      if (field.number) {
        Append(field.value, dest);
      } else {
        dest.push_back('"');
        AppendJsonEscaped(field.value, dest);
        dest.push_back('"');
      }
    }
    Append("}\n", dest);
  } else {
    AppendTimestamp(log_time, dest);
    Append(" info ", dest);
    Append(logger, dest);
    for (const LogField& field : fields) {
      dest.push_back(' ');
      Append(field.name, dest);
      dest.push_back('=');
      AppendLogfmtValue(field.value, dest);
    }
    dest.push_back('\n');
  }
  return std::string(dest.data(), dest.size());
}

void WriteFieldsLine(std::string_view logger, absl::Span<const LogField> fields) {
  const std::string line =
      FormatFieldsLine(g_json_format.load(std::memory_order_relaxed) ? "json" : "text",
                       std::chrono::system_clock::now(), logger, fields);
  // One fwrite and a flush, as spdlog's stderr sink writes its lines: stdio holds the stream's
  // lock for the whole write, so lines never interleave.
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace qpool
