#include "strategies/flat_layout.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include <torch/torch.h>

namespace fedge::strategies {

absl::StatusOr<FlatLayout> FlatLayout::Create(const NamedTensors& reference) {
  if (reference.is_empty()) {
    return absl::InvalidArgumentError("flat layout: the reference is empty");
  }
  FlatLayout layout;
  for (const auto& item : reference) {
    Entry entry;
    entry.name = item.key();
    entry.shape = item.value().sizes().vec();
    entry.offset = layout.length_;
    entry.size = item.value().numel();
    layout.length_ += entry.size;
    layout.entries_.push_back(std::move(entry));
  }
  return layout;
}

absl::StatusOr<std::vector<float>> FlatLayout::Flatten(
    const NamedTensors& tensors, double clip_norm, double* norm) const {
  torch::NoGradGuard no_grad;
  if (tensors.size() != entries_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("flat layout: ", tensors.size(), " tensors; expected ",
                     entries_.size()));
  }
  std::vector<float> flat(static_cast<size_t>(length_));
  for (const Entry& entry : entries_) {
    const at::Tensor* value = tensors.find(entry.name);
    if (value == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("flat layout: no tensor '", entry.name, "'"));
    }
    if (value->sizes().vec() != entry.shape || !value->is_floating_point()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "flat layout: '", entry.name, "' has shape [",
          absl::StrJoin(value->sizes().vec(), ", "), "]; expected floats of [",
          absl::StrJoin(entry.shape, ", "), "]"));
    }
    const at::Tensor contiguous = value->to(torch::kFloat32).contiguous();
    if (!torch::isfinite(contiguous).all().item<bool>()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "flat layout: '", entry.name, "' has NaN or Inf values"));
    }
    std::memcpy(flat.data() + entry.offset, contiguous.data_ptr<float>(),
                sizeof(float) * static_cast<size_t>(entry.size));
  }
  double squared = 0;
  for (float v : flat) squared += static_cast<double>(v) * v;
  const double length = std::sqrt(squared);
  if (norm != nullptr) *norm = length;
  if (clip_norm > 0 && length > clip_norm) {
    const double scale = clip_norm / length;
    for (float& v : flat) v = static_cast<float>(v * scale);
  }
  return flat;
}

absl::StatusOr<NamedTensors> FlatLayout::Unflatten(
    const std::vector<double>& flat) const {
  torch::NoGradGuard no_grad;
  if (static_cast<int64_t>(flat.size()) != length_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "flat layout: ", flat.size(), " values; expected ", length_));
  }
  for (double v : flat) {
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(
          "flat layout: the sum has NaN or Inf values");
    }
  }
  NamedTensors tensors;
  for (const Entry& entry : entries_) {
    at::Tensor t = torch::empty(entry.shape, torch::kFloat64);
    std::memcpy(t.data_ptr<double>(), flat.data() + entry.offset,
                sizeof(double) * static_cast<size_t>(entry.size));
    tensors.insert(entry.name, std::move(t));
  }
  return tensors;
}

}  // namespace fedge::strategies
