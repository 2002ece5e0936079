#include "coordinator/tick_failures.h"

#include "gtest/gtest.h"

namespace fedge::coordinator {
namespace {

TEST(TickFailuresTest, StopsAfterMaxFailuresWithNoCleanCloseBetween) {
  TickFailures failures(3, 0);
  const absl::Status disk = absl::InternalError("checkpoint: disk full");
  EXPECT_FALSE(failures.Record(disk, 1));  // Round 1 closed, not saved.
  EXPECT_FALSE(failures.Record(absl::OkStatus(), 1));  // Idle ticks.
  EXPECT_FALSE(failures.Record(disk, 2));
  const std::optional<absl::Status> stop = failures.Record(disk, 3);
  ASSERT_TRUE(stop.has_value());
  EXPECT_EQ(stop->code(), absl::StatusCode::kInternal);
  EXPECT_NE(stop->message().find("disk full"), std::string::npos);
  EXPECT_NE(stop->message().find("3 failed"), std::string::npos);
}

TEST(TickFailuresTest, ACleanCloseForgivesEarlierFailures) {
  TickFailures failures(2, 5);
  const absl::Status commit = absl::InvalidArgumentError("commit failed");
  EXPECT_FALSE(failures.Record(commit, 5));            // The round stays open.
  EXPECT_FALSE(failures.Record(absl::OkStatus(), 6));  // Retried: closed.
  EXPECT_EQ(failures.failures(), 0);
  EXPECT_FALSE(failures.Record(commit, 6));
  EXPECT_TRUE(failures.Record(commit, 6).has_value());
}

}  // namespace
}  // namespace fedge::coordinator
