#include "strategies/server_optimizer.h"

#include "gtest/gtest.h"
#include <torch/torch.h>

namespace fedge::strategies {
namespace {

NamedTensors One(const std::string& name, const at::Tensor& t) {
  NamedTensors n;
  n.insert(name, t);
  return n;
}

TEST(ServerOptimizerTest, NoneIsFedAvg) {
  const NamedTensors current = One("w", torch::zeros({2}));
  const NamedTensors mean = One("w", torch::tensor({1.0f, -2.0f}));
  absl::StatusOr<ServerStepResult> r =
      ServerStep(ServerOptimizerOptions(), current, mean, NamedTensors());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(torch::equal(r->next["w"], mean["w"]));
  EXPECT_TRUE(r->state.is_empty());
}

// Worked by hand: deltas 1 then 1 with momentum 0.5 and learning rate 2:
// m = 1, step 2; then m = 0.5 + 1 = 1.5, step 3.
TEST(ServerOptimizerTest, MomentumAddsUpConsistentDirections) {
  ServerOptimizerOptions o;
  o.kind = ServerOptimizerKind::kMomentum;
  o.momentum = 0.5;
  o.learning_rate = 2;
  NamedTensors current = One("w", torch::zeros({1}));
  absl::StatusOr<ServerStepResult> r =
      ServerStep(o, current, One("w", torch::ones({1})), NamedTensors());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FLOAT_EQ(r->next["w"].item<float>(), 2);
  EXPECT_FLOAT_EQ(r->state["server_m.w"].item<float>(), 1);
  current = r->next;
  r = ServerStep(o, current, One("w", torch::full({1}, 3.0f)), r->state);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FLOAT_EQ(r->state["server_m.w"].item<float>(), 1.5);
  EXPECT_FLOAT_EQ(r->next["w"].item<float>(), 5);
  EXPECT_EQ(current["w"].item<float>(), 2);  // Not changed in place.
}

// FedAdam's first step from zero moments: m = (1-b1) d, v = (1-b2) d^2, so
// the step is lr (1-b1) |d| / (sqrt(1-b2) |d| + eps) in d's direction.
TEST(ServerOptimizerTest, AdamMatchesItsFormula) {
  ServerOptimizerOptions o;
  o.kind = ServerOptimizerKind::kAdam;
  o.learning_rate = 0.1;
  o.momentum = 0.3;  // Momentum's factor: FedAdam ignores it.
  o.beta1 = 0.9;
  o.beta2 = 0.99;
  o.epsilon = 1e-3;
  absl::StatusOr<ServerStepResult> r =
      ServerStep(o, One("w", torch::zeros({2})),
                 One("w", torch::tensor({0.5f, -0.02f})), NamedTensors());
  ASSERT_TRUE(r.ok()) << r.status();
  for (int i = 0; i < 2; ++i) {
    const double d = i == 0 ? 0.5 : -0.02;
    const double expected = 0.1 * 0.1 * d / (std::sqrt(0.01 * d * d) + 1e-3);
    EXPECT_NEAR(r->next["w"][i].item<float>(), expected, 1e-6);
  }
  EXPECT_EQ(r->state.size(), 2u);
}

TEST(ServerOptimizerTest, BadOptionsShapesAndStatesAreRefused) {
  ServerOptimizerOptions o;
  o.kind = ServerOptimizerKind::kMomentum;
  const NamedTensors current = One("w", torch::zeros({2}));
  o.momentum = 1;
  EXPECT_FALSE(ServerStep(o, current, current, NamedTensors()).ok());
  o.momentum = 0.9;
  o.beta1 = 1;
  EXPECT_FALSE(ServerStep(o, current, current, NamedTensors()).ok());
  o.beta1 = 0.9;
  o.learning_rate = 0;
  EXPECT_FALSE(ServerStep(o, current, current, NamedTensors()).ok());
  o.learning_rate = 1;
  EXPECT_FALSE(
      ServerStep(o, current, One("w", torch::zeros({3})), NamedTensors()).ok());
  EXPECT_FALSE(
      ServerStep(o, current, One("v", torch::zeros({2})), NamedTensors()).ok());
  // A momentum of the wrong shape, or one the optimizer does not keep.
  EXPECT_FALSE(
      ServerStep(o, current, current, One("server_m.w", torch::zeros({3})))
          .ok());
  EXPECT_FALSE(
      ValidateServerState(o, current, One("server_v.w", torch::zeros({2})))
          .ok());
  EXPECT_FALSE(
      ServerStep(o, current, current, One("server_m.w", torch::full({2}, NAN)))
          .ok());
  // A step that overflows is refused, not installed.
  o.learning_rate = 1e38;
  EXPECT_FALSE(
      ServerStep(o, current, One("w", torch::full({2}, 1e30f)), NamedTensors())
          .ok());
  EXPECT_EQ(ParseServerOptimizerKind("adam").value(),
            ServerOptimizerKind::kAdam);
  EXPECT_FALSE(ParseServerOptimizerKind("sgd").ok());
}

TEST(ServerOptimizerTest, DescribeNamesTheStepAndItsSettings) {
  ServerOptimizerOptions o;
  EXPECT_EQ(Describe(o), "FedAvg");
  o.kind = ServerOptimizerKind::kMomentum;
  o.momentum = 0.5;
  EXPECT_EQ(Describe(o), "FedAvgM (momentum 0.5, server lr 1)");
  o.kind = ServerOptimizerKind::kAdam;
  o.learning_rate = 0.01;
  EXPECT_EQ(Describe(o),
            "FedAdam (server lr 0.01, beta1 0.9, beta2 0.99, tau 0.001)");
}

}  // namespace
}  // namespace fedge::strategies
