#include "sim/process.h"

#include <signal.h>

#include <fstream>
#include <sstream>

#include "gtest/gtest.h"

namespace fedge::sim {
namespace {

TEST(ChildProcessTest, RunsLogsAndReportsExitCodes) {
  const std::string log = ::testing::TempDir() + "/child.log";
  std::remove(log.c_str());
  auto child = ChildProcess::Start(
      {"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}, log);
  ASSERT_TRUE(child.ok()) << child.status();
  absl::StatusOr<int> code = (*child)->Wait();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 3);
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "out\nerr\n");
}

TEST(ChildProcessTest, TimesOutAndSignals) {
  auto child = ChildProcess::Start({"/bin/sleep", "30"}, "");
  ASSERT_TRUE(child.ok());
  EXPECT_TRUE((*child)->Running());
  EXPECT_EQ((*child)->Wait(absl::Milliseconds(50)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  (*child)->Signal(SIGTERM);
  EXPECT_EQ(*(*child)->Wait(), 128 + SIGTERM);
  EXPECT_FALSE((*child)->Running());
}

TEST(ChildProcessTest, MissingProgramIsUnavailableNamingIt) {
  auto child = ChildProcess::Start({"/nonexistent/fedge-x"}, "");
  ASSERT_FALSE(child.ok());
  EXPECT_EQ(child.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(child.status().message().find("fedge-x"), std::string::npos);
}

}  // namespace
}  // namespace fedge::sim
