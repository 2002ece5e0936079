#include "strategies/flat_layout.h"

#include <cmath>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include <torch/torch.h>

namespace fedge::strategies {

absl::StatusOr<FlatLayout> FlatLayout::Create(const NamedTensors& reference) {
  Shapes shapes;
  for (const auto& item : reference) {
    shapes.emplace_back(item.key(), item.value().sizes().vec());
  }
  return FromShapes(shapes);
}

absl::StatusOr<FlatLayout> FlatLayout::FromShapes(const Shapes& shapes) {
  if (shapes.empty()) {
    return absl::InvalidArgumentError("flat layout: no tensors");
  }
  FlatLayout layout;
  std::set<std::string> seen;
  for (const auto& [name, shape] : shapes) {
    if (name.empty() || !seen.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "flat layout: empty or repeated tensor name '", name, "'"));
    }
    Entry entry;
    entry.name = name;
    entry.shape = shape;
    entry.offset = layout.length_;
    entry.size = 1;
    for (int64_t d : shape) {
      if (d < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("flat layout: '", name, "' has a negative dimension"));
      }
      entry.size *= d;
    }
    layout.length_ += entry.size;
    layout.entries_.push_back(std::move(entry));
  }
  return layout;
}

FlatLayout::Shapes FlatLayout::shapes() const {
  Shapes out;
  for (const Entry& entry : entries_) out.emplace_back(entry.name, entry.shape);
  return out;
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
