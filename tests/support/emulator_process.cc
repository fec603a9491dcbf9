#include "tests/support/emulator_process.h"

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/unit/http_get.h"

namespace qpool::testing {

absl::StatusOr<std::unique_ptr<EmulatorProcess>> EmulatorProcess::Start(
    const std::string& binary, const std::vector<std::string>& flags, const std::string& log_path) {
  std::vector<std::string> argv = {binary, "--control-listen", "127.0.0.1:0"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  absl::StatusOr<std::unique_ptr<Subprocess>> process = Subprocess::Spawn(argv, log_path);
  if (!process.ok()) return process.status();
  absl::StatusOr<std::string> line = (*process)->ReadStdoutLine(absl::Seconds(15));
  if (!line.ok()) {
    return absl::Status(line.status().code(),
                        absl::StrCat("qdrant-emulator did not start: ", line.status().message(),
                                     "\n", ReadFileOrEmpty(log_path)));
  }
  auto emulator = std::unique_ptr<EmulatorProcess>(new EmulatorProcess(std::move(*process), *line));
  if (emulator->control_port() == 0) {
    return absl::InternalError(absl::StrCat("no control port in: ", *line));
  }
  return emulator;
}

uint16_t EmulatorProcess::Port(absl::string_view label) const {
  for (absl::string_view word : absl::StrSplit(line_, ' ')) {
    std::pair<absl::string_view, absl::string_view> entry = absl::StrSplit(word, '=');
    if (entry.first != label) continue;
    const size_t colon = entry.second.rfind(':');
    uint32_t port = 0;
    if (colon != absl::string_view::npos &&
        absl::SimpleAtoi(entry.second.substr(colon + 1), &port) && port <= 65535) {
      return static_cast<uint16_t>(port);
    }
  }
  return 0;
}

namespace {

absl::Status Expect200(const HttpReply& reply, absl::string_view what) {
  if (reply.status == 200) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat(what, ": HTTP ", reply.status, " ", reply.body));
}

}  // namespace

absl::Status EmulatorProcess::SetFaults(const std::string& json) const {
  return Expect200(HttpRequest(control_port(), "PUT", "/faults", json), "PUT /faults");
}

absl::Status EmulatorProcess::ResetCounters() const {
  return Expect200(HttpRequest(control_port(), "POST", "/counters/reset"), "POST /counters/reset");
}

absl::StatusOr<std::string> EmulatorProcess::CountersJson() const {
  HttpReply reply = HttpGet(control_port(), "/counters");
  if (absl::Status status = Expect200(reply, "GET /counters"); !status.ok()) return status;
  return std::move(reply.body);
}

}  // namespace qpool::testing
