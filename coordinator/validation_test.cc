#include "coordinator/validation.h"

#include <cmath>

#include "gtest/gtest.h"
#include <torch/torch.h>

#include "model/llama.h"
#include "model/trainer.h"
#include "tests/testing/tiny_models.h"

namespace fedge::coordinator {
namespace {

TEST(ValidationLossTest, IsTheModelsMeanLossOrAbsentWithoutData) {
  torch::manual_seed(0);
  model::Dataset data;
  data.inputs = torch::randn({24, 1, 28, 28});
  data.targets = torch::randint(0, 10, {24}, torch::kLong);
  data.num_classes = 10;
  model::Vit vit = testing::TinyVit(16);
  const ValidationLossFn loss = ValidationLoss(&data, 5);  // Ragged batches.
  ASSERT_TRUE(loss);
  absl::StatusOr<double> l = loss(*vit, nullptr);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_TRUE(std::isfinite(*l));
  EXPECT_NEAR(*l, model::Evaluate(*vit, data)->loss, 1e-6);
  const model::Dataset empty;
  EXPECT_FALSE(ValidationLoss(&empty));
}

// Language models mask targets: batch by batch, the mean stays the one per
// scored target, not a mean of the batches' means.
TEST(ValidationLossTest, WeighsBatchesByTheTargetsTheyScore) {
  torch::manual_seed(0);
  model::LlamaConfig config;
  config.vocab_size = 16;
  config.hidden_size = 16;
  config.head_dim = 8;
  config.max_position_embeddings = 8;
  config.layers = {{2, 2, 32}};
  model::Llama llama = *model::CreateLlama(config);
  model::Dataset data;
  data.inputs = torch::randint(0, 16, {6, 8}, torch::kLong);
  data.targets = torch::randint(0, 16, {6, 8}, torch::kLong);
  data.num_classes = 16;
  // The first two records score one target each, the rest all eight.
  data.targets.index_put_(
      {torch::indexing::Slice(0, 2), torch::indexing::Slice(0, 7)},
      model::kIgnoreTarget);
  absl::StatusOr<double> l = ValidationLoss(&data, 2)(*llama, nullptr);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_NEAR(*l, model::Evaluate(*llama, data)->loss, 1e-5);
}

TEST(ValidationLossTest, StopsBetweenBatchesWhenAsked) {
  model::Dataset data;
  data.inputs = torch::randn({24, 1, 28, 28});
  data.targets = torch::randint(0, 10, {24}, torch::kLong);
  data.num_classes = 10;
  model::Vit vit = testing::TinyVit(16);
  int asked = 0;
  absl::StatusOr<double> l =
      ValidationLoss(&data, 8)(*vit, [&asked] { return ++asked == 2; });
  EXPECT_TRUE(absl::IsCancelled(l.status())) << l.status();
  EXPECT_EQ(asked, 2);  // Once per batch until it answered true.
}

}  // namespace
}  // namespace fedge::coordinator
