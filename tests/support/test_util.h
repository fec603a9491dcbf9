// Small helpers for tests that run real sockets and processes: waiting on a condition with a
// deadline, finding a free loopback port, probing a port, and a child process handle.
//
//   uint16_t port = qpool::testing::PickFreePort();
//   auto proc = qpool::testing::Subprocess::Spawn({binary, "--listen", addr}, log_path);
//   ASSERT_TRUE(qpool::testing::WaitFor([&] { return CanConnect(port); }, absl::Seconds(10)));
//   (*proc)->Signal(SIGTERM);
//   std::optional<int> status = (*proc)->WaitForExit(absl::Seconds(15));
//
// Thread-safety: the free functions are thread-safe; a Subprocess is used from one thread.
#ifndef QPOOL_TESTS_SUPPORT_TEST_UTIL_H_
#define QPOOL_TESTS_SUPPORT_TEST_UTIL_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace qpool::testing {

// Polls `condition` every `poll` until it returns true or `timeout` has passed. Returns its last
// value, so `ASSERT_TRUE(WaitFor(...))` fails the test at the deadline.
bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout,
             absl::Duration poll = absl::Milliseconds(5));

// A TCP port on 127.0.0.1 that nobody listened on a moment ago (bound to port 0, then released).
uint16_t PickFreePort();

// True when a TCP connection to 127.0.0.1:`port` is accepted.
bool CanConnect(uint16_t port);

// A child process started with posix_spawn. Its stdout is a pipe read by ReadStdoutLine(); its
// stderr goes to `stderr_path` (or is inherited when empty). The destructor SIGKILLs and reaps a
// child that is still running, so a failing test never leaves one behind.
class Subprocess {
 public:
  static absl::StatusOr<std::unique_ptr<Subprocess>> Spawn(const std::vector<std::string>& argv,
                                                           const std::string& stderr_path = "");
  ~Subprocess();

  pid_t pid() const { return pid_; }

  // Sends `signal` to the child; kFailedPrecondition after it exited.
  absl::Status Signal(int signal);

  // The child's wait status (use WIFEXITED/WEXITSTATUS) once it exits, or nullopt when it is still
  // running after `timeout`.
  std::optional<int> WaitForExit(absl::Duration timeout);

  // The next line of the child's stdout, without the newline; kDeadlineExceeded after `timeout`,
  // kOutOfRange at end of output.
  absl::StatusOr<std::string> ReadStdoutLine(absl::Duration timeout);

  // SIGKILL and reap; a no-op once the child has exited.
  void Kill();

 private:
  Subprocess(pid_t pid, int stdout_fd) : pid_(pid), stdout_fd_(stdout_fd) {}

  pid_t pid_;
  int stdout_fd_;
  std::optional<int> exit_status_;
  std::string stdout_buffer_;
};

// The whole content of a file, or "" when it cannot be read (for printing logs on failure).
std::string ReadFileOrEmpty(const std::string& path);

}  // namespace qpool::testing

#endif  // QPOOL_TESTS_SUPPORT_TEST_UTIL_H_
