#include "coordinator/task_builder.h"

#include <vector>

#include "gtest/gtest.h"
#include <torch/types.h>

#include "model/trainer.h"
#include "model/vit.h"
#include "pruning/plan.h"
#include "tests/testing/tiny_models.h"

namespace fedge::coordinator {
namespace {

// A ViT of four unpruned blocks, so that every cut 1-3 can be chosen.
model::Vit FourBlockVit() {
  model::VitConfig config;
  config.dim = 32;
  config.head_dim = 8;
  config.layers.assign(4, model::BlockShape{4, 4, 64});
  return *model::CreateVit(config);
}

TEST(ChooseCutTest, SplitsOnlyDevicesWhoseBudgetCannotHoldTraining) {
  model::Vit vit = FourBlockVit();
  auto global = GlobalModel::Create(vit, Mode::kLora, {});
  ASSERT_TRUE(global.ok());
  const pruning::PruningPlan plan = *(*global)->Plan(0.0);
  const std::vector<int64_t> shape = vit->ExampleInputShape(32);
  auto peak = [](int64_t a) { return model::TrainingPeakBytes(0, a); };
  const int64_t full = peak(vit->TrainingActivationBytes(shape));
  SplitPolicy policy;                                   // auto
  EXPECT_EQ(*ChooseCut(policy, *vit, plan, 0, 32), 0);  // No budget known.
  EXPECT_EQ(*ChooseCut(policy, *vit, plan, full, 32), 0);
  EXPECT_EQ(*ChooseCut(policy, *vit, plan, full - 1, 32), 3);
  const int64_t two = peak(vit->HeadTrainingActivationBytes(shape, 2));
  EXPECT_EQ(*ChooseCut(policy, *vit, plan, two, 32), 2);
  EXPECT_EQ(*ChooseCut(policy, *vit, plan, two - 1, 32), 1);
  EXPECT_EQ(*ChooseCut(policy, *vit, plan, 1, 32), 1);  // The least it can.
  policy.mode = "off";
  EXPECT_EQ(*ChooseCut(policy, *vit, plan, 1, 32), 0);
  policy.mode = "2";
  EXPECT_EQ(*ChooseCut(policy, *vit, plan, 0, 32), 2);
  policy.mode = "5";
  EXPECT_EQ(ChooseCut(policy, *vit, plan, 0, 32).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ChooseCutTest, APrunedPlanIsPricedAsItsBuiltSubModelWould) {
  model::Vit vit = FourBlockVit();
  auto global = GlobalModel::Create(vit, Mode::kLora, {});
  ASSERT_TRUE(global.ok());
  const pruning::PruningPlan plan = *(*global)->Plan(0.5);
  // What ChooseCut once built for every task, only to read its estimate.
  const model::Model sub = *vit->WithBlockShapes(pruning::PlannedShapes(plan));
  const std::vector<int64_t> shape = vit->ExampleInputShape(32);
  auto peak = [](int64_t a) { return model::TrainingPeakBytes(0, a); };
  const int64_t whole = peak(sub->TrainingActivationBytes(shape));
  const int64_t two = peak(sub->HeadTrainingActivationBytes(shape, 2));
  EXPECT_LT(whole, peak(vit->TrainingActivationBytes(shape)));
  const SplitPolicy policy;  // auto
  EXPECT_EQ(*ChooseCut(policy, *vit, plan, whole, 32), 0);
  EXPECT_EQ(*ChooseCut(policy, *vit, plan, whole - 1, 32), 3);
  EXPECT_EQ(*ChooseCut(policy, *vit, plan, two, 32), 2);
  EXPECT_EQ(*ChooseCut(policy, *vit, plan, two - 1, 32), 1);
}

TEST(TaskBuilderTest, BuildsThePlanPayloadAndExpectedShapesOfATask) {
  torch::manual_seed(0);
  auto global = GlobalModel::Create(testing::TinyVit(16), Mode::kLora, {});
  ASSERT_TRUE(global.ok());
  EngineOptions options;
  Task task;
  task.rank = 2;
  task.combined_ratio = 0.5;
  absl::StatusOr<BuiltTask> built = BuildTask(**global, options, task, 0, 7);
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_EQ(built->cut, 0);
  // Half of every block's heads and channels removed.
  const pruning::PruningPlan full = *(*global)->Plan(0.0);
  ASSERT_EQ(built->plan.blocks.size(), full.blocks.size());
  EXPECT_EQ(2 * built->plan.blocks[0].channels.size(),
            full.blocks[0].channels.size());
  ASSERT_FALSE(built->payload.is_empty());
  EXPECT_EQ(built->expected.size(), built->payload.size());
  for (const auto& item : built->payload) {
    EXPECT_EQ(built->expected.at(item.key()), item.value().sizes().vec());
  }
  // The same seed revives the same components.
  absl::StatusOr<BuiltTask> again = BuildTask(**global, options, task, 0, 7);
  ASSERT_TRUE(again.ok());
  for (const auto& item : built->payload) {
    EXPECT_TRUE(torch::equal(item.value(), again->payload[item.key()]));
  }
  task.combined_ratio = 1.5;
  EXPECT_EQ(BuildTask(**global, options, task, 0, 7).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TaskBuilderTest, DeviceSeedsDependOnEveryInputAndNothingElse) {
  EXPECT_EQ(DeviceSeed(1, "a", 2), DeviceSeed(1, "a", 2));
  EXPECT_NE(DeviceSeed(1, "a", 2), DeviceSeed(2, "a", 2));
  EXPECT_NE(DeviceSeed(1, "a", 2), DeviceSeed(1, "b", 2));
  EXPECT_NE(DeviceSeed(1, "a", 2), DeviceSeed(1, "a", 3));
  EXPECT_EQ(RandomHex(16).size(), 32u);
  EXPECT_NE(RandomHex(16), RandomHex(16));
}

}  // namespace
}  // namespace fedge::coordinator
