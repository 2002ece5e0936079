#include "model/model.h"

#include <set>

#include "absl/strings/str_cat.h"
#include <torch/types.h>

namespace fedge::model {

int64_t BlockActivationElements(const BlockShape& shape, int64_t tokens,
                                int64_t dim, int64_t head_dim,
                                int64_t mlp_tensors) {
  const int64_t attention =
      shape.num_heads == 0
          ? 0
          : tokens * (2 * dim + (2 * shape.num_heads + 2 * shape.num_kv_heads) *
                                    head_dim) +
                2 * shape.num_heads * tokens * tokens;
  const int64_t mlp = shape.mlp_hidden == 0
                          ? 0
                          : tokens * (2 * dim + mlp_tensors * shape.mlp_hidden);
  return attention + mlp;
}

absl::Status LoadWeights(torch::nn::Module& module,
                         const NamedTensors& weights) {
  NamedTensors params = module.named_parameters(/*recurse=*/true);
  // Validate everything first so a bad checkpoint never half-loads.
  std::set<std::string> seen;
  for (const auto& item : params) {
    const at::Tensor* source = weights.find(item.key());
    if (source == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("weights lack parameter \"", item.key(), "\""));
    }
    if (!source->defined() || !source->device().is_cpu()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "weight \"", item.key(), "\" is undefined or not on the CPU"));
    }
    if (source->sizes() != item.value().sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "weight \"", item.key(), "\" has shape ", c10::str(source->sizes()),
          ", the model expects ", c10::str(item.value().sizes())));
    }
    if (!at::isFloatingType(source->scalar_type())) {
      return absl::InvalidArgumentError(
          absl::StrCat("weight \"", item.key(), "\" has non-float dtype ",
                       c10::toString(source->scalar_type())));
    }
    if (!torch::isfinite(*source).all().item<bool>()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "weight \"", item.key(), "\" contains NaN or infinite values"));
    }
    seen.insert(item.key());
  }
  for (const auto& item : weights) {
    if (seen.count(item.key()) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("weights have unknown name \"", item.key(), "\""));
    }
  }
  torch::NoGradGuard no_grad;
  for (auto& item : params) {
    item.value().copy_(weights[item.key()]);
  }
  return absl::OkStatus();
}

NamedTensors CopyWeights(const torch::nn::Module& module) {
  NamedTensors out;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    out.insert(item.key(), item.value().detach().clone());
  }
  return out;
}

int64_t CountParameters(const torch::nn::Module& module, bool trainable_only) {
  int64_t count = 0;
  for (const at::Tensor& p : module.parameters(/*recurse=*/true)) {
    if (!trainable_only || p.requires_grad()) count += p.numel();
  }
  return count;
}

}  // namespace fedge::model
