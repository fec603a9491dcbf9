// daemon/common's small pieces: Annotate, gRPC code names, file fingerprints and ReadSmallFile.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "daemon/common/file_fingerprint.h"
#include "daemon/common/grpc_code.h"
#include "daemon/common/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qpool {
namespace {

using ::testing::HasSubstr;

TEST(AnnotateTest, PrefixesTheMessageAndKeepsTheCode) {
  const absl::Status annotated =
      Annotate(absl::NotFoundError("no such file"), "upstream.api_key_file");
  EXPECT_EQ(annotated.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(annotated.message(), "upstream.api_key_file: no such file");
}

TEST(AnnotateTest, OkStaysOkWithoutContext) {
  const absl::Status annotated = Annotate(absl::OkStatus(), "context");
  EXPECT_TRUE(annotated.ok());
  EXPECT_EQ(annotated.message(), "");
}

absl::Status FailsWhen(bool fail) { return fail ? absl::InternalError("broke") : absl::OkStatus(); }
absl::StatusOr<int> ValueUnless(bool fail) {
  if (fail) return absl::InvalidArgumentError("no value");
  return 7;
}
absl::StatusOr<int> Twice(bool fail_first, bool fail_second) {
  QPOOL_RETURN_IF_ERROR(FailsWhen(fail_first));
  QPOOL_ASSIGN_OR_RETURN(const int value, ValueUnless(fail_second));
  return 2 * value;
}

TEST(StatusMacrosTest, ReturnTheFirstErrorOrGoOn) {
  EXPECT_EQ(Twice(true, false).status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(Twice(false, true).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(Twice(false, false).ok());
  EXPECT_EQ(*Twice(false, false), 14);
}

TEST(GrpcCodeNameTest, NamesEveryCodeAsTheSpecSpellsIt) {
  EXPECT_STREQ(GrpcCodeName(kGrpcOk), "OK");
  EXPECT_STREQ(GrpcCodeName(kGrpcCancelled), "CANCELLED");
  EXPECT_STREQ(GrpcCodeName(kGrpcDeadlineExceeded), "DEADLINE_EXCEEDED");
  EXPECT_STREQ(GrpcCodeName(kGrpcResourceExhausted), "RESOURCE_EXHAUSTED");
  EXPECT_STREQ(GrpcCodeName(kGrpcUnavailable), "UNAVAILABLE");
  EXPECT_STREQ(GrpcCodeName(kGrpcUnauthenticated), "UNAUTHENTICATED");
  // The numbering is absl::StatusCode's.
  for (int code = kGrpcOk; code <= kGrpcUnauthenticated; ++code) {
    ASSERT_NE(GrpcCodeName(code), nullptr) << code;
    EXPECT_EQ(GrpcCodeName(code), absl::StatusCodeToString(static_cast<absl::StatusCode>(code)))
        << code;
  }
}

TEST(GrpcCodeNameTest, NumbersOutsideTheSpecHaveNoName) {
  EXPECT_EQ(GrpcCodeName(-1), nullptr);
  EXPECT_EQ(GrpcCodeName(17), nullptr);
  EXPECT_EQ(GrpcCodeName(1000), nullptr);
}

// Each test gets a fresh directory under the test's temporary directory.
class FileTest : public ::testing::Test {
 protected:
  FileTest() {
    const std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    dir_ = ::testing::TempDir() + "/qpool_common_" + name;
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  ~FileTest() override { std::filesystem::remove_all(dir_); }

  // A file with `text`, truncated first when it exists; its path.
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::trunc) << text;
    return path;
  }

  std::string dir_;
};

TEST_F(FileTest, MissingFileHasTheEmptyFingerprint) {
  const FileFingerprint print = FileFingerprint::Of(dir_ + "/absent");
  EXPECT_EQ(print, FileFingerprint{});
  EXPECT_TRUE(print.resolved_path.empty());
  EXPECT_EQ(print.size, -1);
}

TEST_F(FileTest, FingerprintChangesWhenTheFileIsReplaced) {
  const std::string path = Write("key", "one");
  const FileFingerprint before = FileFingerprint::Of(path);
  EXPECT_FALSE(before.resolved_path.empty());
  EXPECT_EQ(before.size, 3);
  EXPECT_EQ(FileFingerprint::Of(path), before);  // nothing changed
  EXPECT_NE(before, FileFingerprint{});
  Write("key", "other");  // a new inode and size
  const FileFingerprint after = FileFingerprint::Of(path);
  EXPECT_NE(after, before);
  EXPECT_EQ(after.size, 5);
}

TEST_F(FileTest, FingerprintFollowsASwappedSymlink) {
  // A Kubernetes Secret mount: the file's path stays, the `..data` link moves to a new directory.
  ASSERT_EQ(::mkdir((dir_ + "/v1").c_str(), 0700), 0);
  ASSERT_EQ(::mkdir((dir_ + "/v2").c_str(), 0700), 0);
  Write("v1/key", "same");
  Write("v2/key", "same");
  ASSERT_EQ(::symlink("v1", (dir_ + "/..data").c_str()), 0);
  const std::string path = dir_ + "/..data/key";
  const FileFingerprint before = FileFingerprint::Of(path);
  EXPECT_THAT(before.resolved_path, HasSubstr("/v1/key"));
  ASSERT_EQ(::symlink("v2", (dir_ + "/..data.new").c_str()), 0);
  ASSERT_EQ(std::rename((dir_ + "/..data.new").c_str(), (dir_ + "/..data").c_str()), 0);
  const FileFingerprint after = FileFingerprint::Of(path);
  EXPECT_THAT(after.resolved_path, HasSubstr("/v2/key"));
  EXPECT_NE(after, before);
}

TEST_F(FileTest, ReadSmallFileReadsTheWholeFile) {
  const std::string text(10000, 'k');  // more than one read's buffer
  const absl::StatusOr<std::string> read = ReadSmallFile(Write("big", text));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, text);
  const absl::StatusOr<std::string> empty = ReadSmallFile(Write("empty", ""));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(*empty, "");
}

TEST_F(FileTest, ReadSmallFileRefusesAFileOverTheLimit) {
  const std::string path = Write("key", "0123456789");
  EXPECT_TRUE(ReadSmallFile(path, 10).ok());
  const absl::StatusOr<std::string> read = ReadSmallFile(path, 9);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(read.status().message(), HasSubstr(path));
  EXPECT_THAT(read.status().message(), HasSubstr("larger than 9 bytes"));
}

TEST_F(FileTest, ReadSmallFileNamesThePathAndTheReason) {
  const absl::StatusOr<std::string> missing = ReadSmallFile(dir_ + "/absent");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr(dir_ + "/absent"));
  EXPECT_THAT(missing.status().message(), HasSubstr("No such file"));
  // A directory opens but cannot be read (EISDIR).
  const absl::StatusOr<std::string> directory = ReadSmallFile(dir_);
  EXPECT_EQ(directory.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(directory.status().message(), HasSubstr("cannot read " + dir_));
  // Neither a file nor a directory: a path through a regular file (ENOTDIR).
  const absl::StatusOr<std::string> not_dir = ReadSmallFile(Write("file", "x") + "/below");
  EXPECT_EQ(not_dir.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace qpool
