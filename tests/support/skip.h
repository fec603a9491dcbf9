// How a test says "not run" to ctest: the exit code every qpool test registers as its
// SKIP_RETURN_CODE (cmake/QpoolHelpers.cmake, tests/support/run_if_found.sh), and a helper for
// GoogleTest cases that need an external program.
//
//   TEST(PromtoolTest, AcceptsTheScrape) {
//     QPOOL_SKIP_UNLESS_EXECUTABLE(PROMTOOL_PATH);   // GTEST_SKIP()s when it is not there
//     ...
//   }
//
// A binary in which some test skipped and none failed exits kSkipExitCode (tests/support/
// gtest_main.cc), so a missing tool never shows as a pass.
#ifndef QPOOL_TESTS_SUPPORT_SKIP_H_
#define QPOOL_TESTS_SUPPORT_SKIP_H_

#include <unistd.h>

#include <string>

namespace qpool::testing {

// The automake convention for "skipped", also what tests/support/run_if_found.sh exits with.
inline constexpr int kSkipExitCode = 77;

// True when `path` names a file this process may execute; false for "" (not found at configure
// time) and for a file removed since.
inline bool IsExecutable(const std::string& path) {
  return !path.empty() && access(path.c_str(), X_OK) == 0;
}

}  // namespace qpool::testing

// GTEST_SKIP()s the current test, naming the program, unless `path` is executable.
#define QPOOL_SKIP_UNLESS_EXECUTABLE(path)                                    \
  if (::qpool::testing::IsExecutable(path)) {                                 \
  } else /* NOLINT: the else binds here, so the macro is safe inside an if */ \
    GTEST_SKIP() << "not run: " << #path << " (\"" << (path)                  \
                 << "\") is not an executable here; scripts/install-deps installs it"

#endif  // QPOOL_TESTS_SUPPORT_SKIP_H_
