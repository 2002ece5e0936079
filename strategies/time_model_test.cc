#include "strategies/time_model.h"

#include <cmath>

#include "gtest/gtest.h"

namespace fedge::strategies {
namespace {

TEST(TimeModelTest, OneTaskPredictsEveryArm) {
  DeviceTimeModel model({/*prunable=*/0.8, /*per_rank=*/0.0});
  EXPECT_FALSE(model.Predict(0, 8).has_value());
  // Dense, rank 8: 10 s training, 4 s transfer, 1 s else.
  ASSERT_TRUE(model.Observe({0.0, 8, 10.0, 4.0, 1.0}));
  EXPECT_DOUBLE_EQ(*model.Predict(0, 8), 15.0);
  // Half the blocks pruned: 1 - 0.8 * 0.5 of the work, 3/4 of the bytes.
  EXPECT_DOUBLE_EQ(*model.Predict(0.5, 8), 10.0 * 0.6 + 4.0 * 0.75 + 1.0);
  // Rank 32: four times the bytes, the same work.
  EXPECT_DOUBLE_EQ(*model.Predict(0, 32), 10.0 + 16.0 + 1.0);
}

// An adapter's training work grows with its rank: at rank 32 with 0.01 of
// the base's work per rank, training is 1.32 of the base's; the model
// learns that from a rank-4 task and predicts rank 32 from it.
TEST(TimeModelTest, TrainingWorkGrowsWithTheRank) {
  const WorkShares shares{0.8, 0.01};
  EXPECT_DOUBLE_EQ(RelativeWork(0, 32, shares), 1.32);
  EXPECT_DOUBLE_EQ(RelativeWork(0.5, 32, shares), 1.0 - 0.4 + 0.32 * 0.75);
  DeviceTimeModel model(shares);
  // Rank 4, dense: 1.04 units of work in 10.4 s, so 10 s a unit.
  ASSERT_TRUE(model.Observe({0.0, 4, 10.4, 0.0, 0.0}));
  EXPECT_DOUBLE_EQ(*model.Predict(0, 32), 13.2);
  EXPECT_GT(*model.Predict(0, 32), *model.Predict(0, 4));
}

TEST(TimeModelTest, ObservationsAtOtherArmsGiveTheSameConstants) {
  DeviceTimeModel a({0.8, 0.0}), b({0.8, 0.0});
  ASSERT_TRUE(a.Observe({0.0, 8, 10.0, 4.0, 1.0}));
  // The same device at p=0.5, r=4: 6 s training, 1.5 s transfer.
  ASSERT_TRUE(b.Observe({0.5, 4, 6.0, 1.5, 1.0}));
  EXPECT_NEAR(*a.Predict(0.25, 16), *b.Predict(0.25, 16), 1e-12);
}

TEST(TimeModelTest, FollowsASpeedChangeWithinAFewTasks) {
  DeviceTimeModel model({1.0, 0.0});
  for (int i = 0; i < 10; ++i) model.Observe({0.0, 4, 10.0, 0.0, 0.0});
  // The device became ten times slower.
  for (int i = 0; i < 3; ++i) model.Observe({0.0, 4, 100.0, 0.0, 0.0});
  EXPECT_GT(*model.Predict(0, 4), 85.0);
  EXPECT_EQ(model.state().observations, 13);
}

TEST(TimeModelTest, BadTasksAreIgnored) {
  DeviceTimeModel model({0.8, 0.0});
  EXPECT_FALSE(model.Observe({0.0, 8, NAN, 1.0, 0.0}));
  EXPECT_FALSE(model.Observe({0.0, 8, 1.0, -1.0, 0.0}));
  EXPECT_FALSE(model.Observe({0.0, 0, 1.0, 1.0, 0.0}));
  EXPECT_FALSE(model.Predict(0, 8).has_value());
  DeviceTimeModel restored({0.8, 0.0});
  ASSERT_TRUE(model.Observe({0.0, 8, 10.0, 4.0, 1.0}));
  restored.Restore(model.state());
  EXPECT_EQ(*restored.Predict(0.3, 2), *model.Predict(0.3, 2));
}

TEST(TimeModelTest, PaceIsTheSlowestDevicesFastestArm) {
  EXPECT_EQ(RoundPace({}), 0);
  EXPECT_EQ(RoundPace({3.0, 12.0, NAN, 5.0}), 12.0);
  EXPECT_EQ(TimeOverPace(10, 12), 0);
  EXPECT_DOUBLE_EQ(TimeOverPace(18, 12), 0.5);
  EXPECT_EQ(TimeOverPace(1e9, 12), kMaxTimeOverPace);
  EXPECT_EQ(TimeOverPace(18, 0), 0);
  EXPECT_EQ(TimeOverPace(NAN, 12), 0);
}

// A task of three times the steps took three times the training: the
// model's constants are per usual task, so it predicts the same as from a
// usual one.
TEST(TimeModelTest, ATaskOfMoreStepsCountsPerUsualTask) {
  DeviceTimeModel usual({0.8, 0.0}), filled({0.8, 0.0});
  ASSERT_TRUE(usual.Observe({0.0, 8, 10.0, 4.0, 1.0}));
  ASSERT_TRUE(filled.Observe({0.0, 8, 30.0, 4.0, 1.0, /*step_multiple=*/3}));
  EXPECT_DOUBLE_EQ(*filled.Predict(0.5, 4), *usual.Predict(0.5, 4));
  EXPECT_DOUBLE_EQ(*filled.PredictTrain(0, 8), 10.0);
  EXPECT_FALSE(filled.Observe({0.0, 8, 30.0, 4.0, 1.0, 0.0}));
  EXPECT_FALSE(filled.Observe({0.0, 8, 30.0, 4.0, 1.0, NAN}));
}

TEST(TimeModelTest, FillPaceSpendsTheWaitOnSteps) {
  // 15 s predicted, 10 of them training, a 35 s pace: 20 s spare buys two
  // more multiples of the steps.
  EXPECT_DOUBLE_EQ(FillPace(15, 10, 35, 8), 3.0);
  EXPECT_DOUBLE_EQ(FillPace(15, 10, 35, 2.5), 2.5);  // Capped.
  EXPECT_DOUBLE_EQ(FillPace(15, 10, 12, 8), 1.0);    // Past the pace.
  EXPECT_DOUBLE_EQ(FillPace(15, 10, 20, 8), 1.5);
  // Unknown: the usual steps.
  EXPECT_EQ(FillPace(15, 10, 0, 8), 1.0);
  EXPECT_EQ(FillPace(15, 0, 35, 8), 1.0);
  EXPECT_EQ(FillPace(NAN, 10, 35, 8), 1.0);
  EXPECT_EQ(FillPace(15, 10, INFINITY, 8), 1.0);
  EXPECT_EQ(FillPace(15, 10, 35, NAN), 1.0);
}

TEST(TimeModelTest, CapabilityRuleTakesTheLeastPruningThatFitsTheBudget) {
  const std::vector<Arm> arms = GridArms({0.0, 0.4, 3, {4, 16, 32}});
  DeviceTimeModel slow({1.0, 0.0});
  ASSERT_TRUE(slow.Observe({0.0, 4, 20.0, 0.4, 0.0}));  // 0.1 s per rank.
  const auto seconds = [&](const Arm& a) {
    return *slow.Predict(a.prune_ratio, a.rank);
  };
  // 20 s of work: ratio 0.2 leaves 16 s, 0.4 leaves 12 s.
  EXPECT_EQ(CapabilityArm(arms, seconds, 100), (Arm{0.0, 32}));
  EXPECT_EQ(CapabilityArm(arms, seconds, 21), (Arm{0.0, 4}));
  EXPECT_EQ(CapabilityArm(arms, seconds, 18), (Arm{0.2, 16}));
  // Nothing fits: the fastest arm.
  EXPECT_EQ(CapabilityArm(arms, seconds, 1), (Arm{0.4, 4}));
}

TEST(TimeModelTest, Quantile) {
  EXPECT_EQ(Quantile({}, 0.75), 0);
  EXPECT_EQ(Quantile({4, 1, 3, 2}, 0.75), 3);
  EXPECT_EQ(Quantile({4, 1, 3, 2}, 1.0), 4);
  EXPECT_EQ(Quantile({4, 1, 3, 2}, 0.0), 1);
}

}  // namespace
}  // namespace fedge::strategies
