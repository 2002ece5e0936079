#include "model/layers.h"

#include "gtest/gtest.h"
#include <torch/types.h>

namespace fedge::model {
namespace {

// Adds a constant, so the test can see the slot is wired in.
class ConstantAdapterImpl : public AdapterImpl {
 public:
  explicit ConstantAdapterImpl(float value) {
    offset = register_parameter("offset", torch::full({1}, value));
  }
  at::Tensor forward(const at::Tensor& x) override {
    return torch::zeros_like(x).narrow(-1, 0, 1) + offset;
  }
  at::Tensor offset;
};

TEST(LinearTest, AdapterOutputIsAddedAndNamedUnderTheLinear) {
  torch::manual_seed(0);
  Linear linear(3, 1, /*bias=*/true);
  const at::Tensor x = torch::randn({2, 3});
  const at::Tensor plain = linear(x);

  linear->SetAdapter(std::make_shared<ConstantAdapterImpl>(5.0f));

  EXPECT_TRUE(torch::allclose(linear(x), plain + 5.0));
  EXPECT_NE(linear->named_parameters().find("adapter.offset"), nullptr);
  linear->SetAdapter(nullptr);
  EXPECT_TRUE(torch::allclose(linear(x), plain));
  EXPECT_EQ(linear->named_parameters().find("adapter.offset"), nullptr);
}

TEST(AttentionTest, GroupedKvHeadsEqualRepeatedFullHeads) {
  torch::manual_seed(1);
  AttentionOptions gqa;
  gqa.dim = 16;
  gqa.head_dim = 4;
  gqa.num_heads = 4;
  gqa.num_kv_heads = 2;
  gqa.causal = true;
  Attention grouped(gqa);
  AttentionOptions full = gqa;
  full.num_kv_heads = 4;
  Attention expanded(full);
  {
    torch::NoGradGuard no_grad;
    expanded->q_proj->weight.copy_(grouped->q_proj->weight);
    expanded->q_proj->bias.copy_(grouped->q_proj->bias);
    expanded->o_proj->weight.copy_(grouped->o_proj->weight);
    expanded->o_proj->bias.copy_(grouped->o_proj->bias);
    // KV head h serves query heads 2h and 2h+1: repeat its rows.
    for (auto [from, to] : {std::pair{grouped->k_proj, expanded->k_proj},
                            std::pair{grouped->v_proj, expanded->v_proj}}) {
      to->weight.copy_(from->weight.view({2, 1, 4, 16})
                           .expand({2, 2, 4, 16})
                           .reshape({16, 16}));
      to->bias.copy_(
          from->bias.view({2, 1, 4}).expand({2, 2, 4}).reshape({16}));
    }
  }
  const at::Tensor x = torch::randn({2, 5, 16});
  auto [cos, sin] = RotaryTables(5, RotaryInverseFrequencies(4, 10000.0));

  EXPECT_TRUE(
      torch::allclose(grouped(x, cos, sin), expanded(x, cos, sin), 1e-5, 1e-6));
}

TEST(AttentionTest, CausalMaskHidesTheFuture) {
  torch::manual_seed(2);
  AttentionOptions options;
  options.dim = 8;
  options.head_dim = 4;
  options.num_heads = 2;
  options.num_kv_heads = 2;
  options.causal = true;
  Attention attention(options);
  at::Tensor x = torch::randn({1, 6, 8});
  const at::Tensor before = attention(x);

  at::Tensor changed = x.clone();
  changed.select(1, 5).add_(10.0);  // Perturb only the last position.

  const at::Tensor after = attention(changed);
  EXPECT_TRUE(torch::allclose(before.narrow(1, 0, 5), after.narrow(1, 0, 5)));
  EXPECT_FALSE(torch::allclose(before.select(1, 5), after.select(1, 5)));
}

TEST(AttentionTest, ZeroHeadsGiveOnlyTheOutputBias) {
  AttentionOptions options;
  options.dim = 8;
  options.num_heads = 0;
  options.num_kv_heads = 0;
  Attention attention(options);
  const at::Tensor out = attention(torch::randn({2, 3, 8}));
  EXPECT_TRUE(torch::allclose(out, attention->o_proj->bias.expand({2, 3, 8})));
}

TEST(LayersTest, NamedLinearsAndFindLinearUseDottedPaths) {
  Mlp mlp(4, 8, MlpKind::kSwiGlu, /*bias=*/false);
  std::vector<std::string> names;
  for (const auto& [name, linear] : NamedLinears(*mlp)) names.push_back(name);
  EXPECT_EQ(names,
            (std::vector<std::string>{"gate_proj", "up_proj", "down_proj"}));
  absl::StatusOr<Linear> down = FindLinear(*mlp, "down_proj");
  ASSERT_TRUE(down.ok());
  EXPECT_EQ((*down)->in_features(), 8);
  EXPECT_EQ(FindLinear(*mlp, "nope").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(LayersTest, ValidateBlockShapeRejectsBadWidths) {
  EXPECT_TRUE(ValidateBlockShape({4, 2, 16}, 0).ok());
  EXPECT_TRUE(ValidateBlockShape({0, 0, 0}, 0).ok());
  EXPECT_FALSE(ValidateBlockShape({4, 3, 16}, 0).ok());
  EXPECT_FALSE(ValidateBlockShape({4, 0, 16}, 0).ok());
  EXPECT_FALSE(ValidateBlockShape({4, 4, -1}, 2).ok());
}

}  // namespace
}  // namespace fedge::model
