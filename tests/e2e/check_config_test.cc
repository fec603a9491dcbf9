// The built qpoold binary, run as a user would: --check-config on the example file and on bad
// files written at run time, --version and --help. QPOOLD_PATH is the binary's path.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

extern char** environ;

namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

struct Outcome {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class CheckConfigTest : public testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = testing::TempDir() + "/qpoold_check_config_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr) << std::strerror(errno);
    dir_ = pattern;
  }

  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // Writes `text` to a file in the test's temp dir and returns its path.
  std::string WriteConfig(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  // Runs qpoold with `args`, its stdout and stderr going to files, and waits for it.
  Outcome Run(const std::vector<std::string>& args) {
    const std::string out_path = dir_ + "/stdout";
    const std::string err_path = dir_ + "/stderr";
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char*> argv{const_cast<char*>(QPOOLD_PATH)};
    for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    pid_t pid = 0;
    const int error = posix_spawn(&pid, QPOOLD_PATH, &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    Outcome outcome;
    if (error != 0) {
      ADD_FAILURE() << "cannot start " << QPOOLD_PATH << ": " << std::strerror(error);
      return outcome;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    outcome.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    outcome.out = ReadFile(out_path);
    outcome.err = ReadFile(err_path);
    return outcome;
  }

  std::string dir_;
};

const std::string kExample = QPOOL_SOURCE_DIR "/config/qpool.yaml";

TEST_F(CheckConfigTest, VersionPrintsTheVersion) {
  Outcome outcome = Run({"--version"});
  EXPECT_EQ(outcome.exit_code, 0);
  EXPECT_EQ(outcome.out, "qpoold " QPOOL_VERSION "\n");
}

TEST_F(CheckConfigTest, HelpPrintsUsage) {
  Outcome outcome = Run({"--help"});
  EXPECT_EQ(outcome.exit_code, 0);
  EXPECT_THAT(outcome.out, StartsWith("Usage: qpoold"));
  EXPECT_THAT(outcome.out, HasSubstr("--check-config"));
}

TEST_F(CheckConfigTest, ExampleFileIsOk) {
  Outcome outcome = Run({"--config", kExample, "--check-config"});
  EXPECT_EQ(outcome.exit_code, 0) << outcome.err;
  EXPECT_EQ(outcome.out, "qpoold: configuration OK: " + kExample + "\n");
}

TEST_F(CheckConfigTest, FlagsAloneAreOk) {
  Outcome outcome = Run({"--upstream=127.0.0.1:6335", "--check-config"});
  EXPECT_EQ(outcome.exit_code, 0) << outcome.err;
  EXPECT_EQ(outcome.out, "qpoold: configuration OK: flags\n");
}

TEST_F(CheckConfigTest, UnknownKeyFailsWithFileLineAndKey) {
  const std::string path =
      WriteConfig("unknown.yaml", "server:\n  workers: 1\n  listn: 127.0.0.1:6334\n");
  Outcome outcome = Run({"--config", path, "--check-config"});
  EXPECT_EQ(outcome.exit_code, 1);
  EXPECT_THAT(outcome.err,
              HasSubstr(path + ":3: server.listn: unknown key (did you mean server.listen?)"));
  EXPECT_THAT(outcome.err, HasSubstr("configuration test failed: " + path));
  EXPECT_EQ(outcome.out, "");
}

TEST_F(CheckConfigTest, OutOfRangeValueFailsWithFileLineAndKey) {
  const std::string path =
      WriteConfig("range.yaml", "upstream:\n  nodes: [\"127.0.0.1:6335\"]\n  max_connections: 0\n");
  Outcome outcome = Run({"--config", path, "--check-config"});
  EXPECT_EQ(outcome.exit_code, 1);
  EXPECT_THAT(outcome.err,
              HasSubstr(path + ":3: upstream.max_connections: must be between 1 and 1024, got 0"));
}

TEST_F(CheckConfigTest, BadDurationFailsWithFileLineAndKey) {
  const std::string path = WriteConfig(
      "duration.yaml", "upstream:\n  nodes: [\"127.0.0.1:6335\"]\n  acquire_timeout: soon\n");
  Outcome outcome = Run({"--config", path, "--check-config"});
  EXPECT_EQ(outcome.exit_code, 1);
  EXPECT_THAT(outcome.err, HasSubstr(path + ":3: upstream.acquire_timeout: expected a duration"));
}

TEST_F(CheckConfigTest, CrossKeyErrorFailsWithFileLineAndKey) {
  const std::string path = WriteConfig(
      "workers.yaml", "upstream:\n  nodes: [\"127.0.0.1:6335\"]\nserver:\n  workers: 8\n");
  Outcome outcome = Run({"--config", path, "--check-config"});
  EXPECT_EQ(outcome.exit_code, 1);
  EXPECT_THAT(outcome.err,
              HasSubstr(path + ":4: server.workers: must not exceed upstream.max_connections"));
}

TEST_F(CheckConfigTest, YamlSyntaxErrorFailsWithFileAndLine) {
  const std::string path = WriteConfig("syntax.yaml", "server:\n  listen: [oops\n");
  Outcome outcome = Run({"--config", path, "--check-config"});
  EXPECT_EQ(outcome.exit_code, 1);
  EXPECT_THAT(outcome.err, HasSubstr(path + ":"));
  EXPECT_THAT(outcome.err, HasSubstr("invalid YAML"));
}

TEST_F(CheckConfigTest, MissingFileFails) {
  const std::string path = dir_ + "/absent.yaml";
  Outcome outcome = Run({"--config", path, "--check-config"});
  EXPECT_EQ(outcome.exit_code, 1);
  EXPECT_THAT(outcome.err, HasSubstr("cannot read " + path));
}

TEST_F(CheckConfigTest, NoUpstreamFailsSayingHowToSetOne) {
  Outcome outcome = Run({"--check-config"});
  EXPECT_EQ(outcome.exit_code, 1);
  EXPECT_THAT(outcome.err, HasSubstr("--upstream"));
  EXPECT_THAT(outcome.err, HasSubstr("upstream.nodes"));
}

TEST_F(CheckConfigTest, BadFlagValueNamesTheFlag) {
  Outcome outcome = Run({"--config", kExample, "--max-connections", "0", "--check-config"});
  EXPECT_EQ(outcome.exit_code, 1);
  EXPECT_THAT(outcome.err, HasSubstr("--max-connections: upstream.max_connections: must be"));
}

TEST_F(CheckConfigTest, UnknownFlagIsAUsageError) {
  Outcome outcome = Run({"--chek-config"});
  EXPECT_EQ(outcome.exit_code, 2);
  EXPECT_THAT(outcome.err, HasSubstr("unknown flag --chek-config (did you mean --check-config?)"));
}

TEST_F(CheckConfigTest, BadConfigWithoutCheckConfigExitsOne) {
  const std::string path = WriteConfig("bad.yaml", "log:\n  level: loud\n");
  Outcome outcome = Run({"--config", path, "--upstream", "127.0.0.1:6335"});
  EXPECT_EQ(outcome.exit_code, 1);
  EXPECT_THAT(outcome.err, HasSubstr(path + ":2: log.level: must be one of"));
}

}  // namespace
