#include "model/kill_point.h"

#include <unistd.h>

#include <cstdlib>

#include "gtest/gtest.h"

#include <sys/wait.h>

namespace fedge::model {
namespace {

// Runs `body` in a child process with FEDGE_KILL_POINT=`spec`; the signal
// that ended it (0 for a normal exit).
template <typename Body>
int SignalOfChild(const char* spec, Body body) {
  const pid_t pid = fork();
  if (pid == 0) {
    setenv("FEDGE_KILL_POINT", spec, 1);
    body();
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

TEST(KillPointTest, KillsAtTheNamedHitOnly) {
  // The third hit of "b" kills: the child reaches it after 2 survived.
  EXPECT_EQ(SignalOfChild("b@3",
                          [&] {
                            for (int i = 0; i < 2; ++i) KillPoint("b");
                            KillPoint("a");
                            KillPoint("b");
                            _exit(3);
                          }),
            SIGKILL);
  EXPECT_EQ(SignalOfChild("b", [] { KillPoint("a"); }), 0);
  EXPECT_EQ(SignalOfChild("a", [] { KillPoint("a"); }), SIGKILL);
  EXPECT_EQ(SignalOfChild("", [] { KillPoint("a"); }), 0);
  // Children only: this process must not read the variable first, or its
  // children would inherit the parsed (unarmed) state.
}

}  // namespace
}  // namespace fedge::model
