#include "coordinator/worker_pool.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace fedge::coordinator {
namespace {

TEST(WorkerPoolTest, RunsEveryScheduledWorkOffTheCallersThread) {
  std::atomic<int> ran{0};
  std::atomic<int> on_caller{0};
  const std::thread::id caller = std::this_thread::get_id();
  {
    WorkerPool pool(3);
    EXPECT_EQ(pool.threads(), 3);
    for (int i = 0; i < 100; ++i) {
      pool.Schedule([&] {
        if (std::this_thread::get_id() == caller) ++on_caller;
        ++ran;
      });
    }
  }  // The destructor runs what is queued before it joins.
  EXPECT_EQ(ran.load(), 100);
  EXPECT_EQ(on_caller.load(), 0);
}

TEST(WorkerPoolTest, OneThreadRunsWorkInOrder) {
  std::vector<int> order;  // Only the pool's one thread writes it.
  {
    WorkerPool pool(1);
    for (int i = 0; i < 20; ++i)
      pool.Schedule([&order, i] { order.push_back(i); });
  }
  ASSERT_EQ(order.size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(order[i], i);
}

TEST(WorkerPoolTest, BusyThreadsDoNotHoldUpTheOthers) {
  // One thread is held inside its work; the other still runs what comes.
  WorkerPool pool(2);
  absl::Notification release, blocked_started, other_ran;
  pool.Schedule([&] {
    blocked_started.Notify();
    release.WaitForNotification();
  });
  blocked_started.WaitForNotification();
  pool.Schedule([&] { other_ran.Notify(); });
  other_ran.WaitForNotification();  // Would hang if one thread did all.
  EXPECT_EQ(pool.queued(), 0);
  release.Notify();
}

TEST(WorkerPoolTest, QueuedCountsWorkNotYetStarted) {
  WorkerPool pool(1);
  absl::Notification release, started;
  pool.Schedule([&] {
    started.Notify();
    release.WaitForNotification();
  });
  started.WaitForNotification();
  pool.Schedule([] {});
  pool.Schedule([] {});
  EXPECT_EQ(pool.queued(), 2);
  release.Notify();
}

TEST(WorkerPoolDeathTest, NeedsAThread) {
  EXPECT_DEATH(WorkerPool pool(0), "needs a thread");
}

}  // namespace
}  // namespace fedge::coordinator
