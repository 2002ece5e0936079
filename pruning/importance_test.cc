#include "pruning/importance.h"

#include "gtest/gtest.h"
#include <torch/types.h>

#include "lora/lora.h"
#include "model/llama.h"
#include "model/trainer.h"
#include "model/vit.h"
#include "tests/testing/tiny_models.h"

namespace fedge::pruning {
namespace {

model::Vit SmallVit() { return testing::TinyVit(/*mlp_hidden=*/16); }

TEST(ImportanceTest, MagnitudeKeepsTheHeavyHeadsAndChannels) {
  torch::manual_seed(0);
  model::Vit vit = SmallVit();
  {
    torch::NoGradGuard no_grad;
    auto params = vit->named_parameters();
    params["layers.0.self_attn.q_proj.weight"].narrow(0, 16, 8).mul_(
        10);  // Head 2.
    params["layers.0.self_attn.o_proj.weight"].narrow(1, 16, 8).mul_(10);
    params["layers.1.mlp.down_proj.weight"].narrow(1, 7, 1).mul_(
        50);  // Channel 7.
    params["layers.1.mlp.up_proj.weight"].narrow(0, 7, 1).mul_(50);
  }

  absl::StatusOr<PruningPlan> plan =
      PlanFromScores(*vit, MagnitudeScores(*vit), 0.75);

  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->blocks[0].heads, (std::vector<int64_t>{2}));
  EXPECT_EQ(plan->blocks[0].kv_heads, (std::vector<int64_t>{2}));
  EXPECT_EQ(plan->blocks[1].channels.size(), 4u);
  EXPECT_TRUE(std::count(plan->blocks[1].channels.begin(),
                         plan->blocks[1].channels.end(), 7));
}

TEST(ImportanceTest, LoraGradientMatchesNaiveFormula) {
  torch::manual_seed(1);
  model::Vit vit = SmallVit();
  lora::LoraOptions options;
  options.rank = 2;
  options.target_modules = {"q_proj"};
  ASSERT_TRUE(lora::Inject(*vit, options).ok());
  const std::vector<lora::AdaptedLinear> adapted = lora::NamedAdapters(*vit);
  {
    torch::NoGradGuard no_grad;
    for (const lora::AdaptedLinear& a : adapted) {
      a.adapter->lora_B.normal_();
      a.adapter->lora_A.mutable_grad() = torch::randn_like(a.adapter->lora_A);
      a.adapter->lora_B.mutable_grad() = torch::randn_like(a.adapter->lora_B);
    }
  }
  auto scorer = LoraGradientScorer::Create(vit.get());
  ASSERT_TRUE(scorer.ok()) << scorer.status();

  (*scorer)->Update();

  // Naive: per element G = dB A + B dA - dB dA, |G * (W + s B A)|, summed per
  // head's 8 rows, then L2-normalised over heads.
  const lora::AdaptedLinear& q = adapted.front();  // layers.0.self_attn.q_proj
  const at::Tensor a = q.adapter->lora_A.detach().to(torch::kFloat64);
  const at::Tensor b = q.adapter->lora_B.detach().to(torch::kFloat64);
  const at::Tensor da = q.adapter->lora_A.grad().to(torch::kFloat64);
  const at::Tensor db = q.adapter->lora_B.grad().to(torch::kFloat64);
  at::Tensor expected = torch::zeros({4}, torch::kFloat64);
  const at::Tensor w = q.linear->weight.detach().to(torch::kFloat64);
  for (int64_t i = 0; i < 32; ++i) {
    for (int64_t j = 0; j < 32; ++j) {
      double g = 0, eff = w[i][j].item<double>();
      for (int64_t k = 0; k < 2; ++k) {
        g += db[i][k].item<double>() * a[k][j].item<double>() +
             b[i][k].item<double>() * da[k][j].item<double>() -
             db[i][k].item<double>() * da[k][j].item<double>();
        eff += q.adapter->scale() * b[i][k].item<double>() *
               a[k][j].item<double>();
      }
      expected[i / 8] += std::abs(g * eff);
    }
  }
  expected /= expected.norm();
  EXPECT_TRUE(
      torch::allclose((*scorer)->scores().heads[0], expected, 1e-4, 1e-6))
      << (*scorer)->scores().heads[0] << expected;
  EXPECT_EQ((*scorer)->scores().channels[0].abs().sum().item<double>(), 0.0);
}

TEST(ImportanceTest, LoraGradientAccumulatesDuringTraining) {
  torch::manual_seed(2);
  model::Vit vit = SmallVit();
  lora::LoraOptions options;
  options.target_modules = {"q_proj", "v_proj", "up_proj", "down_proj"};
  ASSERT_TRUE(lora::Inject(*vit, options).ok());
  auto scorer = *LoraGradientScorer::Create(vit.get());
  model::Dataset data;
  data.inputs = torch::randn({64, 1, 28, 28});
  data.targets = torch::randint(0, 10, {64}, torch::kLong);
  data.num_classes = 10;
  model::TrainOptions train;
  train.max_steps = 4;
  train.batch_size = 16;
  train.after_backward = [&] { scorer->Update(); };

  ASSERT_TRUE(model::Train(*vit, data, train).ok());

  EXPECT_EQ(scorer->updates(), 4);
  for (size_t b = 0; b < 2; ++b) {
    EXPECT_GT(scorer->scores().heads[b].min().item<double>(), 0.0);
    EXPECT_GT(scorer->scores().channels[b].sum().item<double>(), 0.0);
  }
  absl::StatusOr<PruningPlan> plan =
      PlanFromScores(*vit, scorer->scores(), 0.5);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->blocks[1].heads.size(), 2u);
  EXPECT_EQ(plan->blocks[1].channels.size(), 8u);
}

TEST(ImportanceTest, ScorerNeedsAdapters) {
  model::Vit vit = SmallVit();
  EXPECT_EQ(LoraGradientScorer::Create(vit.get()).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// One block of 4 query heads in 2 KV groups and `channels` MLP channels,
// with head scores favouring group 1 and channel scores rising with the
// index.
struct GqaBlock {
  model::Llama llama;
  GroupScores scores;
};
GqaBlock MakeGqaBlock(int64_t channels) {
  model::LlamaConfig config;
  config.hidden_size = 16;
  config.head_dim = 4;
  config.layers = {{4, 2, channels}};
  GqaBlock block{*model::CreateLlama(config), {}};
  block.scores.heads = {torch::tensor({0.1, 0.2, 0.9, 0.0}, torch::kFloat64)};
  block.scores.channels = {torch::arange(channels, torch::kFloat64)};
  return block;
}

TEST(ImportanceTest, PlanKeepsWholeKvGroupsAndValidatesRatio) {
  auto [llama, scores] = MakeGqaBlock(8);

  absl::StatusOr<PruningPlan> plan = PlanFromScores(*llama, scores, 0.5);

  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->blocks[0].kv_heads, (std::vector<int64_t>{1}));
  EXPECT_EQ(plan->blocks[0].heads, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(plan->blocks[0].channels, (std::vector<int64_t>{4, 5, 6, 7}));
  EXPECT_TRUE(ValidatePlan(*llama, *plan).ok());
  EXPECT_FALSE(PlanFromScores(*llama, scores, 1.0).ok());
  EXPECT_FALSE(PlanFromScores(*llama, scores, -0.1).ok());
  scores.channels = {torch::zeros({3}, torch::kFloat64)};
  EXPECT_FALSE(PlanFromScores(*llama, scores, 0.5).ok());
}

TEST(ImportanceTest, PlanNeverRemovesMoreThanTheRatio) {
  const auto [llama, scores] = MakeGqaBlock(5);

  // Ratio 0.3 of two KV groups would be 0.6 of a group: none goes. Of five
  // channels, 1.5 may go: one does.
  absl::StatusOr<PruningPlan> plan = PlanFromScores(*llama, scores, 0.3);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->blocks[0].kv_heads, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(plan->blocks[0].channels, (std::vector<int64_t>{1, 2, 3, 4}));

  // Exactly representable fractions are kept exactly: 0.2 of five is one.
  plan = PlanFromScores(*llama, scores, 0.2);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->blocks[0].channels.size(), 4u);
}

}  // namespace
}  // namespace fedge::pruning
