#include "tests/support/qpoold_process.h"

#include "absl/strings/str_cat.h"
#include "tests/unit/http_get.h"

namespace qpool::testing {

absl::StatusOr<std::unique_ptr<Subprocess>> StartQpooldReady(const std::vector<std::string>& argv,
                                                             const std::string& log_path,
                                                             uint16_t admin_port,
                                                             absl::Duration timeout) {
  absl::StatusOr<std::unique_ptr<Subprocess>> qpoold = Subprocess::Spawn(argv, log_path);
  if (!qpoold.ok()) return qpoold.status();
  Subprocess& process = **qpoold;
  auto exited = [&] { return process.WaitForExit(absl::ZeroDuration()).has_value(); };
  const bool ready =
      WaitFor([&] { return exited() || HttpGet(admin_port, "/readyz").status == 200; }, timeout);
  if (exited()) {
    return absl::InternalError(
        absl::StrCat("qpoold exited at start-up:\n", ReadFileOrEmpty(log_path)));
  }
  if (!ready) {
    return absl::DeadlineExceededError(absl::StrCat("qpoold not ready after ",
                                                    absl::FormatDuration(timeout), ":\n",
                                                    ReadFileOrEmpty(log_path)));
  }
  return qpoold;
}

}  // namespace qpool::testing
