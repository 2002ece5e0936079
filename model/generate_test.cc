#include "model/generate.h"

#include "gtest/gtest.h"
#include <torch/types.h>

#include "model/llama.h"
#include "model/trainer.h"
#include "model/vit.h"

namespace fedge::model {
namespace {

Llama Tiny() {
  LlamaConfig config;
  config.vocab_size = 16;
  config.hidden_size = 16;
  config.head_dim = 8;
  config.max_position_embeddings = 12;
  config.layers = {{2, 2, 32}};
  return *CreateLlama(config);
}

// Greedy decoding is the argmax of the model on the sequence so far, step
// by step: checked against forward passes made here.
TEST(GenerateTest, GreedyFollowsTheArgmaxOfEachPrefix) {
  torch::manual_seed(1);
  Llama llama = Tiny();
  GenerateOptions options;
  options.max_new_tokens = 5;
  absl::StatusOr<std::vector<int64_t>> out = Generate(*llama, {3, 7}, options);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 5u);
  std::vector<int64_t> ids = {3, 7};
  torch::NoGradGuard no_grad;
  llama->eval();
  for (int64_t id : *out) {
    const at::Tensor logits =
        llama->forward(torch::tensor(ids, torch::kLong).unsqueeze(0));
    EXPECT_EQ(id, logits[0][-1].argmax().item<int64_t>());
    ids.push_back(id);
  }
}

// A model trained to repeat "1 2 3 4 ..." continues the pattern and stops
// at the stop id; the context bounds the length.
TEST(GenerateTest, ATrainedModelContinuesItsPatternAndStops) {
  torch::manual_seed(2);
  Llama llama = Tiny();
  Dataset data;
  data.inputs = (torch::arange(11, torch::kLong).repeat({64, 1}) % 6) + 1;
  data.targets = (torch::arange(1, 12, torch::kLong).repeat({64, 1}) % 6) + 1;
  data.num_classes = 16;
  TrainOptions train;
  train.epochs = 30;
  train.batch_size = 16;
  train.learning_rate = 1e-2;
  ASSERT_TRUE(Train(*llama, data, train).ok());
  GenerateOptions options;
  options.max_new_tokens = 20;
  options.stop_id = 6;
  absl::StatusOr<std::vector<int64_t>> out = Generate(*llama, {1, 2}, options);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, (std::vector<int64_t>{3, 4, 5, 6}));
  options.stop_id = -1;
  out = Generate(*llama, {1, 2}, options);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->size(), 10u);  // Context of 12, prompt of 2.
  // Sampling at a low temperature agrees with greedy; it is seeded.
  options.temperature = 0.01;
  options.top_k = 3;
  absl::StatusOr<std::vector<int64_t>> sampled =
      Generate(*llama, {1, 2}, options);
  ASSERT_TRUE(sampled.ok());
  EXPECT_EQ(*sampled, *out);
}

TEST(GenerateTest, BadInputIsRefused) {
  Llama llama = Tiny();
  EXPECT_FALSE(Generate(*llama, {}, {}).ok());
  EXPECT_FALSE(Generate(*llama, {99}, {}).ok());  // Outside the vocabulary.
  GenerateOptions bad;
  bad.temperature = -1;
  EXPECT_FALSE(Generate(*llama, {1}, bad).ok());
  VitConfig vit;
  EXPECT_FALSE(Generate(**CreateVit(vit), {1}, {}).ok());
}

}  // namespace
}  // namespace fedge::model
