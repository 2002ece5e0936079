#include "strategies/schedule.h"

#include "gtest/gtest.h"
#include <torch/types.h>

#include "lora/lora.h"
#include "strategies/reward.h"
#include "tests/testing/tiny_models.h"

namespace fedge::strategies {
namespace {

TEST(SparsityScheduleTest, RisesCubicallyToTheTarget) {
  SparsitySchedule s{0.5, 2, 12};
  ASSERT_TRUE(s.Validate().ok());
  EXPECT_EQ(s.Ratio(0), 0.0);
  EXPECT_EQ(s.Ratio(2), 0.0);
  EXPECT_NEAR(s.Ratio(7), 0.5 * (1 - 0.125), 1e-12);
  EXPECT_EQ(s.Ratio(12), 0.5);
  EXPECT_EQ(s.Ratio(100), 0.5);
  for (int r = 2; r < 12; ++r) EXPECT_LT(s.Ratio(r), s.Ratio(r + 1));
  EXPECT_FALSE((SparsitySchedule{1.0, 0, 10}).Validate().ok());
  EXPECT_FALSE((SparsitySchedule{0.3, 5, 5}).Validate().ok());
  EXPECT_TRUE((SparsitySchedule{0.0, 5, 5}).Validate().ok());
  EXPECT_NEAR(CombinedRatio(0.2, 0.5), 0.6, 1e-12);
}

TEST(FedProxTest, AddsTheProximalGradient) {
  model::Vit vit = testing::TinyVit(16);
  lora::LoraOptions lora;
  ASSERT_TRUE(lora::Inject(*vit, lora).ok());
  auto hook = FedProxHook(*vit, 0.5);
  ASSERT_TRUE(hook.ok()) << hook.status();
  at::Tensor p;
  for (const at::Tensor& t : vit->parameters()) {
    if (t.requires_grad()) {
      p = t;
      break;
    }
  }
  {
    torch::NoGradGuard no_grad;
    p.add_(1.0);  // Drift by 1 everywhere.
  }
  p.mutable_grad() = torch::zeros_like(p);
  (*hook)();
  EXPECT_TRUE(torch::allclose(p.grad(), torch::full_like(p, 0.5)));
  EXPECT_FALSE(FedProxHook(*vit, -1).ok());
}

TEST(RewardTest, TermsAndWeights) {
  const RewardTerms t =
      MakeRewardTerms(2.0, 1.5, 0.3, 0.6, 4.0, 2.0, 30, 20, false);
  EXPECT_DOUBLE_EQ(t.loss_improvement, 0.25);
  EXPECT_DOUBLE_EQ(t.pruning_progress, 0.5);
  EXPECT_DOUBLE_EQ(t.update_importance, 2.0);
  EXPECT_DOUBLE_EQ(t.time_ratio, 1.5);
  EXPECT_DOUBLE_EQ(Reward(t, {1, 1, 1, 1}), 0.25 + 0.5 + 2.0 - 1.5);
  const RewardTerms late =
      MakeRewardTerms(2.0, NAN, 0.3, 0.6, 1, 0, 30, 20, true);
  EXPECT_EQ(late.loss_improvement, 0);
  EXPECT_EQ(late.time_ratio, 4.0);
  EXPECT_EQ(late.update_importance, 1.0);
  EXPECT_EQ(Median({3, 1, 2}), 2);
  EXPECT_EQ(Median({4, 1, 2, 3}), 2.5);
  EXPECT_EQ(Median({}), 0);
}

}  // namespace
}  // namespace fedge::strategies
