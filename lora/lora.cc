#include "lora/lora.h"

#include <cmath>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include <torch/nn/functional/dropout.h>
#include <torch/types.h>

namespace fedge::lora {

absl::Status LoraOptions::Validate() const {
  if (rank < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("lora: rank must be at least 1, got ", rank));
  }
  if (!(alpha > 0) || !std::isfinite(alpha)) {
    return absl::InvalidArgumentError("lora: alpha must be positive");
  }
  if (!(dropout >= 0 && dropout < 1)) {
    return absl::InvalidArgumentError("lora: dropout must be in [0, 1)");
  }
  if (target_modules.empty()) {
    return absl::InvalidArgumentError("lora: no target modules");
  }
  return absl::OkStatus();
}

LoraAdapterImpl::LoraAdapterImpl(int64_t in_features, int64_t out_features,
                                 int64_t rank, double alpha, double dropout)
    : alpha_(alpha), dropout_(dropout) {
  // kaiming_uniform_(a=sqrt(5)) on [r, in] is U(-1/sqrt(in), 1/sqrt(in)).
  const double bound = in_features > 0 ? 1.0 / std::sqrt(in_features) : 0.0;
  lora_A = register_parameter(
      "lora_A", torch::empty({rank, in_features}).uniform_(-bound, bound));
  lora_B = register_parameter("lora_B", torch::zeros({out_features, rank}));
}

at::Tensor LoraAdapterImpl::Dropped(const at::Tensor& x) {
  if (dropout_ > 0 && is_training()) {
    return torch::nn::functional::dropout(
        x,
        torch::nn::functional::DropoutFuncOptions().p(dropout_).training(true));
  }
  return x;
}

at::Tensor LoraAdapterImpl::forward(const at::Tensor& x) {
  if (merged_) {
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = lora_B.size(0);
    return torch::zeros(shape, x.options());
  }
  // Scale the rank-r intermediate, not the [.., out] result: r << out.
  return torch::linear(torch::linear(Dropped(x), lora_A) * scale(), lora_B);
}

at::Tensor LoraAdapterImpl::AddTo(const at::Tensor& y, const at::Tensor& x) {
  if (merged_) return y;
  // y + scale * (A x) B^T as one GEMM that accumulates into a copy of y:
  // no [.., out] product of its own, no separate scale or sum.
  const at::Tensor low = torch::linear(Dropped(x), lora_A);
  const int64_t out = lora_B.size(0);
  return torch::addmm(y.reshape({-1, out}), low.reshape({-1, rank()}),
                      lora_B.t(), /*beta=*/1.0, /*alpha=*/scale())
      .view(y.sizes());
}

at::Tensor LoraAdapterImpl::DeltaWeight() const {
  return torch::matmul(lora_B, lora_A) * scale();
}

void LoraAdapterImpl::MergeInto(const at::Tensor& weight) {
  torch::NoGradGuard no_grad;
  weight.add_(DeltaWeight());
  merged_ = true;
}

void LoraAdapterImpl::UnmergeFrom(const at::Tensor& weight) {
  torch::NoGradGuard no_grad;
  weight.sub_(DeltaWeight());
  merged_ = false;
}

bool LoraOptions::Targets(absl::string_view path) const {
  const size_t dot = path.rfind('.');
  const absl::string_view last =
      dot == absl::string_view::npos ? path : path.substr(dot + 1);
  for (const std::string& t : target_modules) {
    if (last == t) return true;
  }
  return false;
}

std::vector<AdaptedLinear> NamedAdapters(torch::nn::Module& model) {
  std::vector<AdaptedLinear> out;
  for (auto& [path, linear] : model::NamedLinears(model)) {
    if (auto adapter =
            std::dynamic_pointer_cast<LoraAdapterImpl>(linear->adapter())) {
      out.push_back({path, linear, adapter});
    }
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> Inject(torch::nn::Module& model,
                                                const LoraOptions& options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  std::vector<std::pair<std::string, model::Linear>> targets;
  for (auto& [path, linear] : model::NamedLinears(model)) {
    if (!options.Targets(path)) continue;
    if (linear->adapter()) {
      return absl::FailedPreconditionError(
          absl::StrCat("lora: ", path, " already has an adapter"));
    }
    targets.emplace_back(path, linear);
  }
  if (targets.empty()) {
    return absl::NotFoundError("lora: no Linear matches the target modules");
  }
  for (at::Tensor& p : model.parameters(/*recurse=*/true)) {
    p.set_requires_grad(false);
  }
  std::vector<std::string> names;
  for (auto& [path, linear] : targets) {
    linear->SetAdapter(std::make_shared<LoraAdapterImpl>(
        linear->in_features(), linear->out_features(), options.rank,
        options.alpha, options.dropout));
    names.push_back(path);
  }
  return names;
}

NamedTensors ExtractAdapters(torch::nn::Module& model) {
  NamedTensors out;
  for (const AdaptedLinear& a : NamedAdapters(model)) {
    out.insert(absl::StrCat(a.path, ".", kLoraA),
               a.adapter->lora_A.detach().clone());
    out.insert(absl::StrCat(a.path, ".", kLoraB),
               a.adapter->lora_B.detach().clone());
  }
  return out;
}

absl::Status LoadAdapters(torch::nn::Module& model,
                          const NamedTensors& adapters) {
  NamedTensors expected = ExtractAdapters(model);
  std::set<std::string> known;
  for (const auto& item : expected) {
    const at::Tensor* given = adapters.find(item.key());
    if (given == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("lora: adapter tensor \"", item.key(), "\" is missing"));
    }
    if (!given->defined() || given->sizes() != item.value().sizes() ||
        !at::isFloatingType(given->scalar_type())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "lora: adapter tensor \"", item.key(),
          "\" should be a float tensor of shape ",
          c10::str(item.value().sizes()), ", got ",
          given->defined() ? c10::str(given->sizes()) : "undefined"));
    }
    if (!torch::isfinite(*given).all().item<bool>()) {
      return absl::InvalidArgumentError(
          absl::StrCat("lora: adapter tensor \"", item.key(),
                       "\" has NaN or infinite values"));
    }
    known.insert(item.key());
  }
  for (const auto& item : adapters) {
    if (known.count(item.key()) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("lora: unknown adapter tensor \"", item.key(), "\""));
    }
  }
  torch::NoGradGuard no_grad;
  for (const AdaptedLinear& a : NamedAdapters(model)) {
    a.adapter->lora_A.copy_(adapters[absl::StrCat(a.path, ".", kLoraA)]);
    a.adapter->lora_B.copy_(adapters[absl::StrCat(a.path, ".", kLoraB)]);
  }
  return absl::OkStatus();
}

bool IsResidual(absl::string_view name) {
  return absl::EndsWith(name, absl::StrCat(".", kResidualA)) ||
         absl::EndsWith(name, absl::StrCat(".", kResidualB));
}

SeparatedPayload SeparateResiduals(const NamedTensors& payload) {
  SeparatedPayload out;
  for (const auto& item : payload) {
    (IsResidual(item.key()) ? out.residuals : out.adapters)
        .insert(item.key(), item.value());
  }
  return out;
}

absl::Status AddResiduals(torch::nn::Module& model,
                          const NamedTensors& residuals) {
  const std::string suffix_a = absl::StrCat(".", kResidualA);
  const std::string suffix_b = absl::StrCat(".", kResidualB);
  NamedTensors weights = model.named_parameters(/*recurse=*/true);
  std::vector<std::pair<at::Tensor, at::Tensor>> products;  // weight, B A.
  for (const auto& item : residuals) {
    const std::string& name = item.key();
    if (absl::EndsWith(name, suffix_b)) {
      const std::string path = name.substr(0, name.size() - suffix_b.size());
      if (residuals.find(path + suffix_a) == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            "lora: residual \"", name, "\" comes without its lora_A"));
      }
      continue;
    }
    if (!absl::EndsWith(name, suffix_a)) {
      return absl::InvalidArgumentError(
          absl::StrCat("lora: \"", name, "\" is not a residual tensor"));
    }
    const std::string path = name.substr(0, name.size() - suffix_a.size());
    const at::Tensor* b = residuals.find(path + suffix_b);
    at::Tensor* weight = weights.find(path + ".weight");
    if (b == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "lora: residual \"", name, "\" comes without its lora_B"));
    }
    if (weight == nullptr || weight->dim() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "lora: residual \"", name, "\" names no Linear of the model"));
    }
    const at::Tensor& a = item.value();
    if (a.dim() != 2 || b->dim() != 2 || !at::isFloatingType(a.scalar_type()) ||
        !at::isFloatingType(b->scalar_type()) || a.size(0) != b->size(1) ||
        b->size(0) != weight->size(0) || a.size(1) != weight->size(1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "lora: residual of \"", path, "\" should be float [k, ",
          weight->size(1), "] and [", weight->size(0), ", k], got ",
          c10::str(a.sizes()), " and ", c10::str(b->sizes())));
    }
    if (!torch::isfinite(a).all().item<bool>() ||
        !torch::isfinite(*b).all().item<bool>()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "lora: residual of \"", path, "\" has NaN or infinite values"));
    }
    products.emplace_back(
        *weight,
        b->to(weight->scalar_type()).matmul(a.to(weight->scalar_type())));
  }
  torch::NoGradGuard no_grad;
  for (auto& [weight, product] : products) weight.add_(product);
  return absl::OkStatus();
}

namespace {

// Adds (sign +1) or subtracts (-1) every adapter's update to its base weight;
// `to_merged` is the adapters' state afterwards.
absl::Status SetMerged(torch::nn::Module& model, bool to_merged) {
  std::vector<AdaptedLinear> adapted = NamedAdapters(model);
  for (const AdaptedLinear& a : adapted) {
    if (a.adapter->merged() == to_merged) {
      return absl::FailedPreconditionError(
          absl::StrCat("lora: ", a.path,
                       to_merged ? " is already merged" : " is not merged"));
    }
  }
  for (AdaptedLinear& a : adapted) {
    if (to_merged) {
      a.adapter->MergeInto(a.linear->weight);
    } else {
      a.adapter->UnmergeFrom(a.linear->weight);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Merge(torch::nn::Module& model) { return SetMerged(model, true); }

absl::Status Unmerge(torch::nn::Module& model) {
  return SetMerged(model, false);
}

void RemoveAdapters(torch::nn::Module& model) {
  for (AdaptedLinear& a : NamedAdapters(model)) {
    a.linear->SetAdapter(nullptr);
  }
  for (at::Tensor& p : model.parameters(/*recurse=*/true)) {
    p.set_requires_grad(true);
  }
}

}  // namespace fedge::lora
