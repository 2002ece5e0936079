// LoRA adapters on fedge models: a frozen base weight W plus a trainable
// low-rank update, y = W x + b + scale * B (A dropout(x)), scale = alpha / r,
// A [r, in], B [out, r]. B starts at zero, so a fresh adapter leaves the
// model's outputs unchanged.
//
// Adapters sit in model::Linear's adapter slot, so their parameters are
// named "<linear path>.adapter.lora_A" / ".adapter.lora_B" (for example
// "layers.0.self_attn.q_proj.adapter.lora_A"). Those names are the exchange
// format between coordinator and clients.
//
// Thread-compatible, like the modules they change.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include <ATen/core/Tensor.h>

#include "model/layers.h"
#include "model/model.h"

namespace fedge::lora {

using model::NamedTensors;

inline constexpr char kLoraA[] = "adapter.lora_A";
inline constexpr char kLoraB[] = "adapter.lora_B";

struct LoraOptions {
  int64_t rank = 8;      // r >= 1.
  double alpha = 16.0;   // Effective scale alpha / rank.
  double dropout = 0.0;  // On the adapter's input, in training mode only.
  // A Linear is wrapped when the last component of its dotted path is one of
  // these (PEFT's rule), e.g. "q_proj" matches "layers.3.self_attn.q_proj".
  std::vector<std::string> target_modules = {"q_proj", "v_proj"};

  // InvalidArgument naming the bad field.
  absl::Status Validate() const;
  double scale() const { return alpha / static_cast<double>(rank); }
  // Whether the Linear at dotted `path` is a target (the rule above).
  bool Targets(absl::string_view path) const;
};

class LoraAdapterImpl : public model::AdapterImpl {
 public:
  // A is initialised like PEFT's (Kaiming-uniform, a = sqrt(5)), B to zero.
  LoraAdapterImpl(int64_t in_features, int64_t out_features, int64_t rank,
                  double alpha, double dropout);

  // scale * B A dropout(x); zeros while merged.
  at::Tensor forward(const at::Tensor& x) override;
  // y + forward(x), fused into one matrix product.
  at::Tensor AddTo(const at::Tensor& y, const at::Tensor& x) override;

  // scale * B A, [out, in].
  at::Tensor DeltaWeight() const;

  int64_t rank() const { return lora_A.size(0); }
  double alpha() const { return alpha_; }
  double dropout() const { return dropout_; }
  double scale() const { return alpha_ / static_cast<double>(rank()); }
  bool merged() const { return merged_; }

  // Adds (merge) or subtracts (unmerge) DeltaWeight() to `weight`, the base
  // weight this adapter wraps, and records the state. Use Merge/Unmerge.
  void MergeInto(const at::Tensor& weight);
  void UnmergeFrom(const at::Tensor& weight);

  at::Tensor lora_A;  // [r, in]
  at::Tensor lora_B;  // [out, r]

 private:
  // x after the adapter's dropout (training mode only).
  at::Tensor Dropped(const at::Tensor& x);

  double alpha_;
  double dropout_;
  bool merged_ = false;
};

// A LoRA adapter and the Linear it wraps.
struct AdaptedLinear {
  std::string
      path;  // The Linear's dotted path, e.g. "layers.0.self_attn.q_proj".
  model::Linear linear;
  std::shared_ptr<LoraAdapterImpl> adapter;
};

// Every LoRA-wrapped Linear under `model`, in registration order.
std::vector<AdaptedLinear> NamedAdapters(torch::nn::Module& model);

// Freezes every parameter of `model` and wraps each Linear that matches
// options.target_modules in a fresh adapter of options.rank. Returns the
// wrapped Linears' paths. InvalidArgument for bad options; NotFound if no
// Linear matches; FailedPrecondition if a matching Linear already has an
// adapter (nothing is changed then).
absl::StatusOr<std::vector<std::string>> Inject(torch::nn::Module& model,
                                                const LoraOptions& options);

// Detached copies of all adapter tensors, by parameter name.
NamedTensors ExtractAdapters(torch::nn::Module& model);

// Copies `adapters` into the model's adapters, by name. Strict: every
// adapter tensor must be present with its shape, no unknown name may appear,
// and every value must be finite; otherwise InvalidArgument naming the first
// problem and nothing is modified.
absl::Status LoadAdapters(torch::nn::Module& model,
                          const NamedTensors& adapters);

// A frozen residual: when the global change of a Linear has more rank than
// a device's adapter, the rest travels with the adapter as
// "<path>.residual.lora_A" [k, in] and "<path>.residual.lora_B" [out, k],
// whose product (no scale) belongs in the Linear's weight while the adapter
// trains, so the device starts from exactly the global model
// (coordinator/global_model.h).
inline constexpr char kResidualA[] = "residual.lora_A";
inline constexpr char kResidualB[] = "residual.lora_B";
bool IsResidual(absl::string_view name);

// `payload`'s tensors, the residual's (IsResidual) apart from the rest.
struct SeparatedPayload {
  NamedTensors adapters;
  NamedTensors residuals;
};
SeparatedPayload SeparateResiduals(const NamedTensors& payload);

// Adds each residual's product B A to the weight of the Linear at its path
// ("<path>.weight" among `model`'s parameters). Strict: every A has its B,
// shapes fit the weight, values are finite; otherwise InvalidArgument
// naming the first problem and nothing is modified.
absl::Status AddResiduals(torch::nn::Module& model,
                          const NamedTensors& residuals);

// Folds every adapter into its base weight (W += scale B A) and disables it,
// for inference at the base model's cost. FailedPrecondition if any adapter
// is already merged. Unmerge subtracts it again and re-enables the adapter
// (exact up to float rounding). FailedPrecondition if any is not merged.
absl::Status Merge(torch::nn::Module& model);
absl::Status Unmerge(torch::nn::Module& model);

// Removes every adapter (unmerged adapters are dropped, merged ones stay in
// the weights) and makes the base parameters trainable again.
void RemoveAdapters(torch::nn::Module& model);

}  // namespace fedge::lora
