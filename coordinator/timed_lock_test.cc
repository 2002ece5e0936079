#include "coordinator/timed_lock.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace fedge::coordinator {
namespace {

TEST(TimedLockTest, ReportsEachHoldAfterReleasingTheMutex) {
  absl::Mutex mu;
  std::vector<std::string> ops;
  std::vector<absl::Duration> held;
  LockObserver observer = [&](absl::string_view op, absl::Duration d) {
    // Released before the observer runs: taking it again cannot deadlock.
    if (mu.TryLock()) {
      mu.Unlock();
    } else {
      ADD_FAILURE() << "the observer ran with the mutex held";
    }
    ops.emplace_back(op);
    held.push_back(d);
  };
  {
    TimedLock lock(&mu, &observer, "first");
    mu.AssertHeld();
  }
  { TimedLock lock(&mu, &observer, "second"); }
  ASSERT_EQ(ops, (std::vector<std::string>{"first", "second"}));
  for (absl::Duration d : held) EXPECT_GE(d, absl::ZeroDuration());
}

TEST(TimedLockTest, ReleaseEndsTheHoldOnce) {
  absl::Mutex mu;
  int holds = 0;
  LockObserver observer = [&](absl::string_view, absl::Duration) { ++holds; };
  {
    TimedLock lock(&mu, &observer, "op");
    lock.Release();
    if (mu.TryLock()) {
      mu.Unlock();
    } else {
      ADD_FAILURE() << "Release() left the mutex held";
    }
  }
  EXPECT_EQ(holds, 1);
}

TEST(TimedLockTest, AnEmptyObserverIsAPlainLock) {
  absl::Mutex mu;
  LockObserver empty;
  { TimedLock lock(&mu, &empty, "op"); }
  { TimedLock lock(&mu, nullptr, "op"); }
  if (mu.TryLock()) {
    mu.Unlock();
  } else {
    ADD_FAILURE() << "the lock was not released";
  }
}

}  // namespace
}  // namespace fedge::coordinator
