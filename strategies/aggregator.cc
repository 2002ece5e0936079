#include "strategies/aggregator.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>

namespace fedge::strategies {
namespace {

std::string ShapeString(const at::Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.sizes(), ","), "]");
}

// The type a tensor's changes are summed in: its own, at least float32.
at::ScalarType SumType(const at::Tensor& reference) {
  return at::promote_types(reference.scalar_type(), torch::kFloat32);
}

}  // namespace

void UpdateAggregator::Slot::AddCoverage(const at::Tensor& cover,
                                         double weight) {
  if (!coverage.defined()) {
    coverage = torch::zeros(cover.sizes(), torch::kFloat64);
  }
  coverage.add_(cover, weight);
}

void UpdateAggregator::Slot::AddWeighted(at::Tensor delta, double weight) {
  if (weighted.defined()) {
    weighted.add_(delta, weight);
  } else {
    weighted = weight == 1 ? std::move(delta) : delta.mul_(weight);
  }
}

absl::Status UpdateAggregator::NamesKnown(const NamedTensors& tensors,
                                          absl::string_view what) const {
  for (const auto& item : tensors) {
    if (slots_.count(item.key()) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " names unknown tensor '", item.key(), "'"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<AggregatorKind> ParseAggregatorKind(absl::string_view name) {
  if (name == "mean") return AggregatorKind::kMean;
  if (name == "median") return AggregatorKind::kMedian;
  if (name == "trimmed_mean") return AggregatorKind::kTrimmedMean;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown aggregator '", name, "' (want mean, median or trimmed_mean)"));
}

absl::StatusOr<std::unique_ptr<UpdateAggregator>> UpdateAggregator::Create(
    const NamedTensors& reference, const AggregatorOptions& options) {
  if (!(options.trim_fraction >= 0 && options.trim_fraction < 0.5)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "trim_fraction must be in [0, 0.5); got ", options.trim_fraction));
  }
  if (!(options.clip_norm >= 0) || !std::isfinite(options.clip_norm)) {
    return absl::InvalidArgumentError(
        absl::StrCat("clip_norm must be >= 0; got ", options.clip_norm));
  }
  if (!(options.noise_stddev >= 0) || !std::isfinite(options.noise_stddev)) {
    return absl::InvalidArgumentError(
        absl::StrCat("noise_stddev must be >= 0; got ", options.noise_stddev));
  }
  if (!(options.fixed_denominator >= 0) ||
      !std::isfinite(options.fixed_denominator) ||
      (options.fixed_denominator > 0 &&
       options.kind != AggregatorKind::kMean) ||
      (options.noise_stddev > 0 && options.fixed_denominator == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a fixed denominator (got ", options.fixed_denominator,
        ") must be >= 0, is for the mean only, and noise needs one"));
  }
  if (reference.is_empty()) {
    return absl::InvalidArgumentError("aggregation reference is empty");
  }
  auto aggregator =
      std::unique_ptr<UpdateAggregator>(new UpdateAggregator(options));
  for (const auto& item : reference) {
    const at::Tensor& t = item.value();
    if (!t.is_floating_point() || !torch::isfinite(t).all().item<bool>()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "aggregation reference '", item.key(), "' is not finite floats"));
    }
    Slot& slot = aggregator->slots_[item.key()];
    // Shared: a model-sized copy a round saved (GlobalModel replaces its
    // tensors on commit, never writes into them).
    slot.reference = t.detach();
    aggregator->order_.push_back(item.key());
  }
  return aggregator;
}

absl::StatusOr<double> UpdateAggregator::Add(const NamedTensors& values,
                                             const NamedTensors& coverage,
                                             double weight) {
  torch::NoGradGuard no_grad;
  if (!(weight > 0) || !std::isfinite(weight)) {
    return absl::InvalidArgumentError(
        absl::StrCat("update weight must be > 0; got ", weight));
  }
  if (values.size() != order_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "update has ", values.size(), " tensors; expected ", order_.size()));
  }
  // Validate everything before touching the aggregate.
  std::vector<const at::Tensor*> checked;  // Per name in order_: the value.
  std::vector<const at::Tensor*> covers;   // Its 0/1 mask, or nullptr.
  for (const std::string& name : order_) {
    const at::Tensor* value = values.find(name);
    const Slot& slot = slots_.at(name);
    if (value == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("update lacks tensor '", name, "'"));
    }
    if (value->sizes() != slot.reference.sizes() ||
        !value->is_floating_point()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "update tensor '", name, "' has shape ", ShapeString(*value),
          "; expected floats of shape ", ShapeString(slot.reference)));
    }
    if (!torch::isfinite(*value).all().item<bool>()) {
      return absl::InvalidArgumentError(
          absl::StrCat("update tensor '", name, "' has NaN or Inf values"));
    }
    const at::Tensor* cover = coverage.find(name);
    if (cover != nullptr &&
        (cover->sizes() != slot.reference.sizes() ||
         !((*cover == 0) | (*cover == 1)).all().item<bool>())) {
      return absl::InvalidArgumentError(
          absl::StrCat("coverage of '", name, "' must be a 0/1 mask of shape ",
                       ShapeString(slot.reference)));
    }
    checked.push_back(value);
    covers.push_back(cover);
  }
  if (absl::Status known = NamesKnown(coverage, "coverage"); !known.ok()) {
    return known;
  }
  // The change of one tensor, in the sum's type: a copy of the value with
  // the reference subtracted in place, masked. Only one tensor's change is
  // alive at a time, so clipping, which needs the norm first, computes it
  // twice.
  const auto delta_of = [&](size_t i) {
    const Slot& slot = slots_.at(order_[i]);
    at::Tensor delta = checked[i]
                           ->to(SumType(slot.reference), /*non_blocking=*/false,
                                /*copy=*/true)
                           .sub_(slot.reference);
    if (covers[i] != nullptr) delta.mul_(*covers[i]);
    return delta;
  };
  const auto squared = [](const at::Tensor& delta) {
    // In float64, one tensor at a time; reshape keeps a transposed value's
    // strides apart.
    const at::Tensor flat = delta.reshape({-1}).to(torch::kFloat64);
    return torch::dot(flat, flat).item<double>();
  };
  const bool clip = options_.clip_norm > 0;
  double squared_norm = 0;
  if (clip) {
    for (size_t i = 0; i < order_.size(); ++i) {
      squared_norm += squared(delta_of(i));
    }
  }
  const double clip_norm = std::sqrt(squared_norm);
  const double scale = clip && clip_norm > options_.clip_norm
                           ? options_.clip_norm / clip_norm
                           : 1.0;
  for (size_t i = 0; i < order_.size(); ++i) {
    Slot& slot = slots_.at(order_[i]);
    at::Tensor delta = delta_of(i);
    if (!clip) squared_norm += squared(delta);
    const at::Tensor* cover = covers[i];
    if (options_.kind == AggregatorKind::kMean) {
      slot.AddWeighted(std::move(delta), weight * scale);
      if (cover != nullptr) {
        slot.AddCoverage(*cover, weight);
      } else {
        slot.full_weight += weight;
      }
    } else {
      slot.deltas.push_back((delta * scale).to(torch::kFloat32));
      slot.covers.push_back(cover != nullptr ? cover->to(torch::kFloat32)
                                             : at::Tensor());
    }
  }
  const double norm = std::sqrt(squared_norm);
  ++count_;
  return norm;
}

absl::Status UpdateAggregator::AddSum(const NamedTensors& weighted_sum,
                                      const NamedTensors& coverage_sum,
                                      int64_t clients) {
  torch::NoGradGuard no_grad;
  if (options_.kind != AggregatorKind::kMean) {
    return absl::FailedPreconditionError(
        "a secure sum needs the mean: the median and trimmed mean need each "
        "update");
  }
  if (options_.clip_norm > 0) {
    return absl::FailedPreconditionError(
        "a sum cannot be clipped: under secure aggregation the clients clip");
  }
  if (clients < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("a sum of ", clients, " clients"));
  }
  if (weighted_sum.size() != order_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sum has ", weighted_sum.size(), " tensors; expected ", order_.size()));
  }
  if (absl::Status known = NamesKnown(coverage_sum, "coverage sum");
      !known.ok()) {
    return known;
  }
  for (const std::string& name : order_) {
    const at::Tensor* sum = weighted_sum.find(name);
    const at::Tensor& reference = slots_.at(name).reference;
    if (sum == nullptr || sum->sizes() != reference.sizes() ||
        !sum->is_floating_point() ||
        !torch::isfinite(*sum).all().item<bool>()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sum of '", name, "' must be finite floats of shape ",
                       ShapeString(reference)));
    }
    const at::Tensor* cover = coverage_sum.find(name);
    if (cover != nullptr &&
        ((cover->dim() != 0 && cover->sizes() != reference.sizes()) ||
         !torch::isfinite(*cover).all().item<bool>() ||
         (*cover < 0).any().item<bool>())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "coverage sum of '", name, "' must be a scalar or of shape ",
          ShapeString(reference), ", finite and >= 0"));
    }
  }
  for (const std::string& name : order_) {
    Slot& slot = slots_.at(name);
    slot.AddWeighted(
        weighted_sum.find(name)->to(SumType(slot.reference),
                                    /*non_blocking=*/false, /*copy=*/true),
        1.0);
    const at::Tensor* cover = coverage_sum.find(name);
    if (cover == nullptr) {
      slot.full_weight += static_cast<double>(clients);
    } else if (cover->dim() == 0) {
      slot.full_weight += cover->item<double>();
    } else {
      slot.AddCoverage(*cover, 1.0);
    }
  }
  count_ += clients;
  return absl::OkStatus();
}

absl::StatusOr<NamedTensors> UpdateAggregator::Finish() const {
  torch::NoGradGuard no_grad;
  if (count_ == 0) {
    return absl::FailedPreconditionError("no updates to aggregate");
  }
  NamedTensors result;
  at::Generator noise =
      at::make_generator<at::CPUGeneratorImpl>(options_.noise_seed);
  for (const std::string& name : order_) {
    const Slot& slot = slots_.at(name);
    at::Tensor delta;
    if (options_.fixed_denominator > 0) {
      // The noised sum where this round's clients covered a value. Under
      // differential privacy every device has the same plan (the engine
      // refuses per-device arms), so that is the plan's coverage, which
      // the coordinator chose and which reveals nothing of the data. (A
      // secure sum carries the devices' own noise on every value: the
      // uncovered ones are dropped the same way.)
      at::Tensor noised =
          torch::randn(slot.weighted.sizes(), noise, torch::kFloat64)
              .mul_(options_.noise_stddev)
              .to(slot.weighted.scalar_type())
              .add_(slot.weighted);
      if (slot.full_weight == 0 && slot.coverage.defined()) {
        noised.mul_(slot.coverage > 0);
      }
      delta = noised.div_(options_.fixed_denominator);
    } else if (options_.kind == AggregatorKind::kMean &&
               !slot.coverage.defined() && slot.full_weight > 0) {
      // Every update covered the whole tensor (dense FedAvg): two passes
      // with the tail's addition, the same values as the general case
      // below.
      delta = slot.weighted.div(slot.full_weight);
    } else if (options_.kind == AggregatorKind::kMean) {
      at::Tensor denominator =
          slot.coverage.defined()
              ? slot.coverage + slot.full_weight
              : torch::full(slot.weighted.sizes(), slot.full_weight,
                            torch::kFloat64);
      delta = torch::where(denominator > 0,
                           slot.weighted / denominator.clamp_min(1e-300),
                           torch::zeros_like(slot.weighted));
    } else {
      const at::Tensor d = torch::stack(slot.deltas);
      std::vector<at::Tensor> covers;
      for (const at::Tensor& c : slot.covers) {
        covers.push_back(c.defined() ? c
                                     : torch::ones_like(slot.deltas.front()));
      }
      const at::Tensor held = torch::stack(covers) > 0;
      if (options_.kind == AggregatorKind::kMedian) {
        delta = std::get<0>(
            torch::nanmedian(torch::where(held, d, NAN), /*dim=*/0));
        delta = torch::nan_to_num(delta, 0.0);
      } else {
        const auto k = slot.deltas.size();
        const at::Tensor sorted = std::get<0>(torch::sort(
            torch::where(held, d, std::numeric_limits<float>::infinity()),
            /*dim=*/0));
        const at::Tensor n = held.sum(0);
        const at::Tensor trim =
            torch::floor(n.to(torch::kFloat64) * options_.trim_fraction)
                .to(torch::kLong);
        std::vector<int64_t> index_shape(d.dim(), 1);
        index_shape[0] = static_cast<int64_t>(k);
        const at::Tensor index =
            torch::arange(static_cast<int64_t>(k)).view(index_shape);
        const at::Tensor keep = (index >= trim) & (index < n - trim);
        const at::Tensor total =
            torch::where(keep, sorted, torch::zeros_like(sorted)).sum(0);
        const at::Tensor count = keep.sum(0);
        delta = torch::where(count > 0, total / count.clamp_min(1),
                             torch::zeros_like(total));
      }
    }
    // Every delta above is a new tensor: the reference is added into it,
    // in the sum's type, without another model-sized temporary.
    result.insert(name, delta.to(SumType(slot.reference))
                            .add_(slot.reference)
                            .to(slot.reference.scalar_type()));
  }
  return result;
}

}  // namespace fedge::strategies
