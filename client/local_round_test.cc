#include "client/local_round.h"

#include <cmath>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "lora/lora.h"
#include "model/safetensors.h"
#include "pruning/plan.h"
#include "split/client.h"
#include "tests/testing/tiny_models.h"
#include "transport/task_proto.h"

namespace fedge::client {
namespace {

class LocalRoundTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(3);
    model::Vit full = testing::TinyVit(16);
    config_json_ = full->ConfigJson();
    const std::string path = ::testing::TempDir() + "/local_round.safetensors";
    ASSERT_TRUE(model::WriteSafetensors(path, full->named_parameters()).ok());
    auto reader = model::SafetensorsReader::Open(path);
    ASSERT_TRUE(reader.ok());
    base_ = std::move(*reader);

    // Half the heads and channels of each block, rank 2.
    pruning::PruningPlan plan = pruning::FullPlan(*full);
    for (pruning::BlockPlan& block : plan.blocks) {
      block.heads.resize(2);
      block.kv_heads.resize(2);
      block.channels.resize(8);
    }
    transport::PlanToProto(plan, task_.mutable_plan());
    task_.mutable_lora()->set_rank(2);
    task_.mutable_lora()->set_alpha(4);
    task_.mutable_lora()->add_target_modules("q_proj");
    task_.mutable_lora()->add_target_modules("v_proj");
    v1::TrainConfig* train = task_.mutable_train();
    train->set_epochs(1);
    train->set_max_steps(4);
    train->set_batch_size(8);
    train->set_learning_rate(1e-2);
    train->set_max_grad_norm(1.0);
    train->set_seed(5);

    // The payload a coordinator would send: a fresh adapter of the sub-model.
    auto sub = pruning::LoadPrunedModel(config_json_, plan, *base_);
    ASSERT_TRUE(sub.ok()) << sub.status();
    lora::LoraOptions lora;
    lora.rank = 2;
    lora.alpha = 4;
    lora.target_modules = {"q_proj", "v_proj"};
    ASSERT_TRUE(lora::Inject(**sub, lora).ok());
    payload_ = lora::ExtractAdapters(**sub);
    sub_ = *std::move(sub);

    data_.inputs = torch::rand({32, 1, 28, 28});
    data_.targets = torch::randint(0, 10, {32}, torch::kLong);
    data_.num_classes = 10;
  }

  std::string config_json_;
  std::unique_ptr<model::SafetensorsReader> base_;
  v1::Task task_;
  model::NamedTensors payload_;
  model::Model sub_;  // The sub-model the task trains, with its adapters.
  model::Dataset data_;
};

TEST_F(LocalRoundTest, TrainsTheAdapterOfThePrunedSubModel) {
  int progress_calls = 0;
  bool started = false;
  LocalHooks hooks;
  hooks.on_train_start = [&] { started = true; };
  hooks.on_progress = [&](const model::TrainProgress&) { ++progress_calls; };

  absl::StatusOr<LocalResult> result =
      TrainLocally(task_, config_json_, *base_, payload_, data_, hooks);

  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_FALSE(result->declined);
  EXPECT_TRUE(started);
  EXPECT_GT(progress_calls, 0);
  EXPECT_EQ(result->examples, 32);
  EXPECT_EQ(result->steps, 4);  // One epoch is 4 batches of 8.
  EXPECT_GT(result->estimated_bytes, 0);
  EXPECT_TRUE(std::isfinite(result->loss_after));
  // The same names and shapes as the payload, and changed by training.
  ASSERT_EQ(result->update.size(), payload_.size());
  bool changed = false;
  for (const auto& item : payload_) {
    const at::Tensor* trained = result->update.find(item.key());
    ASSERT_NE(trained, nullptr) << item.key();
    EXPECT_EQ(trained->sizes(), item.value().sizes()) << item.key();
    changed = changed || !torch::equal(*trained, item.value());
  }
  EXPECT_TRUE(changed);
  // Importance of the kept units: 2 heads and 8 channels per block.
  ASSERT_NE(result->importance.find("heads.0"), nullptr);
  EXPECT_EQ(result->importance["heads.0"].numel(), 2);
  EXPECT_EQ(result->importance["channels.1"].numel(), 8);
}

// The loss improvement is paired: the same examples before and after. A
// step too small to change anything measures no change (the first and last
// steps' batches would differ by their examples), and real training
// lowers the probe's loss.
TEST_F(LocalRoundTest, LossBeforeAndAfterAreOnTheSameExamples) {
  task_.mutable_train()->set_learning_rate(1e-12);
  absl::StatusOr<LocalResult> still =
      TrainLocally(task_, config_json_, *base_, payload_, data_);
  ASSERT_TRUE(still.ok()) << still.status();
  EXPECT_NEAR(still->loss_before, still->loss_after, 1e-6);
  EXPECT_GT(still->loss_before, 0);
  task_.mutable_train()->set_learning_rate(3e-2);
  task_.mutable_train()->set_epochs(8);
  task_.mutable_train()->set_max_steps(32);
  absl::StatusOr<LocalResult> trained =
      TrainLocally(task_, config_json_, *base_, payload_, data_);
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_EQ(trained->loss_before, still->loss_before);
  EXPECT_LT(trained->loss_after, trained->loss_before);
}

// The task says whether the rate decays within the round: by default it
// falls by a cosine to near 0 at the last step; constant_lr_in_round holds
// the task's rate to the end.
TEST_F(LocalRoundTest, TheTaskSaysWhetherTheRateDecaysWithinTheRound) {
  double last_rate = -1;
  LocalHooks hooks;
  hooks.on_progress = [&](const model::TrainProgress& p) {
    last_rate = p.learning_rate;
  };
  const double rate = task_.train().learning_rate();
  ASSERT_TRUE(
      TrainLocally(task_, config_json_, *base_, payload_, data_, hooks).ok());
  EXPECT_GT(last_rate, 0);
  EXPECT_LT(last_rate, 0.5 * rate);
  task_.mutable_train()->set_constant_lr_in_round(true);
  ASSERT_TRUE(
      TrainLocally(task_, config_json_, *base_, payload_, data_, hooks).ok());
  EXPECT_DOUBLE_EQ(last_rate, rate);
}

// A frozen residual of the global change comes with the adapter: it moves
// the model the device starts from, is not trained and is not uploaded; a
// malformed one is refused.
TEST_F(LocalRoundTest, AFrozenResidualMovesTheStartAndStaysHome) {
  task_.mutable_train()->set_learning_rate(1e-12);
  absl::StatusOr<LocalResult> plain =
      TrainLocally(task_, config_json_, *base_, payload_, data_);
  ASSERT_TRUE(plain.ok()) << plain.status();

  const std::string path = "layers.0.self_attn.q_proj";
  const at::Tensor weight = sub_->named_parameters()[path + ".weight"];
  model::NamedTensors with = payload_;
  with.insert(path + ".residual.lora_A", torch::randn({3, weight.size(1)}));
  with.insert(path + ".residual.lora_B", torch::randn({weight.size(0), 3}));
  absl::StatusOr<LocalResult> moved =
      TrainLocally(task_, config_json_, *base_, with, data_);
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_NE(moved->loss_before, plain->loss_before);
  EXPECT_EQ(moved->update.size(), payload_.size());
  EXPECT_EQ(moved->update.find(path + ".residual.lora_A"), nullptr);

  with[path + ".residual.lora_B"] = torch::randn({weight.size(0) + 1, 3});
  absl::StatusOr<LocalResult> bad =
      TrainLocally(task_, config_json_, *base_, with, data_);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

// Local differential privacy: the upload differs from the payload by at
// most the clip without noise, and by noise of the asked size with it;
// the device keeps its losses and importance scores.
TEST_F(LocalRoundTest, LocalPrivacyClipsNoisesAndWithholdsTheRest) {
  task_.mutable_train()->set_learning_rate(3e-2);
  task_.mutable_train()->set_local_dp_clip(1e-3);
  absl::StatusOr<LocalResult> clipped =
      TrainLocally(task_, config_json_, *base_, payload_, data_);
  ASSERT_TRUE(clipped.ok()) << clipped.status();
  double squared = 0;
  int64_t values = 0;
  for (const auto& item : payload_) {
    const at::Tensor d =
        (clipped->update[item.key()] - item.value()).to(torch::kFloat64);
    squared += (d * d).sum().item<double>();
    values += d.numel();
  }
  EXPECT_LE(std::sqrt(squared), 1e-3 * (1 + 1e-4));
  EXPECT_GT(std::sqrt(squared), 0.9e-3);  // Training moved it further.
  EXPECT_EQ(clipped->loss_before, 0);
  EXPECT_EQ(clipped->loss_after, 0);
  EXPECT_TRUE(clipped->importance.is_empty());

  task_.mutable_train()->set_local_dp_noise_multiplier(100);
  absl::StatusOr<LocalResult> noised =
      TrainLocally(task_, config_json_, *base_, payload_, data_);
  ASSERT_TRUE(noised.ok()) << noised.status();
  squared = 0;
  for (const auto& item : payload_) {
    const at::Tensor d =
        (noised->update[item.key()] - item.value()).to(torch::kFloat64);
    squared += (d * d).sum().item<double>();
  }
  // Noise of 100 clips a value: the change's norm is about 0.1 sqrt(values).
  EXPECT_NEAR(std::sqrt(squared / values), 0.1, 0.02);
}

TEST_F(LocalRoundTest, AdmitCanDeclineBeforeAnyStep) {
  bool started = false;
  int64_t asked = 0;
  LocalHooks hooks;
  hooks.admit = [&](int64_t bytes) {
    asked = bytes;
    return false;
  };
  hooks.on_train_start = [&] { started = true; };

  absl::StatusOr<LocalResult> result =
      TrainLocally(task_, config_json_, *base_, payload_, data_, hooks);

  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->declined);
  EXPECT_FALSE(started);
  EXPECT_GT(asked, 0);
  EXPECT_EQ(result->update.size(), 0u);
}

TEST_F(LocalRoundTest, CountsTheFlopsOfTheSubModelItTrained) {
  absl::StatusOr<LocalResult> result =
      TrainLocally(task_, config_json_, *base_, payload_, data_);
  ASSERT_TRUE(result.ok()) << result.status();
  // The half-pruned sub-model with its rank-2 adapters, 4 steps of 8, and
  // the probe's two forward passes over the 32 examples (a third of a
  // training step's operations each).
  const int64_t blocks = static_cast<int64_t>(sub_->block_shapes().size());
  const double probe =
      split::TrainingFlops(*sub_, 64, sub_->max_tokens(), 0, blocks) / 3.0;
  EXPECT_DOUBLE_EQ(
      result->train_flops,
      split::TrainingFlops(*sub_, 32, sub_->max_tokens(), 0, blocks) + probe);

  v1::Task shorter = task_;
  shorter.mutable_train()->set_max_steps(2);
  result = TrainLocally(shorter, config_json_, *base_, payload_, data_);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_DOUBLE_EQ(
      result->train_flops,
      split::TrainingFlops(*sub_, 16, sub_->max_tokens(), 0, blocks) + probe);
}

// A dense round's payload is every weight of the sub-model: it trains
// those, without reading the base (here a file with no tensors at all).
TEST_F(LocalRoundTest, ADenseRoundBuildsFromThePayloadAlone) {
  const std::string path = ::testing::TempDir() + "/empty.safetensors";
  ASSERT_TRUE(model::WriteSafetensors(path, model::NamedTensors()).ok());
  absl::StatusOr<std::unique_ptr<model::SafetensorsReader>> empty =
      model::SafetensorsReader::Open(path);
  ASSERT_TRUE(empty.ok()) << empty.status();
  absl::StatusOr<model::Model> sub = pruning::LoadPrunedModel(
      config_json_, transport::PlanFromProto(task_.plan()), *base_);
  ASSERT_TRUE(sub.ok()) << sub.status();
  model::NamedTensors weights;
  for (const auto& item : (*sub)->named_parameters()) {
    weights.insert(item.key(), item.value().detach().clone() + 0.01);
  }
  v1::Task dense = task_;
  dense.set_dense(true);
  dense.clear_lora();
  dense.mutable_train()->set_learning_rate(1e-4);  // 4 steps move < 0.001.

  absl::StatusOr<LocalResult> result =
      TrainLocally(dense, config_json_, **empty, weights, data_);

  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->update.size(), weights.size());
  // Trained from the payload: every weight stays near it, not the base.
  for (const auto& item : weights) {
    const at::Tensor* trained = result->update.find(item.key());
    ASSERT_NE(trained, nullptr) << item.key();
    EXPECT_LT((*trained - item.value()).abs().max().item<float>(), 0.005)
        << item.key();
  }
  // A payload missing a weight is refused, not filled from elsewhere.
  model::NamedTensors missing;
  for (size_t i = 1; i < weights.size(); ++i) {
    missing.insert(weights.keys()[i], weights.values()[i]);
  }
  EXPECT_TRUE(absl::IsInvalidArgument(
      TrainLocally(dense, config_json_, **empty, missing, data_).status()));
}

TEST_F(LocalRoundTest, PayloadOrPlanThatDoesNotFitIsRejected) {
  model::NamedTensors wrong;
  for (const auto& item : payload_) {
    wrong.insert(item.key(), torch::zeros({item.value().size(0) + 1,
                                           item.value().size(1)}));
  }
  absl::StatusOr<LocalResult> result =
      TrainLocally(task_, config_json_, *base_, wrong, data_);
  EXPECT_FALSE(result.ok());

  v1::Task bad_plan = task_;
  bad_plan.mutable_plan()->mutable_blocks(0)->add_heads(99);
  result = TrainLocally(bad_plan, config_json_, *base_, payload_, data_);
  EXPECT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();

  result = TrainLocally(task_, config_json_, *base_, payload_, {});
  EXPECT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
}

}  // namespace
}  // namespace fedge::client
