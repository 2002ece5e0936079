#include "model/model.h"

#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include <torch/types.h>

namespace fedge::model {

int64_t ModelImpl::HeadTrainingActivationBytes(at::IntArrayRef input_shape,
                                               int64_t cut) const {
  return HeadTrainingActivationBytes(input_shape, cut, block_shapes());
}

int64_t ModelImpl::HeadTrainingActivationBytes(
    at::IntArrayRef input_shape, int64_t cut,
    const std::vector<BlockShape>& shapes) const {
  int64_t per_sample = EmbeddingActivationElements(input_shape);
  for (int64_t i = 0; i < cut; ++i) {
    per_sample += BlockActivationElementsOf(input_shape, shapes.at(i));
  }
  return input_shape[0] * per_sample * 4;
}

int64_t ModelImpl::TrainingActivationBytes(at::IntArrayRef input_shape) const {
  return TrainingActivationBytes(input_shape, block_shapes());
}

int64_t ModelImpl::TrainingActivationBytes(
    at::IntArrayRef input_shape, const std::vector<BlockShape>& shapes) const {
  const auto blocks = static_cast<int64_t>(shapes.size());
  return HeadTrainingActivationBytes(input_shape, blocks, shapes) +
         input_shape[0] * OutputActivationElements(input_shape) * 4;
}

absl::Status ModelImpl::ValidateCut(int64_t cut) const {
  const auto blocks = static_cast<int64_t>(block_shapes().size());
  if (cut < 1 || cut > blocks) {
    return absl::InvalidArgumentError(
        absl::StrCat("split cut ", cut, " is outside [1, ", blocks,
                     "] (the model has ", blocks, " blocks)"));
  }
  return absl::OkStatus();
}

absl::Status ModelImpl::ValidateHidden(const at::Tensor& hidden) const {
  if (!hidden.defined()) {
    return absl::InvalidArgumentError("hidden states undefined");
  }
  if (hidden.dim() != 3 || hidden.size(0) < 1 || hidden.size(1) < 1 ||
      hidden.size(1) > max_tokens() || hidden.size(2) != hidden_dim()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "hidden states have shape ", c10::str(hidden.sizes()),
        ", expected [B >= 1, 1..", max_tokens(), ", ", hidden_dim(), "]"));
  }
  if (hidden.scalar_type() != torch::kFloat32) {
    return absl::InvalidArgumentError(
        absl::StrCat("hidden states have dtype ",
                     c10::toString(hidden.scalar_type()), ", expected Float"));
  }
  if (!torch::isfinite(hidden).all().item<bool>()) {
    return absl::InvalidArgumentError("hidden states contain NaN or Inf");
  }
  return absl::OkStatus();
}

bool ModelImpl::InHead(absl::string_view name, int64_t cut) const {
  for (const std::string& prefix : embedding_prefixes()) {
    if (absl::StartsWith(name, prefix)) return true;
  }
  for (int64_t i = 0; i < cut; ++i) {
    if (absl::StartsWith(name, block_prefix(i))) return true;
  }
  return false;
}

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

void DropWeights(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& item : module.named_parameters(/*recurse=*/true)) {
    at::Tensor& p = item.value();
    p.set_data(at::zeros({}, p.options()).expand(p.sizes()));
  }
}

int64_t CountParameters(const torch::nn::Module& module, bool trainable_only) {
  int64_t count = 0;
  for (const at::Tensor& p : module.parameters(/*recurse=*/true)) {
    if (!trainable_only || p.requires_grad()) count += p.numel();
  }
  return count;
}

}  // namespace fedge::model
