// The main() of every qpool_test binary: GoogleTest's, except that a run in which nothing failed
// but some test called GTEST_SKIP() (its tool, e.g. promtool or prometheus, is missing) exits with
// kSkipExitCode, which ctest reports as "Not Run" (SKIP_RETURN_CODE in qpool_test) instead of
// "Passed". A run with a failure still exits 1; a run where everything ran and passed exits 0.
#include <cstdio>

#include "gtest/gtest.h"
#include "tests/support/skip.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  if (rc != 0) return rc;
  const ::testing::UnitTest& unit = *::testing::UnitTest::GetInstance();
  if (unit.skipped_test_count() > 0) {
    std::fprintf(stderr,
                 "%d test(s) skipped (see [  SKIPPED ] above): exiting %d so that ctest reports "
                 "this binary as Not Run rather than Passed\n",
                 unit.skipped_test_count(), qpool::testing::kSkipExitCode);
    return qpool::testing::kSkipExitCode;
  }
  return 0;
}
