// One qdrant-emulator process for the e2e tests: started with the flags a test gives (plus
// --control-listen 127.0.0.1:0), ready once it printed its "qdrant-emulator listening grpc=...
// control=... [rest=...] [tls=...] [rest_tls=...]" line; its ports read from that line; its
// control endpoint (faults, counters) at hand.
//
//   auto emulator = EmulatorProcess::Start(QDRANT_EMULATOR_PATH,
//                                          {"--listen", "127.0.0.1:0", "--rest-listen",
//                                           "127.0.0.1:0"}, dir + "/emulator.log");
//   ASSERT_TRUE(emulator.ok()) << emulator.status();
//   uint16_t rest = (*emulator)->Port("rest");
//   ASSERT_TRUE((*emulator)->SetFaults(R"({"methods":{"Search":{"error_rate":1}}})").ok());
//
// The destructor SIGKILLs the process (Subprocess). Thread-safety: used from one thread.
#ifndef QPOOL_TESTS_SUPPORT_EMULATOR_PROCESS_H_
#define QPOOL_TESTS_SUPPORT_EMULATOR_PROCESS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "tests/support/test_util.h"

namespace qpool::testing {

class EmulatorProcess {
 public:
  // Runs `binary` with `flags` and --control-listen 127.0.0.1:0, its stderr to `log_path`, and
  // waits up to 15 s for its listening line; the error then carries the log.
  static absl::StatusOr<std::unique_ptr<EmulatorProcess>> Start(
      const std::string& binary, const std::vector<std::string>& flags,
      const std::string& log_path);

  // The port of `label` ("grpc", "control", "rest", "tls", "rest_tls") in the listening line; 0
  // when the emulator does not serve it.
  uint16_t Port(absl::string_view label) const;
  uint16_t control_port() const { return Port("control"); }
  const std::string& listening_line() const { return line_; }
  Subprocess& process() { return *process_; }
  void Kill() { process_->Kill(); }

  // PUT /faults with `json` (emulator/faults.h), POST /counters/reset, GET /counters, on the
  // control port; an error names the HTTP status and body.
  absl::Status SetFaults(const std::string& json) const;
  absl::Status ResetCounters() const;
  absl::StatusOr<std::string> CountersJson() const;

 private:
  EmulatorProcess(std::unique_ptr<Subprocess> process, std::string line)
      : process_(std::move(process)), line_(std::move(line)) {}

  std::unique_ptr<Subprocess> process_;
  std::string line_;
};

}  // namespace qpool::testing

#endif  // QPOOL_TESTS_SUPPORT_EMULATOR_PROCESS_H_
