#include "transport/file_sink.h"

#include <signal.h>

#include <filesystem>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

#include <sys/resource.h>

namespace fedge::transport {
namespace {

using ::testing::HasSubstr;

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(FileSinkTest, ReadsBackWhatWasWrittenAndLeavesNoFileBehind) {
  const std::string dir = FreshDir("file_sink_roundtrip");
  std::string payload(3 << 20, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = char(i * 7 % 251);
  absl::StatusOr<std::unique_ptr<FileSink>> sink = FileSink::Create(dir);
  ASSERT_TRUE(sink.ok()) << sink.status();

  for (size_t offset = 0; offset < payload.size(); offset += 1 << 20) {
    ASSERT_TRUE((*sink)
                    ->Write(static_cast<int64_t>(offset),
                            absl::string_view(payload).substr(offset, 1 << 20))
                    .ok());
  }
  absl::StatusOr<std::shared_ptr<const PayloadBytes>> first = (*sink)->Read();
  absl::StatusOr<std::shared_ptr<const PayloadBytes>> second = (*sink)->Read();

  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*first)->view(), payload);
  EXPECT_EQ((*second)->view(), payload);
  // The file has no name: nothing to clean up after a crash.
  EXPECT_TRUE(std::filesystem::is_empty(dir));
  // The bytes outlive the sink while a reader holds them.
  sink->reset();
  EXPECT_EQ((*first)->view(), payload);
}

TEST(FileSinkTest, AnEmptyPayloadReadsAsEmpty) {
  absl::StatusOr<std::unique_ptr<FileSink>> sink =
      FileSink::Create(FreshDir("file_sink_empty"));
  ASSERT_TRUE(sink.ok()) << sink.status();
  absl::StatusOr<std::shared_ptr<const PayloadBytes>> bytes = (*sink)->Read();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_TRUE((*bytes)->view().empty());
}

TEST(FileSinkTest, BytesOutOfOrderAreRefused) {
  absl::StatusOr<std::unique_ptr<FileSink>> sink =
      FileSink::Create(FreshDir("file_sink_order"));
  ASSERT_TRUE(sink.ok()) << sink.status();
  ASSERT_TRUE((*sink)->Write(0, "abc").ok());
  EXPECT_EQ((*sink)->Write(5, "def").code(), absl::StatusCode::kInternal);
}

TEST(FileSinkTest, AMissingDirectoryIsUnavailableAndNamed) {
  absl::StatusOr<std::unique_ptr<FileSink>> sink =
      FileSink::Create("/nonexistent/fedge-staging");
  ASSERT_FALSE(sink.ok());
  EXPECT_EQ(sink.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(sink.status().message(), HasSubstr("/nonexistent/fedge-staging"));
}

// A full disk, as the process's file-size limit: the write fails with
// Unavailable instead of killing the process or losing earlier bytes.
TEST(FileSinkTest, AFailedWriteIsUnavailableAndKeepsWhatWasWritten) {
  absl::StatusOr<std::unique_ptr<FileSink>> sink =
      FileSink::Create(FreshDir("file_sink_full"));
  ASSERT_TRUE(sink.ok()) << sink.status();
  struct rlimit old_limit;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  const auto old_handler = signal(SIGXFSZ, SIG_IGN);
  struct rlimit limit = old_limit;
  limit.rlim_cur = 4096;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &limit), 0);

  const absl::Status first = (*sink)->Write(0, std::string(4096, 'a'));
  const absl::Status second = (*sink)->Write(4096, std::string(10, 'b'));

  setrlimit(RLIMIT_FSIZE, &old_limit);
  signal(SIGXFSZ, old_handler);
  EXPECT_TRUE(first.ok()) << first;
  EXPECT_EQ(second.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.message(), HasSubstr("cannot write 10 bytes"));
  absl::StatusOr<std::shared_ptr<const PayloadBytes>> bytes = (*sink)->Read();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ((*bytes)->view(), std::string(4096, 'a'));
}

}  // namespace
}  // namespace fedge::transport
