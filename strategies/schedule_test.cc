#include "strategies/schedule.h"

#include "gtest/gtest.h"
#include <torch/types.h>

#include "lora/lora.h"
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
  EXPECT_NEAR(RatioToTarget(0.2, 0.6), 0.5, 1e-12);
  EXPECT_NEAR(CombinedRatio(0.2, RatioToTarget(0.2, 0.45)), 0.45, 1e-12);
  EXPECT_EQ(RatioToTarget(0.5, 0.5), 0.0);
  EXPECT_EQ(RatioToTarget(0.5, 0.3), 0.0);
  EXPECT_EQ(RatioToTarget(0.0, 0.0), 0.0);
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

}  // namespace
}  // namespace fedge::strategies
