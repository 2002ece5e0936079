#include "model/vit.h"

#include "gtest/gtest.h"
#include <torch/types.h>

#include "tests/testing/prune_reference.h"

namespace fedge::model {
namespace {

VitConfig SmallConfig() {
  VitConfig config;
  config.dim = 32;
  config.head_dim = 8;
  config.layers = {{4, 4, 64}, {4, 4, 64}};
  return config;
}

TEST(VitTest, ForwardGivesOneLogitRowPerImage) {
  absl::StatusOr<Vit> vit = CreateVit(SmallConfig());
  ASSERT_TRUE(vit.ok()) << vit.status();
  const at::Tensor logits = (*vit)->forward(torch::randn({3, 1, 28, 28}));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, 10}));
}

TEST(VitTest, LinearsAreReachableByName) {
  absl::StatusOr<Vit> vit = CreateVit(SmallConfig());
  ASSERT_TRUE(vit.ok());
  for (const char* name :
       {"layers.0.self_attn.q_proj", "layers.1.self_attn.o_proj",
        "layers.1.mlp.up_proj", "layers.0.mlp.down_proj", "head"}) {
    EXPECT_TRUE(FindLinear(**vit, name).ok()) << name;
  }
  EXPECT_NE((*vit)->named_parameters().find("layers.0.self_attn.q_proj.weight"),
            nullptr);
}

TEST(VitTest, PrunedConfigWithCopiedWeightsMatchesZeroedFullModel) {
  torch::manual_seed(3);
  const VitConfig full_config = SmallConfig();
  absl::StatusOr<Vit> full = CreateVit(full_config);
  ASSERT_TRUE(full.ok());
  const std::vector<testing::BlockKeep> keep = {
      {{0, 2}, {0, 2}, {1, 5, 9, 10, 40, 63}},
      {{1, 2, 3}, {1, 2, 3}, {0, 2, 4, 6, 8, 10, 12, 14, 33}},
  };
  const NamedTensors weights = CopyWeights(**full);
  ASSERT_TRUE(
      LoadWeights(**full, testing::ZeroRemoved(weights, "layers.{}.", keep,
                                               full_config.head_dim))
          .ok());
  VitConfig pruned_config = full_config;
  for (size_t b = 0; b < keep.size(); ++b) {
    pruned_config.layers[b] = {static_cast<int64_t>(keep[b].heads.size()),
                               static_cast<int64_t>(keep[b].heads.size()),
                               static_cast<int64_t>(keep[b].channels.size())};
  }
  absl::StatusOr<Vit> pruned = CreateVit(pruned_config);
  ASSERT_TRUE(pruned.ok());

  absl::Status loaded = LoadWeights(
      **pruned,
      testing::SliceKept(weights, "layers.{}.", keep, full_config.head_dim));

  ASSERT_TRUE(loaded.ok()) << loaded;
  EXPECT_LT(CountParameters(**pruned), CountParameters(**full));
  const at::Tensor images = torch::randn({4, 1, 28, 28});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose((*pruned)->forward(images),
                              (*full)->forward(images), 1e-4, 1e-5));
}

TEST(VitTest, DroppedWeightsKeepTheStructureAndFreeTheBytes) {
  absl::StatusOr<Vit> vit = CreateVit(SmallConfig());
  ASSERT_TRUE(vit.ok());
  const std::string config = (*vit)->ConfigJson();
  const NamedTensors before = CopyWeights(**vit);
  NamedTensors taken;  // Handles taken before the drop keep the values.
  for (const auto& item : (*vit)->named_parameters(/*recurse=*/true)) {
    taken.insert(item.key(), item.value().detach());
  }
  DropWeights(**vit);
  const auto after = (*vit)->named_parameters(/*recurse=*/true);
  ASSERT_EQ(after.size(), before.size());
  for (const auto& item : after) {
    const at::Tensor& p = item.value();
    EXPECT_EQ(p.sizes(), before[item.key()].sizes()) << item.key();
    EXPECT_EQ(p.scalar_type(), before[item.key()].scalar_type());
    EXPECT_LE(p.storage().nbytes(), p.element_size()) << item.key();
    EXPECT_TRUE(p.eq(0).all().item<bool>()) << item.key();
    EXPECT_TRUE(torch::equal(taken[item.key()], before[item.key()]));
  }
  EXPECT_EQ((*vit)->ConfigJson(), config);
}

TEST(VitTest, FullyPrunedBlockStillRuns) {
  VitConfig config = SmallConfig();
  config.layers[1] = {0, 0, 0};
  absl::StatusOr<Vit> vit = CreateVit(config);
  ASSERT_TRUE(vit.ok()) << vit.status();
  EXPECT_EQ((*vit)->forward(torch::randn({2, 1, 28, 28})).sizes(),
            (std::vector<int64_t>{2, 10}));
}

TEST(VitTest, ConfigJsonRoundTrips) {
  VitConfig config = SmallConfig();
  config.layers[1] = {2, 2, 17};
  absl::StatusOr<VitConfig> back = VitConfigFromJson(VitConfigToJson(config));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->dim, config.dim);
  EXPECT_EQ(back->layers, config.layers);
}

TEST(VitTest, BadConfigsAreRejectedWithTheField) {
  VitConfig config = SmallConfig();
  config.patch_size = 5;
  EXPECT_NE(config.Validate().message().find("patch_size"), std::string::npos);
  EXPECT_FALSE(VitConfigFromJson("{}").ok());
  EXPECT_FALSE(
      VitConfigFromJson(R"({"model_type":"fedge_vit","layers":[1]})").ok());
  absl::StatusOr<VitConfig> wrong_type = VitConfigFromJson(
      R"({"model_type":"fedge_vit","dim":"big","layers":[]})");
  ASSERT_FALSE(wrong_type.ok());
  EXPECT_NE(wrong_type.status().message().find("dim"), std::string::npos);
}

TEST(VitTest, ValidateInputRejectsWrongShapeAndDtype) {
  absl::StatusOr<Vit> vit = CreateVit(SmallConfig());
  ASSERT_TRUE(vit.ok());
  EXPECT_TRUE((*vit)->ValidateInput(torch::zeros({2, 1, 28, 28})).ok());
  EXPECT_FALSE((*vit)->ValidateInput(torch::zeros({2, 28, 28})).ok());
  EXPECT_FALSE((*vit)->ValidateInput(torch::zeros({2, 1, 32, 32})).ok());
  EXPECT_FALSE(
      (*vit)->ValidateInput(torch::zeros({2, 1, 28, 28}, torch::kLong)).ok());
}

}  // namespace
}  // namespace fedge::model

namespace fedge::model {
namespace {

TEST(VitTest, HeadAndTailComposeToTheWholeModelAtEveryCut) {
  torch::manual_seed(4);
  absl::StatusOr<Vit> vit = CreateVit(SmallConfig());
  ASSERT_TRUE(vit.ok());
  const at::Tensor x = torch::randn({3, 1, 28, 28});
  const at::Tensor whole = (*vit)->forward(x);
  for (int64_t cut : {1, 2}) {
    ASSERT_TRUE((*vit)->ValidateCut(cut).ok());
    const at::Tensor hidden = (*vit)->ForwardHead(x, cut);
    EXPECT_EQ(hidden.sizes(), (std::vector<int64_t>{3, 17, 32}));
    EXPECT_TRUE((*vit)->ValidateHidden(hidden).ok());
    EXPECT_TRUE(torch::allclose((*vit)->ForwardTail(hidden, cut), whole));
  }
  EXPECT_FALSE((*vit)->ValidateCut(0).ok());
  EXPECT_FALSE((*vit)->ValidateCut(3).ok());
  EXPECT_TRUE((*vit)->InHead("patch_embed.weight", 1));
  EXPECT_TRUE((*vit)->InHead("pos_embed", 1));
  EXPECT_TRUE((*vit)->InHead("layers.0.self_attn.q_proj.weight", 1));
  EXPECT_FALSE((*vit)->InHead("layers.1.self_attn.q_proj.weight", 1));
  EXPECT_TRUE((*vit)->InHead("layers.1.self_attn.q_proj.weight", 2));
  EXPECT_FALSE((*vit)->InHead("head.weight", 2));
  EXPECT_FALSE((*vit)->InHead("norm.weight", 2));
  // What a tail may be given.
  EXPECT_FALSE((*vit)->ValidateHidden(torch::randn({3, 18, 32})).ok());
  EXPECT_FALSE((*vit)->ValidateHidden(torch::randn({3, 17, 31})).ok());
  EXPECT_FALSE((*vit)->ValidateHidden(torch::randn({3, 17})).ok());
  at::Tensor bad = torch::randn({3, 17, 32});
  bad[1][2][3] = INFINITY;
  EXPECT_FALSE((*vit)->ValidateHidden(bad).ok());
  // The head's share of the activation estimate.
  EXPECT_LT((*vit)->HeadTrainingActivationBytes({8, 1, 28, 28}, 1),
            (*vit)->TrainingActivationBytes({8, 1, 28, 28}));
}

TEST(VitTest, ASubModelsActivationEstimateNeedsOnlyItsShapes) {
  absl::StatusOr<Vit> vit = CreateVit(SmallConfig());
  ASSERT_TRUE(vit.ok()) << vit.status();
  const std::vector<BlockShape> pruned = {{2, 2, 16}, {0, 0, 48}};
  absl::StatusOr<Model> built = (*vit)->WithBlockShapes(pruned);
  ASSERT_TRUE(built.ok()) << built.status();
  const std::vector<int64_t> shape = (*vit)->ExampleInputShape(8);
  EXPECT_EQ((*vit)->TrainingActivationBytes(shape, pruned),
            (*built)->TrainingActivationBytes(shape));
  EXPECT_EQ((*vit)->HeadTrainingActivationBytes(shape, 1, pruned),
            (*built)->HeadTrainingActivationBytes(shape, 1));
  EXPECT_LT((*vit)->TrainingActivationBytes(shape, pruned),
            (*vit)->TrainingActivationBytes(shape));
}

}  // namespace
}  // namespace fedge::model
