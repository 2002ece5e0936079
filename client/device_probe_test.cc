#include "client/device_probe.h"

#include <gtest/gtest.h>

namespace fedge::client {
namespace {

constexpr int64_t kMiB = 1 << 20;

TEST(PredictedPeakBytesTest, TrainingAddsToWhatIsLive) {
  EXPECT_EQ(PredictedPeakBytes(200 * kMiB, 0, 100 * kMiB), 300 * kMiB);
}

TEST(PredictedPeakBytesTest, TrainingTakesTheKeptFreeHeapFirst) {
  // 120 MiB of the 300 resident are last round's freed activations.
  EXPECT_EQ(PredictedPeakBytes(300 * kMiB, 120 * kMiB, 100 * kMiB), 300 * kMiB);
  EXPECT_EQ(PredictedPeakBytes(300 * kMiB, 60 * kMiB, 100 * kMiB), 340 * kMiB);
}

TEST(PredictedPeakBytesTest, NeverBelowWhatIsResidentAndNeverNegative) {
  EXPECT_EQ(PredictedPeakBytes(300 * kMiB, 500 * kMiB, 100 * kMiB), 300 * kMiB);
  EXPECT_EQ(PredictedPeakBytes(-1, -1, 50 * kMiB), 50 * kMiB);
  EXPECT_EQ(PredictedPeakBytes(10 * kMiB, 0, -5), 10 * kMiB);
}

TEST(DeviceProbeTest, ThisProcessHasAResidentSizeAndAPeakAtLeastAsLarge) {
  const int64_t rss = RssBytes();
  EXPECT_GT(rss, 0);
  EXPECT_GE(PeakRssBytes(), rss);
}

}  // namespace
}  // namespace fedge::client
