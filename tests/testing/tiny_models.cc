#include "tests/testing/tiny_models.h"

#include <torch/types.h>

namespace fedge::testing {

model::Vit TinyVit(int64_t mlp_hidden) {
  model::VitConfig config;
  config.dim = 32;
  config.head_dim = 8;
  config.layers.assign(2, model::BlockShape{4, 4, mlp_hidden});
  return *model::CreateVit(config);
}

split::StepRequest TinyVitSplitStep(int64_t step, int64_t batch) {
  split::StepRequest r;
  r.step = step;
  r.applied_steps = step - 1;
  r.total_steps = 2;
  r.activations = torch::randn({batch, 17, 32});
  r.targets = torch::arange(batch, torch::kLong);
  return r;
}

}  // namespace fedge::testing
