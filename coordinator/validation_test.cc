#include "coordinator/validation.h"

#include <cmath>

#include "gtest/gtest.h"
#include <torch/torch.h>

#include "model/trainer.h"
#include "tests/testing/tiny_models.h"

namespace fedge::coordinator {
namespace {

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
