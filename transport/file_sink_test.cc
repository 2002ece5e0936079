#include "transport/file_sink.h"

#include <signal.h>

#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <fstream>
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

// `size` bytes that differ from their neighbours (no run of equal pages).
std::string Patterned(size_t size) {
  std::string bytes(size, '\0');
  for (size_t i = 0; i < size; ++i) bytes[i] = char(i * 13 % 251);
  return bytes;
}

TEST(FileSinkTest, ReadsBackWhatWasWrittenAndLeavesNoFileBehind) {
  const std::string dir = FreshDir("file_sink_roundtrip");
  const std::string payload = Patterned(3 << 20);
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

// The resident size of the mapping that holds `address`, from smaps.
int64_t MappedResidentKb(const void* address) {
  std::ifstream smaps("/proc/self/smaps");
  const auto at = reinterpret_cast<uintptr_t>(address);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    uintptr_t from = 0, to = 0;
    // A mapping's first line: "from-to perms ..."; its fields follow.
    if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR, &from, &to) == 2) {
      inside = from <= at && at < to;
      continue;
    }
    long kb = 0;
    if (inside && std::sscanf(line.c_str(), "Rss: %ld kB", &kb) == 1) {
      return kb;
    }
  }
  return -1;
}

TEST(FileSinkTest, PagesTheReaderIsDoneWithAreGivenBackAndReadAgain) {
  const std::string dir = FreshDir("file_sink_done_with");
  const std::string payload = Patterned(4 << 20);
  absl::StatusOr<std::unique_ptr<FileSink>> sink = FileSink::Create(dir);
  ASSERT_TRUE(sink.ok()) << sink.status();
  ASSERT_TRUE((*sink)->Write(0, payload).ok());
  absl::StatusOr<std::shared_ptr<const PayloadBytes>> bytes = (*sink)->Read();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  const absl::string_view view = (*bytes)->view();
  ASSERT_EQ(view, payload);  // Touches every page.
  EXPECT_GE(MappedResidentKb(view.data()), 4000);

  // The first 3 MiB and a byte. The kernel may give back more than asked
  // (a large folio mapped whole goes whole), never less.
  (*bytes)->DoneWith(view.substr(0, (3 << 20) + 1));
  const int64_t kept = MappedResidentKb(view.data() + (3 << 20));
  EXPECT_GE(kept, 0);
  EXPECT_LE(kept, 1100);
  // Parts outside the bytes are ignored.
  (*bytes)->DoneWith(absl::string_view(payload).substr(0, 4 << 20));
  EXPECT_EQ(MappedResidentKb(view.data() + (3 << 20)), kept);
  // What was given back reads the same again.
  EXPECT_EQ(view, payload);
}

TEST(FileSinkTest, AStagedSourceServesItsBytesFromTheFile) {
  const std::string dir = FreshDir("file_sink_staged");
  // Not a multiple of StageOnDisk's 4 MiB pieces.
  const std::string payload = Patterned((9 << 20) + 123);
  absl::StatusOr<std::unique_ptr<PayloadSource>> staged =
      StageOnDisk(StringSource(payload), dir);
  ASSERT_TRUE(staged.ok()) << staged.status();
  ASSERT_EQ((*staged)->size(), static_cast<int64_t>(payload.size()));
  std::string back(payload.size(), '\0');
  ASSERT_TRUE((*staged)->Read(0, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, payload);
  std::string middle(1000, '\0');
  ASSERT_TRUE((*staged)->Read(5 << 20, absl::MakeSpan(middle)).ok());
  EXPECT_EQ(middle, payload.substr(5 << 20, 1000));
  EXPECT_EQ((*staged)
                ->Read(static_cast<int64_t>(payload.size()) - 10,
                       absl::MakeSpan(middle))
                .code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*staged)->Read(-1, absl::MakeSpan(middle)).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(std::filesystem::is_empty(dir));

  absl::StatusOr<std::unique_ptr<PayloadSource>> nowhere =
      StageOnDisk(StringSource(payload), "/nonexistent/fedge-staging");
  ASSERT_FALSE(nowhere.ok());
  EXPECT_EQ(nowhere.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(nowhere.status().message(),
              HasSubstr("/nonexistent/fedge-staging"));
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
