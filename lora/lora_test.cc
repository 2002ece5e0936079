#include "lora/lora.h"

#include "gtest/gtest.h"
#include <torch/autograd.h>
#include <torch/types.h>

#include "model/trainer.h"
#include "model/vit.h"
#include "tests/testing/tiny_models.h"

namespace fedge::lora {
namespace {

model::Vit SmallVit() { return testing::TinyVit(/*mlp_hidden=*/64); }

void RandomizeB(torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  for (const AdaptedLinear& a : NamedAdapters(m)) a.adapter->lora_B.normal_();
}

TEST(LoraTest, FreshAdapterLeavesOutputsUnchanged) {
  torch::manual_seed(0);
  model::Vit vit = SmallVit();
  const at::Tensor images = torch::randn({3, 1, 28, 28});
  const at::Tensor before = vit->forward(images);

  absl::StatusOr<std::vector<std::string>> wrapped =
      Inject(*vit, LoraOptions());

  ASSERT_TRUE(wrapped.ok()) << wrapped.status();
  EXPECT_EQ(wrapped->size(), 4u);  // q and v of two blocks.
  EXPECT_TRUE(torch::equal(vit->forward(images), before));
}

TEST(LoraTest, FusedAddEqualsOutputPlusAdapterWithItsGradients) {
  torch::manual_seed(0);
  LoraAdapterImpl adapter(/*in_features=*/6, /*out_features=*/5, /*rank=*/3,
                          /*alpha=*/6.0, /*dropout=*/0.0);
  {
    torch::NoGradGuard no_grad;
    adapter.lora_B.normal_();
  }
  const at::Tensor x = torch::randn({2, 4, 6});
  const at::Tensor y = torch::randn({2, 4, 5});

  const at::Tensor fused = adapter.AddTo(y, x);
  const at::Tensor plain = y + adapter.forward(x);
  ASSERT_EQ(fused.sizes(), plain.sizes());
  EXPECT_TRUE(torch::allclose(fused, plain, 1e-5, 1e-6));

  const at::Tensor weights = torch::randn({2, 4, 5});
  const auto grads = [&](const at::Tensor& out) {
    auto g = torch::autograd::grad({(out * weights).sum()},
                                   {adapter.lora_A, adapter.lora_B});
    return std::make_pair(g[0], g[1]);
  };
  const auto [fused_a, fused_b] = grads(adapter.AddTo(y, x));
  const auto [plain_a, plain_b] = grads(y + adapter.forward(x));
  EXPECT_TRUE(torch::allclose(fused_a, plain_a, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(fused_b, plain_b, 1e-5, 1e-6));
}

TEST(LoraTest, OnlyAdapterParametersAreTrainable) {
  model::Vit vit = SmallVit();
  LoraOptions options;
  options.rank = 4;
  options.target_modules = {"q_proj", "k_proj",  "v_proj",
                            "o_proj", "up_proj", "down_proj"};
  ASSERT_TRUE(Inject(*vit, options).ok());
  int64_t expected = 0;
  for (const AdaptedLinear& a : NamedAdapters(*vit)) {
    expected += 4 * (a.linear->in_features() + a.linear->out_features());
  }
  EXPECT_EQ(model::CountParameters(*vit, /*trainable_only=*/true), expected);
  EXPECT_NE(vit->named_parameters().find("layers.1.mlp.up_proj.adapter.lora_A"),
            nullptr);
}

TEST(LoraTest, MergedWeightEqualsBasePlusScaledProduct) {
  torch::manual_seed(1);
  model::Vit vit = SmallVit();
  LoraOptions options;
  options.rank = 3;
  options.alpha = 6;
  ASSERT_TRUE(Inject(*vit, options).ok());
  RandomizeB(*vit);
  const at::Tensor images = torch::randn({2, 1, 28, 28});
  const at::Tensor adapted = vit->forward(images);
  model::Linear q = *model::FindLinear(*vit, "layers.0.self_attn.q_proj");
  const at::Tensor base = q->weight.clone();
  auto adapter = std::dynamic_pointer_cast<LoraAdapterImpl>(q->adapter());
  // Naive reference: W[i][j] + (alpha / r) * sum_k B[i][k] A[k][j].
  at::Tensor expected = base.clone();
  for (int64_t i = 0; i < base.size(0); ++i) {
    for (int64_t j = 0; j < base.size(1); ++j) {
      double sum = 0;
      for (int64_t k = 0; k < 3; ++k) {
        sum += adapter->lora_B[i][k].item<double>() *
               adapter->lora_A[k][j].item<double>();
      }
      expected[i][j] += 2.0 * sum;
    }
  }

  ASSERT_TRUE(Merge(*vit).ok());

  EXPECT_TRUE(torch::allclose(q->weight, expected, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(vit->forward(images), adapted, 1e-4, 1e-5));
  EXPECT_EQ(Merge(*vit).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(Unmerge(*vit).ok());
  EXPECT_TRUE(torch::allclose(q->weight, base, 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(vit->forward(images), adapted, 1e-4, 1e-5));
}

TEST(LoraTest, ExtractAndLoadRoundTrip) {
  torch::manual_seed(2);
  model::Vit a = SmallVit();
  ASSERT_TRUE(Inject(*a, LoraOptions()).ok());
  RandomizeB(*a);
  model::Vit b = SmallVit();
  ASSERT_TRUE(Inject(*b, LoraOptions()).ok());

  const NamedTensors adapters = ExtractAdapters(*a);
  ASSERT_TRUE(LoadAdapters(*b, adapters).ok());

  EXPECT_EQ(adapters.size(), 8u);
  const NamedTensors copied = ExtractAdapters(*b);
  for (const auto& item : adapters) {
    EXPECT_TRUE(torch::equal(item.value(), copied[item.key()])) << item.key();
  }
}

TEST(LoraTest, LoadRejectsWrongShapesNanAndUnknownNames) {
  model::Vit vit = SmallVit();
  ASSERT_TRUE(Inject(*vit, LoraOptions()).ok());
  const NamedTensors good = ExtractAdapters(*vit);
  const std::string a_name = "layers.0.self_attn.q_proj.adapter.lora_A";

  NamedTensors wrong_rank = good;
  wrong_rank[a_name] = torch::zeros({4, 32});
  EXPECT_EQ(LoadAdapters(*vit, wrong_rank).code(),
            absl::StatusCode::kInvalidArgument);

  NamedTensors nan = good;
  nan[a_name] = good[a_name].clone();
  nan[a_name][0][0] = std::numeric_limits<float>::quiet_NaN();
  absl::Status s = LoadAdapters(*vit, nan);
  EXPECT_NE(s.message().find("NaN"), std::string::npos) << s;

  NamedTensors extra = good;
  extra.insert("layers.0.self_attn.k_proj.adapter.lora_A",
               torch::zeros({8, 32}));
  EXPECT_EQ(LoadAdapters(*vit, extra).code(),
            absl::StatusCode::kInvalidArgument);

  NamedTensors missing;
  EXPECT_EQ(LoadAdapters(*vit, missing).code(),
            absl::StatusCode::kInvalidArgument);
  // Nothing was modified by the failed loads.
  const NamedTensors after = ExtractAdapters(*vit);
  EXPECT_TRUE(torch::equal(after[a_name], good[a_name]));
}

TEST(LoraTest, ResidualsAddTheirProductToTheWeightOrNothing) {
  model::Vit vit = SmallVit();
  const std::string path = "layers.0.self_attn.q_proj";
  const at::Tensor before = vit->named_parameters()[path + ".weight"].clone();
  torch::manual_seed(3);
  NamedTensors residuals;
  residuals.insert(path + ".residual.lora_A", torch::randn({3, 32}));
  residuals.insert(path + ".residual.lora_B", torch::randn({32, 3}));
  NamedTensors payload = residuals;
  payload.insert(path + ".adapter.lora_A", torch::zeros({8, 32}));
  const SeparatedPayload parts = SeparateResiduals(payload);
  EXPECT_EQ(parts.residuals.size(), 2u);
  EXPECT_EQ(parts.adapters.size(), 1u);
  EXPECT_TRUE(IsResidual(path + ".residual.lora_B"));
  EXPECT_FALSE(IsResidual(path + ".adapter.lora_B"));

  // Refused, naming the problem, and nothing changes.
  NamedTensors unpaired;
  unpaired.insert(path + ".residual.lora_A",
                  residuals[path + ".residual.lora_A"]);
  absl::Status s = AddResiduals(*vit, unpaired);
  EXPECT_NE(s.message().find("without its lora_B"), std::string::npos) << s;
  NamedTensors wrong = residuals;
  wrong[path + ".residual.lora_B"] = torch::randn({16, 3});
  s = AddResiduals(*vit, wrong);
  EXPECT_NE(s.message().find("should be float [k, 32]"), std::string::npos)
      << s;
  NamedTensors nan = residuals;
  nan[path + ".residual.lora_A"] = residuals[path + ".residual.lora_A"].clone();
  nan[path + ".residual.lora_A"][0][0] =
      std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(AddResiduals(*vit, nan).code(), absl::StatusCode::kInvalidArgument);
  NamedTensors elsewhere;
  elsewhere.insert("layers.9.mlp.residual.lora_A", torch::randn({3, 32}));
  elsewhere.insert("layers.9.mlp.residual.lora_B", torch::randn({32, 3}));
  s = AddResiduals(*vit, elsewhere);
  EXPECT_NE(s.message().find("names no Linear"), std::string::npos) << s;
  EXPECT_TRUE(torch::equal(vit->named_parameters()[path + ".weight"], before));

  ASSERT_TRUE(AddResiduals(*vit, residuals).ok());
  EXPECT_TRUE(
      torch::allclose(vit->named_parameters()[path + ".weight"],
                      before + residuals[path + ".residual.lora_B"].matmul(
                                   residuals[path + ".residual.lora_A"]),
                      1e-5, 1e-5));
}

TEST(LoraTest, InjectErrors) {
  model::Vit vit = SmallVit();
  LoraOptions none;
  none.target_modules = {"nope"};
  EXPECT_EQ(Inject(*vit, none).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(Inject(*vit, LoraOptions()).ok());
  EXPECT_EQ(Inject(*vit, LoraOptions()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  LoraOptions bad;
  bad.rank = 0;
  EXPECT_EQ(Inject(*SmallVit(), bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LoraTest, TrainingChangesOnlyTheAdapters) {
  torch::manual_seed(3);
  model::Vit vit = SmallVit();
  ASSERT_TRUE(Inject(*vit, LoraOptions()).ok());
  const model::NamedTensors before = model::CopyWeights(*vit);
  model::Dataset data;
  data.inputs = torch::randn({64, 1, 28, 28});
  data.targets = torch::randint(0, 10, {64}, torch::kLong);
  data.num_classes = 10;
  model::TrainOptions options;
  options.max_steps = 3;

  ASSERT_TRUE(model::Train(*vit, data, options).ok());

  for (const auto& item : vit->named_parameters()) {
    const bool is_adapter = item.key().find(".adapter.") != std::string::npos;
    const bool changed = !torch::equal(item.value(), before[item.key()]);
    EXPECT_EQ(changed, is_adapter) << item.key();
  }
  RemoveAdapters(*vit);
  EXPECT_TRUE(NamedAdapters(*vit).empty());
  EXPECT_EQ(model::CountParameters(*vit, true), model::CountParameters(*vit));
}

}  // namespace
}  // namespace fedge::lora
