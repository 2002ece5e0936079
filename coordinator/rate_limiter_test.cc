#include "coordinator/rate_limiter.h"

#include "gtest/gtest.h"

namespace fedge::coordinator {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1700000000);

int AllowedAt(RateLimiter& limiter, absl::Time now, int calls) {
  int allowed = 0;
  for (int i = 0; i < calls; ++i) allowed += limiter.Allow(now);
  return allowed;
}

TEST(RateLimiterTest, BurstThenSteadyRate) {
  RateLimiter limiter(10, 5);
  EXPECT_EQ(AllowedAt(limiter, kStart, 100), 5);  // The saved-up burst.
  EXPECT_EQ(AllowedAt(limiter, kStart + absl::Milliseconds(500), 100), 5);
  EXPECT_EQ(AllowedAt(limiter, kStart + absl::Milliseconds(600), 100), 1);
  // Idle for a minute: refilled to the burst, not beyond.
  EXPECT_EQ(AllowedAt(limiter, kStart + absl::Seconds(61), 100), 5);
}

TEST(RateLimiterTest, ClockGoingBackwardsGrantsNothingExtra) {
  RateLimiter limiter(10, 1);
  EXPECT_TRUE(limiter.Allow(kStart + absl::Seconds(10)));
  EXPECT_FALSE(limiter.Allow(kStart));
  EXPECT_FALSE(limiter.Allow(kStart + absl::Seconds(10)));
  EXPECT_TRUE(limiter.Allow(kStart + absl::Milliseconds(10100)));
}

TEST(RateLimiterTest, ZeroRateIsUnlimited) {
  RateLimiter limiter(0, 1);
  EXPECT_EQ(AllowedAt(limiter, kStart, 1000), 1000);
}

}  // namespace
}  // namespace fedge::coordinator
