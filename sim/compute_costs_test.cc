#include "sim/compute_costs.h"

#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

#include "model/file_io.h"

namespace fedge::sim {
namespace {

std::string TablePath(const std::string& name) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/costs_", name,
                                        "_", ::getpid(), ".tsv");
  std::remove(path.c_str());
  return path;
}

TEST(ComputeCostTableTest, ChargesTheFirstMeasurementOfTheSameWork) {
  absl::StatusOr<std::unique_ptr<ComputeCostTable>> table =
      ComputeCostTable::Open("");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_FALSE((*table)->Find("rank=4").has_value());
  EXPECT_DOUBLE_EQ((*table)->Charge("rank=4", 13.0), 13.0);
  EXPECT_EQ((*table)->Find("rank=4"), 13.0);
  EXPECT_DOUBLE_EQ((*table)->Charge("rank=4", 14.5), 13.0);
  EXPECT_DOUBLE_EQ((*table)->Charge("rank=8", 12.0), 12.0);
  EXPECT_EQ((*table)->size(), 2u);
}

TEST(ComputeCostTableTest, TheNextRunReadsTheFile) {
  const std::string path = TablePath("reread");
  {
    absl::StatusOr<std::unique_ptr<ComputeCostTable>> table =
        ComputeCostTable::Open(path);
    ASSERT_TRUE(table.ok()) << table.status();
    (*table)->Charge("a b=1", 0.1);  // Not exact in binary.
    (*table)->Charge("c", 7.0);
  }
  absl::StatusOr<std::unique_ptr<ComputeCostTable>> table =
      ComputeCostTable::Open(path);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ((*table)->size(), 2u);
  EXPECT_EQ((*table)->Charge("a b=1", 5.0), 0.1);
  EXPECT_EQ((*table)->Charge("c", 5.0), 7.0);
  (*table)->Charge("d", 2.0);
  table->reset();
  absl::StatusOr<std::string> text = model::ReadFile(path);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "a b=1\t0.10000000000000001\nc\t7\nd\t2\n");
}

TEST(ComputeCostTableTest, BadFilesAreNamedNotTrusted) {
  const struct {
    std::string contents, error;
  } cases[] = {
      {"a\t1\nb 2\n", ":2: expected KEY<tab>SECONDS"},
      {"a\tnan\n", ":1: expected"},
      {"a\t-1\n", ":1: expected"},
      {"\t1\n", ":1: expected"},
      {"a\t1\na\t2\n", ":2: key \"a\" is there twice"},
      {"a\t1\nb\t2", "truncated"},
  };
  for (const auto& c : cases) {
    const std::string path = TablePath("bad");
    ASSERT_TRUE(model::WriteFileAtomically(path, c.contents).ok());
    absl::StatusOr<std::unique_ptr<ComputeCostTable>> table =
        ComputeCostTable::Open(path);
    ASSERT_FALSE(table.ok()) << c.contents;
    EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(table.status().message().find(path), std::string::npos);
    EXPECT_NE(table.status().message().find(c.error), std::string::npos)
        << table.status();
  }
  EXPECT_FALSE(ComputeCostTable::Open("/nonexistent-dir/costs.tsv").ok());
}

TEST(ComputeCostTableTest, ThreadsAgreeOnOneCost) {
  absl::StatusOr<std::unique_ptr<ComputeCostTable>> table =
      ComputeCostTable::Open(TablePath("threads"));
  ASSERT_TRUE(table.ok()) << table.status();
  std::vector<double> charged(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back(
        [&, i] { charged[i] = (*table)->Charge("same", 1.0 + i); });
  }
  for (std::thread& t : threads) t.join();
  for (double c : charged) EXPECT_EQ(c, charged[0]);
  EXPECT_EQ((*table)->size(), 1u);
}

}  // namespace
}  // namespace fedge::sim
