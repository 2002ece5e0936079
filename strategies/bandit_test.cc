#include "strategies/bandit.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "gtest/gtest.h"

namespace fedge::strategies {
namespace {

// A stationary synthetic process over the default grid: the best arm is
// (ratio 0.4, rank 4); rewards are its mean plus Gaussian noise.
double MeanReward(const Arm& arm) {
  return 0.5 - 2.0 * (arm.prune_ratio - 0.4) * (arm.prune_ratio - 0.4) -
         0.15 * std::abs(std::log2(static_cast<double>(arm.rank)) - 2.0);
}

struct RunResult {
  double early_regret = 0;  // Mean per-play regret over the first quarter.
  double late_regret = 0;   // Mean per-play regret over the last quarter.
  double late_best_share = 0;
};

RunResult Simulate(BanditOptions options, int plays, uint64_t seed,
                   double (*mean)(const Arm&, int, int) = nullptr) {
  options.space.ratio_steps = 4;  // 0, 0.2, 0.4, 0.6.
  auto bandit = CreateBandit(options);
  EXPECT_TRUE(bandit.ok()) << bandit.status();
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0.0, 0.1);
  RunResult result;
  const int quarter = plays / 4;
  for (int t = 0; t < plays; ++t) {
    const Arm arm = (*bandit)->Choose(rng);
    double best = -1e9;
    double m = 0;
    if (mean == nullptr) {
      for (const Arm& a : GridArms(options.space)) {
        best = std::max(best, MeanReward(a));
      }
      m = MeanReward(arm);
    } else {
      for (const Arm& a : GridArms(options.space)) {
        best = std::max(best, mean(a, t, plays));
      }
      m = mean(arm, t, plays);
    }
    (*bandit)->Update(arm, m + noise(rng));
    if (t < quarter) result.early_regret += (best - m) / quarter;
    if (t >= plays - quarter) {
      result.late_regret += (best - m) / quarter;
      result.late_best_share += (best - m < 0.02 ? 1.0 : 0.0) / quarter;
    }
  }
  return result;
}

class GridBanditTest : public ::testing::TestWithParam<BanditKind> {};

// Stationary rewards: no discount needed (with one, learners keep
// exploring as old evidence fades; the drift test covers that case).
TEST_P(GridBanditTest, ConvergesToTheBestArm) {
  BanditOptions options;
  options.kind = GetParam();
  options.discount = 1.0;
  options.window = 2000;
  // EXP3 assumes an adversary and learns slowly (its weights move by at
  // most gamma / K per play): give it a longer
  // run, and a reward range that fits this process.
  const bool exp3 = GetParam() == BanditKind::kExp3;
  const int plays = exp3 ? 8000 : 2000;
  if (exp3) {
    options.reward_min = -0.5;
    options.reward_max = 0.6;
    options.exp3_gamma = 0.05;
  }
  const RunResult r = Simulate(options, plays, 7);
  EXPECT_GT(r.late_best_share, 0.6) << BanditKindName(GetParam());
  // Sublinear regret, loosely: late plays regret far less than early ones.
  EXPECT_LT(r.late_regret, 0.5 * r.early_regret) << BanditKindName(GetParam());
}

INSTANTIATE_TEST_SUITE_P(
    Learners, GridBanditTest,
    ::testing::Values(BanditKind::kUcb1, BanditKind::kDiscountedUcb,
                      BanditKind::kSlidingWindowUcb, BanditKind::kThompson,
                      BanditKind::kExp3),
    [](const auto& info) { return BanditKindName(info.param); });

TEST(FedSpineBanditTest, FindsTheBestRegionOfTheContinuousRatio) {
  BanditOptions options;
  options.kind = BanditKind::kFedSpine;
  options.space.max_ratio = 0.8;
  options.discount = 1.0;
  auto bandit = CreateBandit(options);
  ASSERT_TRUE(bandit.ok());
  std::mt19937_64 rng(3);
  std::normal_distribution<double> noise(0.0, 0.1);
  double late_ratio = 0, late_rank4 = 0, early_regret = 0, late_regret = 0;
  const int plays = 1500, quarter = plays / 4;
  for (int t = 0; t < plays; ++t) {
    const Arm arm = (*bandit)->Choose(rng);
    ASSERT_GE(arm.prune_ratio, 0.0);
    ASSERT_LE(arm.prune_ratio, 0.8);
    const double regret = 0.5 - MeanReward(arm);
    (*bandit)->Update(arm, MeanReward(arm) + noise(rng));
    if (t < quarter) early_regret += regret / quarter;
    if (t >= plays - quarter) {
      late_ratio += arm.prune_ratio / quarter;
      late_rank4 += (arm.rank == 4 ? 1.0 : 0.0) / quarter;
      late_regret += regret / quarter;
    }
  }
  EXPECT_NEAR(late_ratio, 0.4, 0.12);
  EXPECT_GT(late_rank4, 0.5);
  // A uniformly random arm regrets about 0.26 here.
  EXPECT_LT(late_regret, 0.07);
  EXPECT_LT(late_regret, early_regret);  // It learned.
}

// The setting of a federation (issue 22): a device plays 40 times; its
// time term is known before it chooses (strategies/time_model.h), and what
// it learns, the loss improvement per rank, differs between arms by a few
// hundredths, below the noise of one play. A slow device should prune as
// far as its time asks and settle on a rank within the race, not spend it
// trying every cell, and a fast device should stay dense.
double SmallRankEffect(const Arm& arm) {
  return 0.01 * std::log2(static_cast<double>(arm.rank));  // 0.02 .. 0.05.
}

// The time term and the pruning cost, as the coordinator tells them.
KnownReward TimeAndPruningCost(double speed) {
  return [speed](const Arm& arm) {
    // Work and bytes as time_model.h counts them; the pace is 10 s.
    const double seconds =
        10.0 / speed * (1.0 - 0.9 * arm.prune_ratio) +
        0.05 * static_cast<double>(arm.rank) * (1.0 - 0.5 * arm.prune_ratio);
    return -0.5 * std::clamp(seconds / 10.0 - 1.0, 0.0, 4.0) -
           0.2 * arm.prune_ratio;
  };
}

TEST(FedSpineBanditTest, TheRatioFollowsSpeedAndExplorationStaysSmall) {
  BanditOptions options;
  options.kind = BanditKind::kFedSpine;
  options.space.max_ratio = 0.4;
  options.space.ranks = {4, 16, 32};
  for (const double speed : {0.7, 1.5}) {
    auto bandit = CreateBandit(options);
    ASSERT_TRUE(bandit.ok());
    std::mt19937_64 rng(5);
    std::normal_distribution<double> noise(0.0, 0.03);
    const KnownReward known = TimeAndPruningCost(speed);
    double best = -1e9;
    for (double ratio : CandidateRatios(options, 0.4)) {
      for (int64_t rank : options.space.ranks) {
        best = std::max(
            best, known(Arm{ratio, rank}) + SmallRankEffect(Arm{ratio, rank}));
      }
    }
    double regret = 0, late_ratio = 0;
    const int plays = 40;
    for (int t = 0; t < plays; ++t) {
      const Arm arm = (*bandit)->Choose(rng, known);
      const double mean = known(arm) + SmallRankEffect(arm);
      regret += best - mean;
      if (t >= plays / 2) late_ratio += arm.prune_ratio / (plays / 2);
      (*bandit)->Update(arm, SmallRankEffect(arm) + noise(rng));
    }
    if (speed < 1) {
      // 0.7x needs about 0.35 of the blocks pruned to finish in time.
      EXPECT_GT(late_ratio, 0.25) << "the slow device did not prune";
    } else {
      // Ties go to the least pruned point; a pruned cell is still tried
      // now and then.
      EXPECT_LT(late_ratio, 0.1) << "the fast device pruned for nothing";
    }
    // Trying every rank cell once or twice costs about 0.03 a play; the
    // old bonus (the whole reward range, unplayed cells at the maximum)
    // kept that up for the whole race.
    EXPECT_LT(regret / plays, 0.02) << "speed " << speed;
  }
}

// A slow device's exploration lengthens the round for everyone. Told which
// arms keep the round on pace, FedSpine tries no other; without being told
// it does (the test would pass vacuously otherwise).
TEST(FedSpineBanditTest, ExploresOnlyArmsThatKeepTheRoundOnPace) {
  BanditOptions options;
  options.kind = BanditKind::kFedSpine;
  options.space.max_ratio = 0.4;
  options.space.ranks = {4, 16, 32};
  const double speed = 0.7;
  const KnownReward known = TimeAndPruningCost(speed);
  const auto seconds = [speed](const Arm& arm) {  // As TimeAndPruningCost.
    return 10.0 / speed * (1.0 - 0.9 * arm.prune_ratio) +
           0.05 * static_cast<double>(arm.rank) * (1.0 - 0.5 * arm.prune_ratio);
  };
  const WithinPace on_pace = [&](const Arm& arm) {
    return seconds(arm) <= 10.0;
  };
  for (const bool told : {false, true}) {
    auto bandit = CreateBandit(options);
    ASSERT_TRUE(bandit.ok());
    std::mt19937_64 rng(5);
    std::normal_distribution<double> noise(0.0, 0.03);
    int past_pace = 0;
    for (int t = 0; t < 40; ++t) {
      const Arm arm = told ? (*bandit)->Choose(rng, known, on_pace)
                           : (*bandit)->Choose(rng, known);
      if (!on_pace(arm)) ++past_pace;
      (*bandit)->Update(arm, SmallRankEffect(arm) + noise(rng));
    }
    if (told) {
      EXPECT_EQ(past_pace, 0);
    } else {
      EXPECT_GT(past_pace, 0) << "nothing to prevent: the setup is vacuous";
    }
  }
}

// A device the round does not wait for: every arm on pace, and what it
// learns (the loss improvement) differs between ranks by less than one
// play's noise. With capacity ties it settles on the most capacity, rank
// 32 unpruned; without, it spreads its plays over the ranks. A slow device
// for which only the pruned low ranks are on pace plays the most capacity
// among those.
TEST(FedSpineBanditTest, OnPaceTiesGoToTheMostCapacity) {
  BanditOptions options;
  options.kind = BanditKind::kFedSpine;
  options.space.max_ratio = 0.4;
  options.space.ranks = {4, 16, 32};
  const auto flat = [](const Arm& arm) {
    return 0.001 * std::log2(static_cast<double>(arm.rank));
  };
  // The coordinator always tells a known part with the pace (its time
  // term); here it is nothing.
  const KnownReward zero = [](const Arm&) { return 0.0; };
  const WithinPace everything = [](const Arm&) { return true; };
  for (const bool ties : {false, true}) {
    options.capacity_ties = ties;
    auto bandit = CreateBandit(options);
    ASSERT_TRUE(bandit.ok());
    std::mt19937_64 rng(7);
    std::normal_distribution<double> noise(0.0, 0.01);
    int top = 0;
    for (int t = 0; t < 30; ++t) {
      const Arm arm = (*bandit)->Choose(rng, zero, everything);
      if (t >= 10 && arm.rank == 32 && arm.prune_ratio < 0.1) ++top;
      (*bandit)->Update(arm, flat(arm) + noise(rng));
    }
    if (ties) {
      EXPECT_EQ(top, 20);
    } else {
      EXPECT_LT(top, 15) << "the ties decide nothing: the setup is vacuous";
    }
  }
  options.capacity_ties = true;
  auto slow = CreateBandit(options);
  ASSERT_TRUE(slow.ok());
  std::mt19937_64 rng(7);
  const WithinPace pruned_low_rank = [](const Arm& arm) {
    return arm.rank <= 16 && arm.prune_ratio >= 0.2;
  };
  for (int t = 0; t < 30; ++t) {
    const Arm arm = (*slow)->Choose(rng, zero, pruned_low_rank);
    if (t >= 10) {
      EXPECT_EQ(arm.rank, 16) << t;
      EXPECT_GE(arm.prune_ratio, 0.2) << t;
    }
    (*slow)->Update(arm, flat(arm));
  }
}

// The best arm moves after three quarters of the plays: the discounted
// learners follow within the last quarter; UCB1 clings to the old optimum.
double DriftingReward(const Arm& arm, int t, int plays) {
  const double peak = t < plays * 3 / 4 ? 0.0 : 0.6;
  return 0.5 - 2.0 * (arm.prune_ratio - peak) * (arm.prune_ratio - peak) -
         0.15 * std::abs(std::log2(static_cast<double>(arm.rank)) - 2.0);
}

TEST(DriftTest, DiscountedLearnersFollowAMovingOptimum) {
  BanditOptions options;
  options.kind = BanditKind::kUcb1;
  const double stuck = Simulate(options, 2000, 11, DriftingReward).late_regret;
  for (BanditKind kind :
       {BanditKind::kDiscountedUcb, BanditKind::kSlidingWindowUcb,
        BanditKind::kFedSpine}) {
    options.kind = kind;
    options.discount = 0.99;
    options.window = 100;
    const RunResult r = Simulate(options, 2000, 11, DriftingReward);
    EXPECT_LT(r.late_regret, 0.6 * stuck) << BanditKindName(kind);
  }
}

TEST(BanditTest, DeterministicAndRebuiltByReplay) {
  BanditOptions options;
  for (BanditKind kind :
       {BanditKind::kFedSpine, BanditKind::kUcb1, BanditKind::kThompson,
        BanditKind::kExp3, BanditKind::kRandom}) {
    options.kind = kind;
    auto a = CreateBandit(options);
    ASSERT_TRUE(a.ok());
    std::vector<std::pair<Arm, double>> history;
    std::mt19937_64 rng(5);
    for (int t = 0; t < 60; ++t) {
      const Arm arm = (*a)->Choose(rng);
      const double reward = MeanReward(arm) + 0.01 * (t % 7);
      (*a)->Update(arm, reward);
      history.emplace_back(arm, reward);
    }
    auto b = CreateBandit(options);
    ASSERT_TRUE(b.ok());
    for (const auto& [arm, reward] : history) (*b)->Update(arm, reward);
    for (int t = 0; t < 20; ++t) {
      std::mt19937_64 ra(100 + t), rb(100 + t);
      const Arm x = (*a)->Choose(ra);
      const Arm y = (*b)->Choose(rb);
      EXPECT_EQ(x, y) << BanditKindName(kind) << " " << ArmToString(x) << " vs "
                      << ArmToString(y);
    }
  }
}

TEST(BanditTest, FixedOracleAndRandom) {
  BanditOptions options;
  options.kind = BanditKind::kFixed;
  options.fixed_arm = Arm{0.25, 8};
  std::mt19937_64 rng(1);
  EXPECT_EQ((*CreateBandit(options))->Choose(rng), (Arm{0.25, 8}));

  options.kind = BanditKind::kOracle;
  options.oracle = MeanReward;
  auto oracle = CreateBandit(options);
  ASSERT_TRUE(oracle.ok());
  const Arm best = (*oracle)->Choose(rng);
  EXPECT_NEAR(best.prune_ratio, 0.4, 1e-9);
  EXPECT_EQ(best.rank, 4);

  options.kind = BanditKind::kRandom;
  auto random = CreateBandit(options);
  std::set<std::pair<double, int64_t>> seen;
  for (int i = 0; i < 400; ++i) {
    const Arm arm = (*random)->Choose(rng);
    seen.insert({arm.prune_ratio, arm.rank});
  }
  EXPECT_EQ(seen.size(), GridArms(options.space).size());
}

TEST(BanditTest, NonFiniteRewardsAreIgnored) {
  BanditOptions options;
  options.kind = BanditKind::kUcb1;
  auto a = CreateBandit(options);
  auto b = CreateBandit(options);
  std::mt19937_64 r1(2), r2(2);
  (*a)->Update(Arm{0.2, 4}, NAN);
  (*a)->Update(Arm{0.2, 4}, INFINITY);
  for (int i = 0; i < 10; ++i) EXPECT_EQ((*a)->Choose(r1), (*b)->Choose(r2));
}

TEST(BanditTest, RejectsBadOptions) {
  BanditOptions options;
  options.space.max_ratio = 1.0;
  EXPECT_EQ(CreateBandit(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options = {};
  options.space.ranks = {8, 4};
  EXPECT_FALSE(CreateBandit(options).ok());
  options = {};
  options.discount = 0;
  EXPECT_FALSE(CreateBandit(options).ok());
  options = {};
  options.ramp_plays = -1;
  EXPECT_FALSE(CreateBandit(options).ok());
  options = {};
  options.max_depth = 21;
  EXPECT_FALSE(CreateBandit(options).ok());
  options = {};
  options.kind = BanditKind::kOracle;
  EXPECT_FALSE(CreateBandit(options).ok());
  options = {};
  options.kind = BanditKind::kFixed;
  options.fixed_arm = Arm{0.2, 0};
  EXPECT_FALSE(CreateBandit(options).ok());
  EXPECT_FALSE(ParseBanditKind("ucb2").ok());
  for (const char* name :
       {"fedspine", "ucb1", "discounted_ucb", "sliding_window_ucb", "thompson",
        "exp3", "fixed", "random", "oracle"}) {
    auto kind = ParseBanditKind(name);
    ASSERT_TRUE(kind.ok()) << name;
    EXPECT_EQ(BanditKindName(*kind), name);
  }
}

// The prune-and-tune pace: no kind plays a ratio above the cap, each
// starts on the least pruned arms, and the whole range opens once the
// device has played ramp_plays rounds. Rewards favour heavy pruning, so a
// bandit that ignored the cap would show it.
class RampTest : public ::testing::TestWithParam<BanditKind> {};

TEST_P(RampTest, RatioNeverExceedsTheCapAndTheRangeOpensInTime) {
  BanditOptions options;
  options.kind = GetParam();
  options.ramp_plays = 8;
  options.space.min_ratio = 0.0;
  options.space.max_ratio = 0.6;
  options.space.ratio_steps = 4;  // 0, 0.2, 0.4, 0.6.
  if (options.kind == BanditKind::kOracle) {
    options.oracle = [](const Arm& arm) { return arm.prune_ratio; };
  }
  auto bandit = CreateBandit(options);
  ASSERT_TRUE(bandit.ok()) << bandit.status();
  std::mt19937_64 rng(7);
  double top_late = 0;
  for (int play = 0; play < 40; ++play) {
    const Arm arm = (*bandit)->Choose(rng);
    const double cap = 0.6 * std::min(1.0, play / 8.0);
    ASSERT_LE(arm.prune_ratio, cap + 1e-9) << "play " << play;
    if (play == 0) {
      EXPECT_EQ(arm.prune_ratio, 0.0);
    }
    if (play >= 8) top_late = std::max(top_late, arm.prune_ratio);
    (*bandit)->Update(arm, arm.prune_ratio);  // More pruning pays.
  }
  EXPECT_GT(top_late, 0.45) << "the range never opened";
}

INSTANTIATE_TEST_SUITE_P(
    AllAdaptive, RampTest,
    ::testing::Values(BanditKind::kFedSpine, BanditKind::kUcb1,
                      BanditKind::kDiscountedUcb, BanditKind::kSlidingWindowUcb,
                      BanditKind::kThompson, BanditKind::kExp3,
                      BanditKind::kRandom, BanditKind::kOracle),
    [](const auto& info) { return BanditKindName(info.param); });

// A known reward: ratios above 0.25 cost 1 (as removing one head of four
// costs the global model); below, pruning pays a little (the time it
// saves), which the bandit must learn. Bandits that take the known part
// play the costly ratios rarely, FedSpine never.
class KnownRewardTest : public ::testing::TestWithParam<BanditKind> {};

TEST_P(KnownRewardTest, CostlyRatiosAreAvoidedAndFreePruningIsLearnt) {
  BanditOptions options;
  options.kind = GetParam();
  options.space.ratio_steps = 4;  // 0, 0.2, 0.4, 0.6.
  const KnownReward known = [](const Arm& arm) {
    return arm.prune_ratio > 0.25 ? -1.0 : 0.0;
  };
  const auto run = [&](bool use_known, double* late_mean_ratio) {
    auto bandit = CreateBandit(options);
    EXPECT_TRUE(bandit.ok()) << bandit.status();
    std::mt19937_64 rng(11);
    std::normal_distribution<double> noise(0.0, 0.05);
    int costly = 0, late_costly = 0;
    *late_mean_ratio = 0;
    const std::vector<double> candidates =
        CandidateRatios(options, options.space.max_ratio);
    for (int play = 0; play < 80; ++play) {
      const Arm arm =
          use_known ? (*bandit)->Choose(rng, known) : (*bandit)->Choose(rng);
      if (use_known) {  // Exactly: the coordinator measures these.
        EXPECT_NE(
            std::find(candidates.begin(), candidates.end(), arm.prune_ratio),
            candidates.end())
            << arm.prune_ratio << " is not a candidate ratio";
      }
      const double learnt = 0.8 * arm.prune_ratio + noise(rng);
      // Without the known part, the bandit is fed all of the reward.
      (*bandit)->Update(arm, use_known ? learnt : learnt + known(arm));
      costly += arm.prune_ratio > 0.25;
      if (play >= 40) {
        late_costly += arm.prune_ratio > 0.25;
        *late_mean_ratio += arm.prune_ratio / 40;
      }
    }
    return std::make_pair(costly, late_costly);
  };
  double with_ratio = 0, without_ratio = 0;
  const auto [with_costly, with_late] = run(true, &with_ratio);
  const auto [without_costly, without_late] = run(false, &without_ratio);
  EXPECT_LT(with_costly, without_costly);
  EXPECT_LE(with_late, 4) << "of 40 late plays";
  EXPECT_GT(with_ratio, 0.1) << "free pruning was not taken";
  if (GetParam() == BanditKind::kFedSpine) {
    // Inside a cell it plays only the best known points: it never has to
    // try a costly ratio to learn that it costs.
    EXPECT_EQ(with_costly, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Learning, KnownRewardTest,
    ::testing::Values(BanditKind::kFedSpine, BanditKind::kUcb1,
                      BanditKind::kDiscountedUcb, BanditKind::kSlidingWindowUcb,
                      BanditKind::kThompson),
    [](const auto& info) { return BanditKindName(info.param); });

TEST(BanditTest, CandidateRatios) {
  BanditOptions options;
  options.space.min_ratio = 0.1;
  options.space.max_ratio = 0.5;
  options.space.ratio_steps = 3;
  options.max_depth = 1;
  const std::vector<double> fedspine = CandidateRatios(options, 0.5);
  ASSERT_EQ(fedspine.size(), 9u);  // 8 steps: a quarter of a half.
  EXPECT_EQ(fedspine.front(), 0.1);
  EXPECT_NEAR(fedspine[1], 0.15, 1e-12);
  EXPECT_NEAR(fedspine.back(), 0.5, 1e-12);
  options.kind = BanditKind::kUcb1;
  const std::vector<double> grid = CandidateRatios(options, 0.5);
  ASSERT_EQ(grid.size(), 3u);
  EXPECT_NEAR(grid[1], 0.3, 1e-12);
  // The pace's cap: only what may be played now (the least pruned always).
  EXPECT_EQ(CandidateRatios(options, 0.3).size(), 2u);
  EXPECT_EQ(CandidateRatios(options, 0.0), std::vector<double>{0.1});
  options.kind = BanditKind::kFedSpine;
  EXPECT_EQ(CandidateRatios(options, 0.2).size(), 3u);  // 0.1, 0.15, 0.2.
  options.kind = BanditKind::kFixed;
  options.fixed_arm = Arm{0.25, 4};
  // The fixed arm keeps to the pace too.
  EXPECT_EQ(CandidateRatios(options, 0.1), std::vector<double>{0.1});
  EXPECT_EQ(CandidateRatios(options, 0.5), std::vector<double>{0.25});
}

TEST(BanditTest, GridArms) {
  ArmSpace space;
  space.min_ratio = 0.1;
  space.max_ratio = 0.5;
  space.ratio_steps = 3;
  space.ranks = {4, 8};
  const std::vector<Arm> arms = GridArms(space);
  ASSERT_EQ(arms.size(), 6u);
  EXPECT_EQ(arms[0], (Arm{0.1, 4}));
  EXPECT_NEAR(arms[3].prune_ratio, 0.3, 1e-12);
  EXPECT_EQ(arms[3].rank, 8);
  EXPECT_EQ(arms[5], (Arm{0.5, 8}));
}

}  // namespace
}  // namespace fedge::strategies
