#include "pruning/plan.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include <torch/types.h>

#include "lora/lora.h"
#include "model/llama.h"
#include "model/vit.h"
#include "tests/testing/prune_reference.h"
#include "tests/testing/tiny_models.h"

namespace fedge::pruning {
namespace {

model::Vit SmallVit() { return testing::TinyVit(/*mlp_hidden=*/16); }

model::Llama SmallLlama() {
  model::LlamaConfig config;
  config.vocab_size = 13;
  config.hidden_size = 16;
  config.head_dim = 4;
  config.layers = {{4, 2, 12}, {4, 4, 12}};
  return *model::CreateLlama(config);
}

PruningPlan VitPlan() {
  return {{{{0, 3}, {0, 3}, {1, 2, 5, 8, 13}}, {{1}, {1}, {0, 15}}}};
}

std::vector<testing::BlockKeep> AsKeep(const PruningPlan& plan) {
  std::vector<testing::BlockKeep> keep;
  for (const BlockPlan& b : plan.blocks)
    keep.push_back({b.heads, b.kv_heads, b.channels});
  return keep;
}

TEST(PlanTest, PrunedVitEqualsFullModelWithRemovedUnitsZeroed) {
  torch::manual_seed(0);
  model::Vit full = SmallVit();
  const PruningPlan plan = VitPlan();

  absl::StatusOr<model::Model> pruned = ApplyPlan(*full, plan);

  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ((*pruned)->block_shapes()[1], (model::BlockShape{1, 1, 2}));
  EXPECT_LT(model::CountParameters(**pruned), model::CountParameters(*full));
  ASSERT_TRUE(model::LoadWeights(
                  *full, testing::ZeroRemoved(model::CopyWeights(*full),
                                              "layers.{}.", AsKeep(plan), 8))
                  .ok());
  const at::Tensor images = torch::randn({3, 1, 28, 28});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose((*pruned)->forward(images), full->forward(images),
                              1e-4, 1e-5));
}

TEST(PlanTest, PrunedLlamaWithAdaptersKeepsAdaptedOutputs) {
  torch::manual_seed(1);
  model::Llama full = SmallLlama();
  lora::LoraOptions options;
  options.rank = 2;
  options.target_modules = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                            "gate_proj", "up_proj", "down_proj"};
  ASSERT_TRUE(lora::Inject(*full, options).ok());
  {
    torch::NoGradGuard no_grad;
    for (const lora::AdaptedLinear& a : lora::NamedAdapters(*full)) {
      a.adapter->lora_B.normal_(0, 0.1);
    }
  }
  // Block 0 is GQA (2 query heads per KV head): keep KV head 1 whole.
  const PruningPlan plan = {
      {{{2, 3}, {1}, {0, 4, 7, 11}}, {{0, 2}, {0, 2}, {3}}}};

  absl::StatusOr<model::Model> pruned = ApplyPlan(*full, plan);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(lora::NamedAdapters(**pruned).size(), 14u);
  for (const auto& item : (*pruned)->named_parameters()) {
    EXPECT_EQ(item.value().requires_grad(),
              item.key().find(".adapter.") != std::string::npos)
        << item.key();
  }
  // Compare with the full model, adapters merged, removed units zeroed.
  ASSERT_TRUE(lora::Merge(*full).ok());
  model::NamedTensors base;
  for (const auto& item : full->named_parameters()) {
    if (item.key().find(".adapter.") == std::string::npos) {
      base.insert(item.key(), item.value().detach().clone());
    }
  }
  model::Llama reference = SmallLlama();
  ASSERT_TRUE(model::LoadWeights(*reference,
                                 testing::ZeroRemoved(base, "model.layers.{}.",
                                                      AsKeep(plan), 4))
                  .ok());
  const at::Tensor tokens = torch::randint(0, 13, {2, 5}, torch::kLong);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose((*pruned)->forward(tokens),
                              reference->forward(tokens), 1e-4, 1e-5));
}

TEST(PlanTest, ScatterThenSliceIsIdentityOnKeptEntries) {
  torch::manual_seed(2);
  model::Vit full = SmallVit();
  ASSERT_TRUE(
      lora::Inject(
          *full,
          lora::LoraOptions{
              4, 8.0, 0.0, {"q_proj", "o_proj", "up_proj", "down_proj"}})
          .ok());
  const PruningPlan plan = VitPlan();
  model::Model pruned = *ApplyPlan(*full, plan);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : pruned->parameters()) p.normal_();
  }
  const model::NamedTensors sub = model::CopyWeights(*pruned);

  absl::StatusOr<Scattered> scattered = ScatterTensors(*full, plan, sub);

  ASSERT_TRUE(scattered.ok()) << scattered.status();
  const at::Tensor& q = scattered->tensors["layers.0.self_attn.q_proj.weight"];
  EXPECT_EQ(q.sizes(), (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(q.narrow(0, 8, 16).abs().sum().item<float>(), 0.0f);  // Heads 1, 2.
  EXPECT_EQ(scattered->coverage["layers.1.mlp.down_proj.adapter.lora_A"]
                .sum()
                .item<float>(),
            4 * 2);  // Rank 4 x 2 kept channels.
  absl::StatusOr<model::NamedTensors> again =
      SliceTensors(*full, plan, scattered->tensors);
  ASSERT_TRUE(again.ok());
  for (const auto& item : sub) {
    EXPECT_TRUE(torch::equal((*again)[item.key()], item.value())) << item.key();
  }
}

TEST(PlanTest, ScatteringFromTheConfigEqualsScatteringWithTheFullModel) {
  torch::manual_seed(5);
  model::Llama full = SmallLlama();
  PruningPlan plan = FullPlan(*full);
  plan.blocks[0].heads = {0, 1};
  plan.blocks[0].kv_heads = {0};
  plan.blocks[1].channels = {1, 4, 7};
  model::Model pruned = *ApplyPlan(*full, plan);
  const model::NamedTensors sub = model::CopyWeights(*pruned);

  const absl::StatusOr<Scattered> want = ScatterTensors(*full, plan, sub);
  const absl::StatusOr<Scattered> got =
      ScatterTensors(full->ConfigJson(), plan, sub);

  ASSERT_TRUE(want.ok()) << want.status();
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->tensors.size(), want->tensors.size());
  ASSERT_EQ(got->coverage.size(), want->coverage.size());
  EXPECT_GT(want->coverage.size(), 0u);
  for (const auto& item : want->tensors) {
    EXPECT_TRUE(torch::equal(got->tensors[item.key()], item.value()))
        << item.key();
  }
  for (const auto& item : want->coverage) {
    EXPECT_TRUE(torch::equal(got->coverage[item.key()], item.value()))
        << item.key();
  }
  PruningPlan bad = plan;
  bad.blocks[1].channels = {1, 99};
  EXPECT_EQ(ScatterTensors(full->ConfigJson(), bad, sub).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PlanTest, ScatteringWhatThePlanKeepsWholeNeitherCopiesNorMasks) {
  torch::manual_seed(4);
  model::Vit full = SmallVit();
  const model::NamedTensors weights = model::CopyWeights(*full);

  absl::StatusOr<Scattered> scattered =
      ScatterTensors(*full, FullPlan(*full), weights);

  ASSERT_TRUE(scattered.ok()) << scattered.status();
  EXPECT_TRUE(scattered->coverage.is_empty());
  for (const auto& item : weights) {
    const at::Tensor* out = scattered->tensors.find(item.key());
    ASSERT_NE(out, nullptr) << item.key();
    EXPECT_EQ(out->data_ptr(), item.value().data_ptr()) << item.key();
  }
}

TEST(PlanTest, ComposedPlanGivesTheSameSubModel) {
  torch::manual_seed(3);
  model::Vit full = SmallVit();
  const PruningPlan outer = VitPlan();
  model::Model once = *ApplyPlan(*full, outer);
  const PruningPlan inner = {{{{1}, {1}, {0, 2, 4}}, {{0}, {0}, {1}}}};
  model::Model twice = *ApplyPlan(*once, inner);

  absl::StatusOr<PruningPlan> composed = ComposePlans(outer, inner);
  ASSERT_TRUE(composed.ok());
  model::Model direct = *ApplyPlan(*full, *composed);

  const at::Tensor images = torch::randn({2, 1, 28, 28});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(direct->forward(images), twice->forward(images)));
}

TEST(PlanTest, DroppedBlockEqualsFullModelWithThatBlockZeroed) {
  torch::manual_seed(4);
  model::Vit full = SmallVit();
  absl::StatusOr<PruningPlan> plan = DropBlocks(FullPlan(*full), {1});
  ASSERT_TRUE(plan.ok());

  absl::StatusOr<model::Model> pruned = ApplyPlan(*full, *plan);

  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ((*pruned)->block_shapes()[1], (model::BlockShape{0, 0, 0}));
  ASSERT_TRUE(model::LoadWeights(
                  *full, testing::ZeroRemoved(model::CopyWeights(*full),
                                              "layers.{}.", AsKeep(*plan), 8))
                  .ok());
  const at::Tensor images = torch::randn({2, 1, 28, 28});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose((*pruned)->forward(images), full->forward(images),
                              1e-4, 1e-5));
  EXPECT_FALSE(DropBlocks(*plan, {2}).ok());
}

// Loading from the file reads only kept slices, and must give exactly
// what ApplyPlan gives on the loaded full model.
TEST(PlanTest, LoadPrunedModelEqualsApplyPlanOnTheFullModel) {
  torch::manual_seed(2);
  const std::string dir = ::testing::TempDir();
  struct Case {
    model::Model full;
    PruningPlan plan;
    at::Tensor input;
  };
  std::vector<Case> cases;
  cases.push_back({SmallVit(), VitPlan(), torch::rand({2, 1, 28, 28})});
  cases.push_back({SmallLlama(),
                   {{{{2, 3}, {1}, {0, 4, 7, 11}}, {{0, 2}, {0, 2}, {3}}}},
                   torch::randint(0, 13, {2, 5}, torch::kLong)});
  for (Case& c : cases) {
    const std::string path = dir + "/load_pruned.safetensors";
    ASSERT_TRUE(model::WriteSafetensors(path, c.full->named_parameters()).ok());
    absl::StatusOr<std::unique_ptr<model::SafetensorsReader>> reader =
        model::SafetensorsReader::Open(path);
    ASSERT_TRUE(reader.ok());

    absl::StatusOr<model::Model> loaded =
        LoadPrunedModel(c.full->ConfigJson(), c.plan, **reader);
    absl::StatusOr<model::Model> applied = ApplyPlan(*c.full, c.plan);

    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ASSERT_TRUE(applied.ok());
    for (const auto& item : (*applied)->named_parameters()) {
      EXPECT_TRUE(
          torch::equal(item.value(), (*loaded)->named_parameters()[item.key()]))
          << item.key();
    }
    torch::NoGradGuard no_grad;
    (*loaded)->eval();
    (*applied)->eval();
    EXPECT_TRUE(torch::equal((*loaded)->forward(c.input),
                             (*applied)->forward(c.input)));

    // The architecture alone has the same names and shapes.
    absl::StatusOr<model::Model> created =
        CreatePrunedModel(c.full->ConfigJson(), c.plan);
    ASSERT_TRUE(created.ok()) << created.status();
    const model::NamedTensors fresh_params = (*created)->named_parameters();
    ASSERT_EQ(fresh_params.size(), (*loaded)->named_parameters().size());
    for (const auto& item : (*loaded)->named_parameters()) {
      const at::Tensor* fresh = fresh_params.find(item.key());
      ASSERT_NE(fresh, nullptr) << item.key();
      EXPECT_EQ(fresh->sizes(), item.value().sizes()) << item.key();
    }

    // A bad plan, and weights of another model, are named errors.
    PruningPlan bad = c.plan;
    bad.blocks.pop_back();
    EXPECT_EQ(
        LoadPrunedModel(c.full->ConfigJson(), bad, **reader).status().code(),
        absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(CreatePrunedModel(c.full->ConfigJson(), bad).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  absl::StatusOr<std::unique_ptr<model::SafetensorsReader>> vit_weights =
      model::SafetensorsReader::Open(dir + "/load_pruned.safetensors");
  ASSERT_TRUE(vit_weights.ok());  // Now the LLaMA's weights.
  absl::StatusOr<model::Model> wrong =
      LoadPrunedModel(SmallVit()->ConfigJson(), VitPlan(), **vit_weights);
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("weights lack"), std::string::npos)
      << wrong.status();
}

TEST(PlanTest, RejectsInvalidPlans) {
  model::Llama llama = SmallLlama();
  const PruningPlan full = FullPlan(*llama);
  EXPECT_TRUE(ValidatePlan(*llama, full).ok());
  EXPECT_NEAR(RemovedFraction(*llama, full), 0.0, 1e-12);
  std::vector<std::pair<const char*, PruningPlan>> bad;
  PruningPlan p = full;
  p.blocks.pop_back();
  bad.push_back({"block count", p});
  p = full;
  p.blocks[1].channels = {3, 1};
  bad.push_back({"unsorted", p});
  p = full;
  p.blocks[1].heads = {0, 9};
  bad.push_back({"out of range", p});
  p = full;
  p.blocks[0].heads = {0, 1, 2, 3};
  p.blocks[0].kv_heads = {0};
  bad.push_back({"query heads of a removed KV head", p});
  p = full;
  p.blocks[0].heads = {0, 1, 2};
  bad.push_back({"uneven GQA groups", p});
  for (const auto& [name, plan] : bad) {
    EXPECT_EQ(ValidatePlan(*llama, plan).code(),
              absl::StatusCode::kInvalidArgument)
        << name;
    EXPECT_FALSE(ApplyPlan(*llama, plan).ok()) << name;
  }
}

TEST(PlanTest, RemovedFractionCountsBlockParameters) {
  model::Vit vit = SmallVit();
  PruningPlan half = FullPlan(*vit);
  for (BlockPlan& b : half.blocks) {
    b.heads = {0, 1};
    b.kv_heads = {0, 1};
    b.channels.resize(8);
  }
  EXPECT_NEAR(RemovedFraction(*vit, half), 0.5,
              0.02);  // Biases of o/down stay.
}

TEST(PlanTest, PrunableShareIsTheBlockProjections) {
  model::Vit vit = SmallVit();
  double all = 0, projections = 0;
  for (const auto& item : vit->named_parameters()) {
    all += static_cast<double>(item.value().numel());
    // o_proj's and down_proj's biases are outputs of the block: kept.
    if (absl::StrContains(item.key(), "_proj.") &&
        !absl::StrContains(item.key(), "o_proj.bias") &&
        !absl::StrContains(item.key(), "down_proj.bias")) {
      projections += static_cast<double>(item.value().numel());
    }
  }
  ASSERT_GT(projections, 0);
  EXPECT_NEAR(PrunableShare(*vit), projections / all, 1e-12);
  // Adapters do not count.
  lora::LoraOptions options;
  options.rank = 4;
  ASSERT_TRUE(lora::Inject(*vit, options).ok());
  EXPECT_NEAR(PrunableShare(*vit), projections / all, 1e-12);
}

}  // namespace
}  // namespace fedge::pruning
