#include "strategies/flat_layout.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include <torch/types.h>

namespace fedge::strategies {
namespace {

NamedTensors Named(at::Tensor a, at::Tensor b) {
  NamedTensors t;
  t.insert("a", std::move(a));
  t.insert("b", std::move(b));
  return t;
}

TEST(FlatLayoutTest, FlattensInTheReferencesOrderAndUnflattensBack) {
  const auto layout =
      FlatLayout::Create(Named(torch::zeros({2, 3}), torch::zeros({4})));
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout->length(), 10);
  // A transposed tensor flattens in its logical (row-major) order.
  const at::Tensor a = torch::arange(6, torch::kFloat).view({3, 2}).t();
  const at::Tensor b = torch::tensor({-1.0f, 0.5f, 2.0f, 3.0f});
  double norm = 0;
  const auto flat = layout->Flatten(Named(a, b), /*clip_norm=*/0, &norm);
  ASSERT_TRUE(flat.ok()) << flat.status();
  const std::vector<float> want = {0, 2, 4, 1, 3, 5, -1, 0.5, 2, 3};
  EXPECT_EQ(*flat, want);
  double squared = 0;
  for (float v : want) squared += v * v;
  EXPECT_DOUBLE_EQ(norm, std::sqrt(squared));
  const auto back =
      layout->Unflatten(std::vector<double>(flat->begin(), flat->end()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(torch::equal((*back)["a"], a.to(torch::kFloat64)));
  EXPECT_TRUE(torch::equal((*back)["b"], b.to(torch::kFloat64)));
}

TEST(FlatLayoutTest, ShapesRebuildTheSameLayout) {
  const auto layout =
      FlatLayout::Create(Named(torch::zeros({2, 3}), torch::zeros({4})));
  ASSERT_TRUE(layout.ok());
  const FlatLayout::Shapes shapes = layout->shapes();
  ASSERT_EQ(shapes.size(), 2u);
  EXPECT_EQ(shapes[0].first, "a");
  EXPECT_EQ(shapes[0].second, (std::vector<int64_t>{2, 3}));
  const auto rebuilt = FlatLayout::FromShapes(shapes);
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  EXPECT_EQ(rebuilt->length(), 10);
  const NamedTensors values =
      Named(torch::ones({2, 3}), torch::arange(4, torch::kFloat));
  EXPECT_EQ(*rebuilt->Flatten(values, 0), *layout->Flatten(values, 0));
  EXPECT_FALSE(FlatLayout::FromShapes({}).ok());
  EXPECT_FALSE(FlatLayout::FromShapes({{"a", {2}}, {"a", {3}}}).ok());
  EXPECT_FALSE(FlatLayout::FromShapes({{"a", {-2}}}).ok());
}

TEST(FlatLayoutTest, ClipsTheWholeVectorToItsNorm) {
  const auto layout =
      FlatLayout::Create(Named(torch::zeros({2}), torch::zeros({2})));
  double norm = 0;
  const auto flat = layout->Flatten(
      Named(torch::tensor({3.0f, 0.0f}), torch::tensor({0.0f, 4.0f})), 1.0,
      &norm);
  ASSERT_TRUE(flat.ok());
  EXPECT_DOUBLE_EQ(norm, 5.0);
  EXPECT_NEAR((*flat)[0], 0.6, 1e-6);
  EXPECT_NEAR((*flat)[3], 0.8, 1e-6);
  // Shorter than the clip: unchanged.
  const auto kept = layout->Flatten(
      Named(torch::tensor({0.3f, 0.0f}), torch::tensor({0.0f, 0.4f})), 1.0);
  EXPECT_FLOAT_EQ((*kept)[0], 0.3f);
}

TEST(FlatLayoutTest, RefusesWhatDoesNotFitNamingIt) {
  EXPECT_FALSE(FlatLayout::Create(NamedTensors()).ok());
  const auto layout =
      FlatLayout::Create(Named(torch::zeros({2, 3}), torch::zeros({4})));
  const auto refused = [&](const NamedTensors& t, const std::string& what) {
    const auto flat = layout->Flatten(t, 0);
    ASSERT_FALSE(flat.ok()) << what;
    EXPECT_EQ(flat.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(flat.status().message().find(what), std::string::npos)
        << flat.status();
  };
  refused(Named(torch::zeros({3, 2}), torch::zeros({4})),
          "'a' has shape [3, 2]");
  at::Tensor nan = torch::zeros({4});
  nan[0] = NAN;
  refused(Named(torch::zeros({2, 3}), nan), "'b' has NaN");
  NamedTensors renamed;
  renamed.insert("a", torch::zeros({2, 3}));
  renamed.insert("c", torch::zeros({4}));
  refused(renamed, "no tensor 'b'");
  NamedTensors one;
  one.insert("a", torch::zeros({2, 3}));
  refused(one, "1 tensors; expected 2");
  EXPECT_EQ(layout->Unflatten(std::vector<double>(9)).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<double> inf(10);
  inf[3] = INFINITY;
  EXPECT_EQ(layout->Unflatten(inf).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fedge::strategies
