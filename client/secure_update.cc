#include "client/secure_update.h"

#include <torch/types.h>

#include "lora/aggregate.h"

namespace fedge::client {

absl::StatusOr<std::vector<float>> SecureChange(
    const std::string& model_config_json, const pruning::PruningPlan& plan,
    double alpha, const model::NamedTensors& update,
    const model::NamedTensors& sent, const strategies::FlatLayout& layout,
    double clip_norm, double* norm) {
  torch::NoGradGuard no_grad;
  absl::StatusOr<model::NamedTensors> change =
      lora::AdapterChange(update, sent, alpha);
  if (!change.ok()) return change.status();
  model::NamedTensors weights;
  for (const auto& item : *change) {
    weights.insert(item.key() + ".weight", item.value());
  }
  absl::StatusOr<pruning::Scattered> full =
      pruning::ScatterTensors(model_config_json, plan, weights);
  if (!full.ok()) return full.status();
  return layout.Flatten(full->tensors, clip_norm, norm);
}

}  // namespace fedge::client
