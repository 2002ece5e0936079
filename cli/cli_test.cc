#include "cli/cli.h"

#include <string>

#include "absl/flags/flag.h"
#include "gtest/gtest.h"

ABSL_FLAG(int, cli_test_value, 0, "A flag for the test.");

namespace fedge::cli {
namespace {

// One parse per process: Abseil takes the usage text once.
TEST(CliTest, ParsesFlagsAndRefusesStrayArguments) {
  std::string name = "prog", flag = "--cli_test_value=7", stray = "oops";
  char* argv[] = {name.data(), flag.data(), stray.data()};
  const absl::Status s = ParseFlags(3, argv, "usage");
  EXPECT_EQ(absl::GetFlag(FLAGS_cli_test_value), 7);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'oops'"), std::string::npos);
}

TEST(CliTest, HelpListsFedgeFlagsNotAbseils) {
  EXPECT_TRUE(IsFedgeFlagFile("/src/fedge/client/main.cc"));
  EXPECT_TRUE(IsFedgeFlagFile("../../task/task_flags.cc"));
  EXPECT_FALSE(IsFedgeFlagFile("absl/flags/parse.cc"));
  EXPECT_FALSE(IsFedgeFlagFile("/build/abseil/absl/flags/internal/usage.cc"));
}

TEST(CliTest, FailReturnsTheExitCode) {
  EXPECT_EQ(Fail(absl::InternalError("broken")), 1);
  EXPECT_EQ(Fail("broken"), 1);
}

}  // namespace
}  // namespace fedge::cli
