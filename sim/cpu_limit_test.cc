#include "sim/cpu_limit.h"

#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "gtest/gtest.h"

#include "sim/process.h"

namespace fedge::sim {
namespace {

// CPU seconds (user + system) process `pid` has used.
double CpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::string skip;
  for (int i = 0; i < 11; ++i) fields >> skip;  // state .. cmajflt
  double user = 0, system = 0;
  fields >> user >> system;
  return (user + system) / sysconf(_SC_CLK_TCK);
}

TEST(CpuLimitTest, CapsABusyProcessToItsShare) {
  absl::StatusOr<std::unique_ptr<CpuLimit>> limit = CpuLimit::Create(
      "fedge-test-" + std::to_string(::getpid()), /*cores=*/0.2);
  if (absl::IsUnavailable(limit.status())) {
    GTEST_SKIP() << "no writable cgroup CPU controller: " << limit.status();
  }
  ASSERT_TRUE(limit.ok()) << limit.status();
  auto busy = ChildProcess::Start({"/bin/sh", "-c", "while :; do :; done"}, "");
  ASSERT_TRUE(busy.ok());
  ASSERT_TRUE((*limit)->Add((*busy)->pid()).ok());
  const double before = CpuSeconds((*busy)->pid());
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const double used = CpuSeconds((*busy)->pid()) - before;
  busy->reset();  // Killed and reaped, so the cgroup can go.
  // 0.2 cores for 2 s is 0.4 CPU-seconds; unthrottled it would be ~2.
  EXPECT_LT(used, 0.6) << (*limit)->mechanism();
  EXPECT_GT(used, 0.1);
}

TEST(CpuLimitTest, RejectsBadArguments) {
  EXPECT_EQ(CpuLimit::Create("ok", 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CpuLimit::Create("../escape", 0.5).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fedge::sim
