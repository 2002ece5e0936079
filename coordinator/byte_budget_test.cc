#include "coordinator/byte_budget.h"

#include <memory>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace fedge::coordinator {
namespace {

TEST(ByteBudgetTest, WorkThatDoesNotFitWaitsForTheBytesToBeReleased) {
  ByteBudget budget(100);
  auto first = std::make_unique<ByteBudget::Lease>(budget.Acquire(60));
  absl::Notification admitted;
  std::thread second([&] {
    ByteBudget::Lease lease = budget.Acquire(60);
    admitted.Notify();
  });

  // Not a timing assertion: the second lease cannot be granted while the
  // first holds 60 of 100 bytes, however long we wait.
  EXPECT_FALSE(admitted.WaitForNotificationWithTimeout(absl::Milliseconds(50)));
  EXPECT_EQ(budget.in_use(), 60);
  first.reset();
  admitted.WaitForNotification();
  second.join();
  EXPECT_EQ(budget.in_use(), 0);
}

TEST(ByteBudgetTest, WorkThatFitsRunsAtOnce) {
  ByteBudget budget(100);
  ByteBudget::Lease a = budget.Acquire(40);
  ByteBudget::Lease b = budget.Acquire(60);
  EXPECT_EQ(budget.in_use(), 100);
}

TEST(ByteBudgetTest, WorkLargerThanTheBudgetRunsAlone) {
  ByteBudget budget(100);
  {
    ByteBudget::Lease huge = budget.Acquire(1000);
    EXPECT_EQ(budget.in_use(), 1000);
  }
  EXPECT_EQ(budget.in_use(), 0);
}

TEST(ByteBudgetTest, MovedLeasesReleaseOnceAndNoBudgetNeverWaits) {
  ByteBudget budget(100);
  {
    ByteBudget::Lease a = budget.Acquire(70);
    ByteBudget::Lease b = std::move(a);
    ByteBudget::Lease c;
    c = std::move(b);
    EXPECT_EQ(budget.in_use(), 70);
  }
  EXPECT_EQ(budget.in_use(), 0);
  ByteBudget unbounded(0);
  ByteBudget::Lease x = unbounded.Acquire(1 << 30);
  ByteBudget::Lease y = unbounded.Acquire(1 << 30);
  EXPECT_EQ(unbounded.in_use(), int64_t{2} << 30);
}

}  // namespace
}  // namespace fedge::coordinator
