#include "coordinator/rewards.h"

#include "gtest/gtest.h"

namespace fedge::coordinator {
namespace {

Device Timed(double train_s) {
  Device d;
  d.times = strategies::DeviceTimeModel({1.0, 0.0});
  d.times.Observe({0.0, 4, train_s, 1.0, 0.0});
  return d;
}

TEST(RewardsTest, CandidateRatiosCombineWithTheGlobalRatio) {
  EngineOptions options;
  options.bandit.kind = strategies::BanditKind::kFixed;
  options.bandit.fixed_arm = {0.5, 4};
  options.bandit.ramp_plays = 0;
  const std::vector<double> ratios = CandidateCombinedRatios(options, 0.2, 0);
  ASSERT_EQ(ratios.size(), 1u);
  EXPECT_DOUBLE_EQ(ratios[0], strategies::CombinedRatio(0.2, 0.5));

  // Devices with arms of their own add theirs, once each, ascending.
  options.device_arms = {{"a", {0.1, 4}}, {"b", {0.5, 8}}, {"c", {0.1, 2}}};
  EXPECT_EQ(CandidateCombinedRatios(options, 0.2, 0),
            (std::vector<double>{strategies::CombinedRatio(0.2, 0.1),
                                 strategies::CombinedRatio(0.2, 0.5)}));
}

TEST(RewardsTest, OnPaceMeansPredictedWithinThePace) {
  EngineOptions options;
  options.reward.time = 0.5;
  const Device fresh;  // No time model yet: no verdict.
  EXPECT_FALSE(OnPace(options, fresh, 0.0, 10.0));
  const Device timed = Timed(8.0);                 // 8 s at ratio 0, rank 4.
  EXPECT_FALSE(OnPace(options, timed, 0.0, 0.0));  // No pace.
  const strategies::WithinPace on_pace = OnPace(options, timed, 0.0, 10.0);
  ASSERT_TRUE(on_pace);
  EXPECT_TRUE(on_pace({0.0, 4}));
  EXPECT_FALSE(OnPace(options, timed, 0.0, 6.0)({0.0, 4}));
  EXPECT_TRUE(OnPace(options, timed, 0.0, 6.0)({0.5, 4}));  // Pruned: faster.
  options.reward.time = 0;  // Time not rewarded: no verdict either.
  EXPECT_FALSE(OnPace(options, timed, 0.0, 6.0));
}

TEST(RewardsTest, TheBanditIsToldTheCostAndTheTimePastThePace) {
  EngineOptions options;
  options.reward.pruning_cost = 2;
  options.reward.time = 0.5;
  const Device fresh;  // No time model yet.
  const std::function<double(double)> cost = [](double r) { return r; };
  EXPECT_FALSE(KnownReward(options, fresh, 0.0, 10.0, false, cost));
  strategies::KnownReward told =
      KnownReward(options, fresh, 0.0, 10.0, true, cost);
  ASSERT_TRUE(told);
  EXPECT_DOUBLE_EQ(told({0.25, 4}), -2 * 0.25);

  const Device slow = Timed(9.0);  // 10 s a task at ratio 0.
  const double pace = RoundPace(options, {&slow}, 0.0);
  EXPECT_GT(pace, 0);
  told = KnownReward(options, slow, 0.0, pace / 2, false, cost);
  ASSERT_TRUE(told);
  // Twice the pace at ratio 0: one pace too long.
  EXPECT_LT(told({0.0, 4}), 0);
  EXPECT_LT(told({0.0, 4}), told({0.5, 4}));  // Pruning is faster.
}

TEST(RewardsTest, AnOverrunNobodyCouldPredictIsNotLearnt) {
  EngineOptions options;
  options.reward.time = 0.5;
  EXPECT_FALSE(TimeKnown(options, Device(), 10.0)) << "no time model";
  EXPECT_FALSE(TimeKnown(options, Timed(8.0), 0.0)) << "no pace";
  EXPECT_TRUE(TimeKnown(options, Timed(8.0), 10.0));
  ClientRecord late;
  late.terms.time_over_pace = 2;
  late.terms.loss_improvement = 0.1;
  late.reward = 0.1 - 0.5 * 2;
  // Told the time term (and a cost): it learns what it was not told.
  EXPECT_DOUBLE_EQ(LearnedReward(options, late, -1.2, true), late.reward + 1.2);
  // Told nothing of its time: the overrun is its speed, not its arm's.
  EXPECT_DOUBLE_EQ(LearnedReward(options, late, -0.2, false),
                   late.reward + 0.2 + 1.0);
  options.reward.time = 0;
  EXPECT_FALSE(TimeKnown(options, Timed(8.0), 10.0)) << "no time term";
}

TEST(RewardsTest, TheCapabilityRuleNeedsAStaticBanditABudgetAndATimeModel) {
  EngineOptions options;
  options.bandit.kind = strategies::BanditKind::kStatic;
  options.bandit.space.ranks = {4, 16};
  options.bandit.ramp_plays = 0;
  const Device fresh;
  EXPECT_FALSE(CapabilityArm(options, fresh, 0.0, 5.0));
  const Device slow = Timed(20.0);
  const Device fast = Timed(1.0);
  const double budget = CapabilityBudget(options, {&slow, &fast}, 0.0);
  EXPECT_GT(budget, 0);
  EXPECT_FALSE(CapabilityArm(options, slow, 0.0, 0.0));
  const std::optional<strategies::Arm> fast_arm =
      CapabilityArm(options, fast, 0.0, budget);
  const std::optional<strategies::Arm> slow_arm =
      CapabilityArm(options, slow, 0.0, budget);
  ASSERT_TRUE(fast_arm && slow_arm);
  EXPECT_GE(slow_arm->prune_ratio, fast_arm->prune_ratio);
  options.bandit.kind = strategies::BanditKind::kFedSpine;
  EXPECT_FALSE(CapabilityArm(options, fast, 0.0, budget));
}

TEST(RewardsTest, AStragglerIsPaidLessThanTheSameDeviceOnTime) {
  EngineOptions options;
  RoundPay round;
  round.pace_s = 10;
  round.median_elapsed_s = 10;
  round.median_update_norm = {{0, 1.0}};
  ClientRecord c;
  c.loss_before = 2;
  c.loss_after = 1.5;
  c.update_norm = 1;
  c.elapsed_s = 10;
  ClientRecord late = c;
  PayClient(options, round, /*straggler=*/false, 0.0, c);
  PayClient(options, round, /*straggler=*/true, 0.0, late);
  EXPECT_GT(c.reward, late.reward);
  ClientRecord costly = c;
  PayClient(options, round, false, 0.5, costly);
  EXPECT_LT(costly.reward, c.reward);
}

// A rank-4 adapter's step is alpha / 4 against alpha / 32 at rank 32, so
// its update is larger whatever its data: importance compares an update
// with the round's updates of its own rank.
TEST(RewardsTest, ImportanceComparesAnUpdateWithItsOwnRank) {
  EngineOptions options;
  RoundPay round;
  round.median_update_norm = {{4, 2.0}, {32, 0.5}};
  ClientRecord low, high, unknown;
  low.rank = 4;
  low.update_norm = 3.0;
  high.rank = 32;
  high.update_norm = 0.75;
  unknown.rank = 16;
  unknown.update_norm = 5.0;
  PayClient(options, round, false, 0.0, low);
  PayClient(options, round, false, 0.0, high);
  PayClient(options, round, false, 0.0, unknown);
  EXPECT_DOUBLE_EQ(low.terms.update_importance, 1.5);
  EXPECT_DOUBLE_EQ(high.terms.update_importance, 1.5);
  EXPECT_DOUBLE_EQ(low.reward, high.reward);
  EXPECT_DOUBLE_EQ(unknown.terms.update_importance, 1.0);  // No median.
}

}  // namespace
}  // namespace fedge::coordinator
