#include "model/file_io.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

#include <sys/stat.h>

namespace fedge::model {
namespace {

TEST(FileIoTest, AtomicWriteReplacesContentsAndReadsBack) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/file_io.txt");
  ASSERT_TRUE(WriteFileAtomically(path, "first").ok());
  ASSERT_TRUE(WriteFileAtomically(path, std::string("second\0x", 8)).ok());

  absl::StatusOr<std::string> read = ReadFile(path);

  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, std::string("second\0x", 8));
}

TEST(FileIoTest, PiecesAreWrittenBackToBack) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/pieces.bin");
  const std::string big(100001, 'x');  // Its middle is the kill point's half.
  const std::vector<absl::string_view> pieces = {"", "head", "", big, "tail"};
  ASSERT_TRUE(WriteFileAtomically(path, pieces).ok());

  absl::StatusOr<std::string> read = ReadFile(path);

  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, absl::StrCat("head", big, "tail"));
  ASSERT_TRUE(WriteFileAtomically(path, std::vector<absl::string_view>{}).ok());
  EXPECT_EQ(*ReadFile(path), "");
}

TEST(FileIoTest, MissingFileIsNotFoundWithThePath) {
  absl::StatusOr<std::string> read = ReadFile("/nonexistent/fedge/file");
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(read.status().message().find("/nonexistent/fedge/file"),
            std::string::npos);
}

TEST(FileIoTest, WriteIntoMissingDirectoryFailsCleanly) {
  absl::Status s = WriteFileAtomically("/nonexistent/fedge/out", "x");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
}

TEST(FileIoTest, MakeDirectoriesCreatesParents) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/a/b/c");
  ASSERT_TRUE(MakeDirectories(dir).ok());
  struct stat info;
  EXPECT_EQ(::stat(dir.c_str(), &info), 0);
  EXPECT_TRUE(MakeDirectories(dir).ok());  // Idempotent.
}

}  // namespace
}  // namespace fedge::model
