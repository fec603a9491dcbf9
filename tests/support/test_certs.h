// The certificates of the TLS tests, made once per test program at run time by
// tests/e2e/tls/make_certs.sh (the `openssl` command; that script lists the files: ca.pem,
// server.pem/.key, client.pem/.key, expired.pem, ...) into a temporary directory removed at exit.
// Without the openssl command there are none, and a test that needs them GTEST_SKIP()s.
//
//   const auto* const kCerts = RegisterTestCerts("qpool_tls_unit");  // at namespace scope, once
//   ...
//   if (TestCertsDir().empty()) GTEST_SKIP() << "the openssl command is not available";
//   options.ca_file = TestCert("ca.pem");
//
// The binary needs QPOOL_SOURCE_DIR defined (the source tree, where make_certs.sh is).
// Thread-safety: RegisterTestCerts runs before main(); the getters are read-only after that.
#ifndef QPOOL_TESTS_SUPPORT_TEST_CERTS_H_
#define QPOOL_TESTS_SUPPORT_TEST_CERTS_H_

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"

#ifndef QPOOL_SOURCE_DIR
#error "tests/support/test_certs.h needs QPOOL_SOURCE_DIR (target_compile_definitions)"
#endif

namespace qpool::testing {

// The directory make_certs.sh filled; "" before the environment set up or without openssl.
inline std::string& TestCertsDirSlot() {
  static std::string dir;
  return dir;
}
inline const std::string& TestCertsDir() { return TestCertsDirSlot(); }

// The path of certificate file `name` ("server.pem") in TestCertsDir().
inline std::string TestCert(const std::string& name) { return TestCertsDir() + "/" + name; }

// Makes the certificates before the first test and removes them after the last.
class TestCertsEnvironment : public ::testing::Environment {
 public:
  explicit TestCertsEnvironment(std::string tag) : tag_(std::move(tag)) {}
  void SetUp() override {
    if (std::system("command -v openssl >/dev/null 2>&1") != 0) return;
    std::string dir = ::testing::TempDir() + "/" + tag_ + "_XXXXXX";
    if (mkdtemp(dir.data()) == nullptr) return;
    const std::string command =
        std::string(QPOOL_SOURCE_DIR "/tests/e2e/tls/make_certs.sh ") + dir + " >&2";
    if (std::system(command.c_str()) == 0) TestCertsDirSlot() = dir;
  }
  void TearDown() override {
    if (!TestCertsDir().empty()) std::filesystem::remove_all(TestCertsDir());
  }

 private:
  std::string tag_;
};

// Registers the environment; `tag` names the temporary directory. Call once per test program.
inline ::testing::Environment* RegisterTestCerts(const std::string& tag) {
  return ::testing::AddGlobalTestEnvironment(new TestCertsEnvironment(tag));
}

}  // namespace qpool::testing

#endif  // QPOOL_TESTS_SUPPORT_TEST_CERTS_H_
