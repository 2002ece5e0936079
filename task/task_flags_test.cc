#include "task/task_flags.h"

#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

ABSL_DECLARE_FLAG(std::string, task);
ABSL_DECLARE_FLAG(std::vector<std::string>, task_set);

namespace fedge::task {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(TaskFlagsTest, FlagsResolveTheTaskAndTravelToChildren) {
  absl::SetFlag(&FLAGS_task, "");
  absl::SetFlag(&FLAGS_task_set, {});
  EXPECT_TRUE(TaskFlagArguments().empty());
  ASSERT_TRUE(TaskFromFlags().ok());

  absl::SetFlag(&FLAGS_task_set, {"simulation.alpha=0.1", "base=b"});
  absl::StatusOr<TaskSpec> spec = TaskFromFlags();
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_DOUBLE_EQ(spec->simulation.alpha, 0.1);
  EXPECT_EQ(spec->base_dir, "b");
  EXPECT_THAT(TaskFlagArguments(),
              ElementsAre("--task_set=simulation.alpha=0.1,base=b"));

  absl::SetFlag(&FLAGS_task, "/nonexistent/t.json");
  EXPECT_THAT(TaskFromFlags().status().message(),
              HasSubstr("/nonexistent/t.json"));
  EXPECT_THAT(TaskFlagArguments(),
              ElementsAre("--task=/nonexistent/t.json",
                          "--task_set=simulation.alpha=0.1,base=b"));
}

}  // namespace
}  // namespace fedge::task
