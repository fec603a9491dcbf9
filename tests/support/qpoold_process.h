// Starting the built qpoold for the e2e tests: the child process, ready once its admin endpoint
// answers /readyz 200.
//
//   auto qpoold = StartQpooldReady({QPOOLD_PATH, "--config", path}, dir + "/qpoold.log", admin);
//   ASSERT_TRUE(qpoold.ok()) << qpoold.status();
//
// Thread-safety: a free function; the Subprocess it returns is used from one thread.
#ifndef QPOOL_TESTS_SUPPORT_QPOOLD_PROCESS_H_
#define QPOOL_TESTS_SUPPORT_QPOOLD_PROCESS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/support/test_util.h"

namespace qpool::testing {

// Runs `argv` (stderr to `log_path`) and waits up to `timeout` for /readyz 200 on 127.0.0.1:
// `admin_port`. An error, carrying the log, when it exits first or is not ready in time.
absl::StatusOr<std::unique_ptr<Subprocess>> StartQpooldReady(
    const std::vector<std::string>& argv, const std::string& log_path, uint16_t admin_port,
    absl::Duration timeout = absl::Seconds(15));

}  // namespace qpool::testing

#endif  // QPOOL_TESTS_SUPPORT_QPOOLD_PROCESS_H_
