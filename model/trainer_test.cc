#include "model/trainer.h"

#include "gtest/gtest.h"
#include <torch/types.h>

#include "model/llama.h"
#include "model/vit.h"

namespace fedge::model {
namespace {

// Images whose class is which quadrant is bright: learnable in a few steps.
Dataset QuadrantImages(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  Dataset data;
  data.inputs = torch::randn({n, 1, 28, 28}) * 0.1;
  data.targets = torch::randint(0, 4, {n}, torch::kLong);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t q = data.targets[i].item<int64_t>();
    data.inputs[i][0].narrow(0, (q / 2) * 14, 14).narrow(1, (q % 2) * 14, 14) +=
        1.0;
  }
  data.num_classes = 4;
  return data;
}

VitConfig TinyVit() {
  VitConfig config;
  config.dim = 16;
  config.head_dim = 8;
  config.num_classes = 4;
  config.layers = {{2, 2, 32}};
  return config;
}

TEST(LossWindowsTest, FirstAndLastTenthOfTheStepsRun) {
  LossWindows forty(40);
  for (int i = 0; i < 40; ++i) forty.Add(i);
  EXPECT_DOUBLE_EQ(forty.first(), 1.5);  // Steps 0-3.
  EXPECT_DOUBLE_EQ(forty.last(), 37.5);  // Steps 36-39.
  LossWindows five(5);
  EXPECT_EQ(five.first(), 0);
  for (int i = 0; i < 5; ++i) five.Add(i);
  EXPECT_DOUBLE_EQ(five.first(), 0);
  EXPECT_DOUBLE_EQ(five.last(), 4);
}

// A round stops long before its shard's epoch ends (max_steps): its first
// and final losses must still be its own first and last steps', not one
// window that covers the whole run twice.
TEST(TrainerTest, LossWindowsOfARunCutByMaxSteps) {
  torch::manual_seed(0);
  Vit vit = *CreateVit(TinyVit());
  TrainOptions options;
  options.batch_size = 8;
  options.learning_rate = 3e-3;
  options.max_steps = 30;  // The epoch has 64 steps.
  absl::StatusOr<TrainResult> result =
      Train(*vit, QuadrantImages(512, 1), options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->steps, 30);
  EXPECT_NE(result->first_loss, result->final_loss);
  EXPECT_LT(result->final_loss, result->first_loss);
}

TEST(TrainerTest, LearnsASimpleImageTask) {
  torch::manual_seed(0);
  Vit vit = *CreateVit(TinyVit());
  const Dataset train = QuadrantImages(512, 1);
  const Dataset test = QuadrantImages(256, 2);
  TrainOptions options;
  options.epochs = 3;
  options.batch_size = 32;
  options.learning_rate = 3e-3;
  int reports = 0;
  options.progress_every = 10;
  options.on_progress = [&](const TrainProgress& p) {
    ++reports;
    EXPECT_GT(p.samples_per_second, 0);
    EXPECT_LE(p.step, p.total_steps);
  };

  absl::StatusOr<TrainResult> result = Train(*vit, train, options);

  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->steps, 48);
  EXPECT_EQ(result->examples, 3 * 512);
  EXPECT_LT(result->final_loss, result->first_loss);
  EXPECT_GE(reports, 4);
  absl::StatusOr<EvalResult> eval = Evaluate(*vit, test);
  ASSERT_TRUE(eval.ok());
  EXPECT_GT(eval->accuracy, 0.9);
}

TEST(TrainerTest, EstimatesOptimizerStateAndActivations) {
  Vit vit = *CreateVit(TinyVit());
  // 16 patches of 49 pixels + 17 tokens of 16; one block of 2 heads of 8
  // and 32 MLP channels: 17 * (2*16 + 8*8) + 2*2*17*17 for attention and
  // 17 * (2*16 + 2*32) for the MLP.
  const int64_t per_sample = 16 * 49 + 17 * 16 + (17 * 96 + 1156) + 17 * 96;
  EXPECT_EQ(vit->TrainingActivationBytes({32, 1, 28, 28}), 32 * per_sample * 4);
  int64_t param_bytes = 0;
  for (const at::Tensor& p : vit->parameters()) param_bytes += p.nbytes();
  TrainOptions options;
  options.batch_size = 32;
  const at::Tensor example = torch::zeros({1, 1, 28, 28});
  EXPECT_EQ(EstimateTrainingBytes(*vit, example, options),
            3 * param_bytes + 32 * per_sample * 10);
  // Frozen parameters need no gradients or optimizer state.
  for (at::Tensor& p : vit->parameters()) p.set_requires_grad(false);
  EXPECT_EQ(EstimateTrainingBytes(*vit, example, options),
            32 * per_sample * 10);
}

TEST(TrainerTest, OnlyTrainableParametersChange) {
  torch::manual_seed(1);
  Vit vit = *CreateVit(TinyVit());
  for (auto& item : vit->named_parameters()) {
    item.value().set_requires_grad(item.key().rfind("head.", 0) == 0);
  }
  const NamedTensors before = CopyWeights(*vit);
  TrainOptions options;
  options.max_steps = 5;

  ASSERT_TRUE(Train(*vit, QuadrantImages(64, 3), options).ok());

  for (const auto& item : vit->named_parameters()) {
    const bool changed = !torch::equal(item.value(), before[item.key()]);
    EXPECT_EQ(changed, item.key().rfind("head.", 0) == 0) << item.key();
  }
}

TEST(TrainerTest, IsDeterministicGivenTheSeed) {
  auto run = [] {
    torch::manual_seed(2);
    Vit vit = *CreateVit(TinyVit());
    TrainOptions options;
    options.max_steps = 4;
    options.seed = 9;
    EXPECT_TRUE(Train(*vit, QuadrantImages(64, 4), options).ok());
    return CopyWeights(*vit);
  };
  const NamedTensors a = run();
  const NamedTensors b = run();
  for (const auto& item : a) {
    EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();
  }
}

// A shard where one label dominates: plain training pulls the model's
// predictions towards it; balanced softmax trains on the label prior's
// logit adjustment, so the plain model it leaves predicts it less often.
TEST(TrainerTest, BalancedSoftmaxResistsASkewedShard) {
  Dataset skewed = QuadrantImages(2048, 7);
  skewed.targets.fill_(0);  // Every label 0, but 1 in 16 left as drawn.
  const Dataset drawn = QuadrantImages(2048, 7);
  for (int64_t i = 0; i < 2048; i += 16) {
    skewed.targets[i] = drawn.targets[i];
  }
  // Images that show their own quadrant again.
  skewed.inputs = torch::randn({2048, 1, 28, 28}) * 0.1;
  for (int64_t i = 0; i < 2048; ++i) {
    const int64_t q = skewed.targets[i].item<int64_t>();
    skewed.inputs[i][0]
        .narrow(0, (q / 2) * 14, 14)
        .narrow(1, (q % 2) * 14, 14) += 1.0;
  }
  const Dataset test = QuadrantImages(512, 8);
  auto zero_share = [&](bool balanced) {
    torch::manual_seed(0);
    Vit vit = *CreateVit(TinyVit());
    TrainOptions options;
    options.batch_size = 32;
    options.learning_rate = 3e-3;
    options.max_steps = 20;
    options.balanced_softmax = balanced;
    EXPECT_TRUE(Train(*vit, skewed, options).ok());
    torch::NoGradGuard no_grad;
    vit->eval();
    return vit->forward(test.inputs)
        .argmax(-1)
        .eq(0)
        .to(torch::kFloat32)
        .mean()
        .item<double>();
  };
  const double plain = zero_share(false);
  const double balanced = zero_share(true);
  EXPECT_GT(plain, 0.5);  // A quarter of the test images are label 0.
  EXPECT_LT(balanced, plain - 0.2);
}

TEST(TrainerTest, BalancedSoftmaxIsRefusedForALanguageModel) {
  LlamaConfig config;
  config.hidden_size = 16;
  config.head_dim = 8;
  config.layers = {{2, 2, 16}};
  Llama llama = *CreateLlama(config);
  absl::StatusOr<Dataset> data = MakeByteTextDataset("some bytes here", 8);
  ASSERT_TRUE(data.ok());
  TrainOptions options;
  options.balanced_softmax = true;
  absl::StatusOr<TrainResult> result = Train(*llama, *data, options);
  EXPECT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
}

TEST(TrainerTest, TrainsALanguageModelOnBytes) {
  torch::manual_seed(3);
  LlamaConfig config;
  config.hidden_size = 32;
  config.head_dim = 8;
  config.layers = {{4, 4, 64}};
  Llama llama = *CreateLlama(config);
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the cat sat on the mat. ";
  absl::StatusOr<Dataset> data = MakeByteTextDataset(text, 32);
  ASSERT_TRUE(data.ok());
  TrainOptions options;
  options.epochs = 4;
  options.batch_size = 16;
  options.learning_rate = 3e-3;

  absl::StatusOr<TrainResult> result = Train(*llama, *data, options);

  ASSERT_TRUE(result.ok()) << result.status();
  absl::StatusOr<EvalResult> eval = Evaluate(*llama, *data);
  ASSERT_TRUE(eval.ok());
  EXPECT_LT(eval->perplexity, 4.0);  // Uniform over 256 bytes would be 256.
}

// Masked targets (instruction records) are left out of the loss and the
// accuracy; exact match is the share of examples whose every scored target
// is the argmax.
TEST(TrainerTest, EvaluateScoresOnlyUnmaskedTargetsAndCountsExactMatches) {
  torch::manual_seed(4);
  LlamaConfig config;
  config.vocab_size = 16;
  config.hidden_size = 16;
  config.head_dim = 8;
  config.layers = {{2, 2, 16}};
  Llama llama = *CreateLlama(config);
  Dataset data;
  data.inputs = torch::randint(0, 16, {3, 5}, torch::kLong);
  data.num_classes = 16;
  at::Tensor argmax;
  {
    torch::NoGradGuard no_grad;
    llama->eval();
    argmax = llama->forward(data.inputs).argmax(-1);
  }
  const int64_t x = kIgnoreTarget;
  data.targets = torch::full({3, 5}, x, torch::kLong);
  // Example 0: two scored targets, both the argmax. Example 1: one right,
  // one wrong. Example 2: one scored target, the argmax.
  data.targets[0][3] = argmax[0][3];
  data.targets[0][4] = argmax[0][4];
  data.targets[1][1] = argmax[1][1];
  data.targets[1][2] = (argmax[1][2] + 1) % 16;
  data.targets[2][0] = argmax[2][0];
  absl::StatusOr<EvalResult> eval = Evaluate(*llama, data, /*batch_size=*/2);
  ASSERT_TRUE(eval.ok()) << eval.status();
  EXPECT_NEAR(eval->exact_match, 2.0 / 3, 1e-9);
  EXPECT_NEAR(eval->accuracy, 4.0 / 5, 1e-9);
  // The loss is the mean over the five scored targets alone.
  at::Tensor logits;
  {
    torch::NoGradGuard no_grad;
    logits = llama->forward(data.inputs);
  }
  const at::Tensor mask = data.targets.ne(x);
  const double want = torch::cross_entropy_loss(logits.index({mask}),
                                                data.targets.index({mask}))
                          .item<double>();
  EXPECT_NEAR(eval->loss, want, 1e-5);
  // Nothing masked: no exact match.
  data.targets = argmax;
  EXPECT_EQ(Evaluate(*llama, data)->exact_match, -1);
  // Everything masked: refused.
  data.targets = torch::full({3, 5}, x, torch::kLong);
  EXPECT_FALSE(Evaluate(*llama, data).ok());
}

TEST(TrainerTest, NanWeightsStopTrainingWithAClearError) {
  Vit vit = *CreateVit(TinyVit());
  {
    torch::NoGradGuard no_grad;
    vit->named_parameters()["head.weight"][0][0] =
        std::numeric_limits<float>::quiet_NaN();
  }
  absl::StatusOr<TrainResult> result = Train(*vit, QuadrantImages(32, 5), {});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(result.status().message().find("nan"), std::string::npos)
      << result.status();
}

TEST(TrainerTest, RejectsBadOptionsAndMismatchedData) {
  Vit vit = *CreateVit(TinyVit());
  TrainOptions options;
  options.batch_size = 0;
  EXPECT_EQ(Train(*vit, QuadrantImages(8, 6), options).status().code(),
            absl::StatusCode::kInvalidArgument);
  Dataset wrong_shape;
  wrong_shape.inputs = torch::zeros({4, 1, 14, 14});
  wrong_shape.targets = torch::zeros({4}, torch::kLong);
  EXPECT_EQ(Train(*vit, wrong_shape, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  Dataset bad_labels = QuadrantImages(8, 7);
  bad_labels.targets[0] = 7;  // The model has 4 classes.
  EXPECT_EQ(Evaluate(*vit, bad_labels).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Train(*vit, Dataset{}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  for (auto& p : vit->parameters()) p.set_requires_grad(false);
  EXPECT_EQ(Train(*vit, QuadrantImages(8, 8), {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace fedge::model
