#include "strategies/reward.h"

#include <cmath>

#include "gtest/gtest.h"

#include "strategies/time_model.h"

namespace fedge::strategies {
namespace {

RewardInputs Measured() {
  RewardInputs in;
  in.loss_before = 2.0;
  in.loss_after = 1.5;
  in.prune_ratio = 0.3;
  in.target_ratio = 0.6;
  in.update_norm = 4.0;
  in.median_update_norm = 2.0;
  in.seconds = 30;
  in.median_seconds = 20;
  in.pruning_cost = 0.2;
  return in;
}

TEST(RewardTest, TermsAndWeights) {
  const RewardTerms t = MakeRewardTerms(Measured());
  EXPECT_DOUBLE_EQ(t.loss_improvement, 0.25);
  EXPECT_DOUBLE_EQ(t.pruning_progress, 0.5);
  EXPECT_DOUBLE_EQ(t.update_importance, 2.0);
  EXPECT_DOUBLE_EQ(t.time_over_pace, 0.5);  // 30 s against a median of 20.
  EXPECT_DOUBLE_EQ(t.pruning_cost, 0.2);
  EXPECT_DOUBLE_EQ(Reward(t, {1, 1, 1, 1, 1}), 0.25 + 0.5 + 2.0 - 0.5 - 0.2);
  EXPECT_DOUBLE_EQ(Reward(t, {1, 0, 0, 0, 2}), 0.25 - 0.4);
}

TEST(RewardTest, OnlyTimePastThePaceCosts) {
  RewardInputs in = Measured();
  in.pace_seconds = 40;  // The round waits 40 s anyway: 30 s is free.
  EXPECT_EQ(MakeRewardTerms(in).time_over_pace, 0);
  in.seconds = 60;
  EXPECT_DOUBLE_EQ(MakeRewardTerms(in).time_over_pace, 0.5);
  in.seconds = 1000;
  EXPECT_DOUBLE_EQ(MakeRewardTerms(in).time_over_pace, kMaxTimeOverPace);
}

TEST(RewardTest, PruningProgressCountsOnlyTowardsTheTarget) {
  RewardInputs in = Measured();
  in.prune_ratio = 0.9;  // Past the target: no more than reaching it.
  EXPECT_DOUBLE_EQ(MakeRewardTerms(in).pruning_progress, 1.0);
  in.target_ratio = 0;  // No target: pruning is worth only its time.
  EXPECT_DOUBLE_EQ(MakeRewardTerms(in).pruning_progress, 0.0);
  in.prune_ratio = 0;
  in.target_ratio = 0.4;
  EXPECT_DOUBLE_EQ(MakeRewardTerms(in).pruning_progress, 0.0);
}

TEST(RewardTest, MissingOrBadMeasurementsAreNeutral) {
  RewardInputs in = Measured();
  in.loss_after = NAN;
  in.median_update_norm = 0;
  in.straggler = true;
  in.pruning_cost = NAN;
  const RewardTerms late = MakeRewardTerms(in);
  EXPECT_EQ(late.loss_improvement, 0);
  EXPECT_EQ(late.time_over_pace, 4.0);  // A straggler gets the cap.
  EXPECT_EQ(late.update_importance, 1.0);
  EXPECT_EQ(late.pruning_cost, 0);
  in = Measured();
  in.median_seconds = 0;
  in.pruning_cost = 7;
  in.loss_after = 100;  // Training diverged: the term is clipped.
  const RewardTerms odd = MakeRewardTerms(in);
  EXPECT_EQ(odd.time_over_pace, 0);  // Neither pace nor median: no term.
  EXPECT_EQ(odd.pruning_cost, 1.0);
  EXPECT_EQ(odd.loss_improvement, -1.0);
}

TEST(RewardTest, Median) {
  EXPECT_EQ(Median({3, 1, 2}), 2);
  EXPECT_EQ(Median({4, 1, 2, 3}), 2.5);
  EXPECT_EQ(Median({}), 0);
}

}  // namespace
}  // namespace fedge::strategies
