#include "tests/testing/tiny_models.h"

namespace fedge::testing {

model::Vit TinyVit(int64_t mlp_hidden) {
  model::VitConfig config;
  config.dim = 32;
  config.head_dim = 8;
  config.layers.assign(2, model::BlockShape{4, 4, mlp_hidden});
  return *model::CreateVit(config);
}

}  // namespace fedge::testing
