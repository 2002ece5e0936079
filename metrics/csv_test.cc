#include "metrics/csv.h"

#include <fstream>
#include <sstream>

#include "gtest/gtest.h"

namespace fedge::metrics {
namespace {

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/" + name + std::to_string(::getpid());
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(CsvTest, WritesHeaderOnceAndQuotes) {
  const std::string path = TempPath("rows.csv");
  std::remove(path.c_str());
  {
    auto w = CsvWriter::Open(path, {"round", "client"});
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_TRUE((*w)->Write({"1", "pi,\"4\""}).ok());
    EXPECT_FALSE((*w)->Write({"1"}).ok());
  }
  {
    auto w = CsvWriter::Open(path, {"round", "client"});  // Resume.
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Write({"2", "b"}).ok());
  }
  EXPECT_EQ(Slurp(path), "round,client\n1,\"pi,\"\"4\"\"\"\n2,b\n");
  EXPECT_EQ(ParseCsvLine("1,\"pi,\"\"4\"\"\""),
            (std::vector<std::string>{"1", "pi,\"4\""}));
  auto other = CsvWriter::Open(path, {"round", "device"});
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(CsvWriter::Open("/nonexistent/dir/x.csv", {"a"}).ok());
}

TEST(CsvTest, OpenTruncatedDropsRowsFromTheLimitOn) {
  const std::string path = TempPath("trunc.csv");
  std::remove(path.c_str());
  {
    auto w = CsvWriter::Open(path, {"round", "x"});
    for (int r = 1; r <= 4; ++r) {
      ASSERT_TRUE((*w)->Write({std::to_string(r), "v"}).ok());
    }
  }
  auto w = CsvWriter::OpenTruncated(path, {"round", "x"}, "round", 3);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE((*w)->Write({"3", "again"}).ok());
  w->reset();
  EXPECT_EQ(Slurp(path), "round,x\n1,v\n2,v\n3,again\n");
  EXPECT_FALSE(CsvWriter::OpenTruncated(path, {"round", "x"}, "nope", 3).ok());
}

TEST(CsvTest, ReadCsvFileMapsRowsByColumn) {
  const std::string path = TempPath("read.csv");
  std::remove(path.c_str());
  {
    auto w = CsvWriter::Open(path, {"round", "note"});
    ASSERT_TRUE((*w)->Write({"1", "a, \"quoted\" b"}).ok());
    ASSERT_TRUE((*w)->Write({"2", ""}).ok());
  }
  auto rows = ReadCsvFile(path);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].at("note"), "a, \"quoted\" b");
  EXPECT_EQ((*rows)[1].at("round"), "2");
  EXPECT_EQ(ReadCsvFile(path + ".absent").status().code(),
            absl::StatusCode::kNotFound);
  std::ofstream(path, std::ios::app) << "3,x,extra\n";
  EXPECT_EQ(ReadCsvFile(path).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fedge::metrics
