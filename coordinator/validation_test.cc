#include "coordinator/validation.h"

#include <cmath>
#include <set>

#include "gtest/gtest.h"
#include <torch/torch.h>

#include "model/partition.h"
#include "model/trainer.h"
#include "tests/testing/tiny_models.h"

namespace fedge::coordinator {
namespace {

// Image i is filled with the value i, so images can be told apart.
model::Dataset Numbered(int64_t n) {
  model::Dataset data;
  data.inputs = torch::arange(n, torch::kFloat)
                    .view({n, 1, 1, 1})
                    .expand({n, 1, 28, 28})
                    .contiguous();
  data.targets = torch::remainder(torch::arange(n, torch::kLong), 10);
  data.num_classes = 10;
  return data;
}

TEST(PublicValidationSetTest, HoldsOnlyPublicImagesAndNoDevicesOnes) {
  const model::Dataset train = Numbered(200);
  absl::StatusOr<model::Dataset> v = PublicValidationSet(train, 0.1, 7, 15);
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ(v->size(), 15);
  absl::StatusOr<model::PublicSplit> split = model::SplitPublic(200, 0.1, 7);
  ASSERT_TRUE(split.ok());
  const std::set<int64_t> public_ids(split->public_indices.begin(),
                                     split->public_indices.end());
  for (int64_t i = 0; i < v->size(); ++i) {
    const auto id = static_cast<int64_t>(v->inputs[i][0][0][0].item<float>());
    EXPECT_TRUE(public_ids.count(id)) << "image " << id << " is a device's";
    EXPECT_EQ(v->targets[i].item<int64_t>(), id % 10);
  }
  // The split is smaller than asked for: all of it.
  EXPECT_EQ(PublicValidationSet(train, 0.1, 7, 1000)->size(), 20);
  EXPECT_EQ(PublicValidationSet(train, 0.1, 7, 0)->size(), 0);
  EXPECT_EQ(PublicValidationSet(train, 1.5, 7, 10).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ValidationLossTest, IsTheModelsMeanLossOrAbsentWithoutData) {
  model::Dataset data;
  data.inputs = torch::randn({24, 1, 28, 28});
  data.targets = torch::randint(0, 10, {24}, torch::kLong);
  data.num_classes = 10;
  model::Vit vit = testing::TinyVit(16);
  const auto loss = ValidationLoss(&data);
  ASSERT_TRUE(loss);
  absl::StatusOr<double> l = loss(*vit);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_TRUE(std::isfinite(*l));
  EXPECT_NEAR(*l, model::Evaluate(*vit, data)->loss, 1e-9);
  const model::Dataset empty;
  EXPECT_FALSE(ValidationLoss(&empty));
}

}  // namespace
}  // namespace fedge::coordinator
