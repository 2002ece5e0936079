// The interface every fedge model implements, and strict weight loading.
//
// A model is a LibTorch module whose parameters carry stable dotted names
// (checkpoints, LoRA and pruning address them by name). The trainer and the
// evaluator work on any Model through this interface.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/ordered_dict.h>

#include "model/layers.h"

namespace fedge::model {

using NamedTensors = torch::OrderedDict<std::string, at::Tensor>;

enum class Task {
  kClassification,  // input -> logits [B, classes]; targets [B] int64.
  kLanguageModel,   // tokens [B, T] -> logits [B, T, vocab]; targets [B, T].
};

class ModelImpl : public torch::nn::Module {
 public:
  // Callers validate with ValidateInput first; forward assumes a valid input.
  virtual at::Tensor forward(const at::Tensor& input) = 0;

  virtual Task task() const = 0;

  // Number of output classes (classification) or the vocabulary size.
  virtual int64_t num_outputs() const = 0;

  // InvalidArgument naming the problem if `input` has the wrong rank, size,
  // dtype or (for tokens) values out of range, so that bad data never
  // reaches LibTorch.
  virtual absl::Status ValidateInput(const at::Tensor& input) const = 0;

  // The model's config in its checkpoint form (config.json).
  virtual std::string ConfigJson() const = 0;

  // Estimated bytes of the activations autograd keeps for the backward
  // pass of one training step on a batch of `input_shape` (a valid input's
  // shape, batch first), in float32. An
  // analytic estimate for memory budgets, not an exact count; bench/client
  // compares it with measured peaks.
  virtual int64_t TrainingActivationBytes(
      at::IntArrayRef input_shape) const = 0;

  // --- What structured pruning needs -------------------------------------
  // Per block: heads, KV heads and MLP width.
  virtual std::vector<BlockShape> block_shapes() const = 0;
  // Width of one attention head (the same in every block).
  virtual int64_t head_dim() const = 0;
  // Parameter-name prefix of block `index`, e.g. "layers.3." or
  // "model.layers.3.". Below it: self_attn.{q,k,v,o}_proj and
  // mlp.{gate,up,down}_proj.
  virtual std::string block_prefix(int64_t index) const = 0;
  // A freshly initialised model of the same family and config but with
  // these block shapes. InvalidArgument if the shapes do not validate or
  // their count differs from the model's.
  virtual absl::StatusOr<std::shared_ptr<ModelImpl>> WithBlockShapes(
      const std::vector<BlockShape>& shapes) const = 0;
};
using Model = std::shared_ptr<ModelImpl>;

// The float32 elements one transformer block of `shape` keeps for backward
// per token, plus its attention maps: norms' inputs and outputs, q/k/v,
// attention scores and probabilities, the attention output, and the MLP's
// hidden activations (`mlp_tensors` of them: 2 for a plain MLP, 3 gated).
int64_t BlockActivationElements(const BlockShape& shape, int64_t tokens,
                                int64_t dim, int64_t head_dim,
                                int64_t mlp_tensors);

// Copies `weights` into `module`'s parameters, by name. Strict: every
// parameter must be present with the same shape, and no extra name may
// appear. Floating-point values of another float dtype (e.g. a bf16
// checkpoint) are converted. InvalidArgument naming the first mismatch;
// nothing is modified unless everything matches. Rejects non-finite values
// (NaN/Inf) with InvalidArgument.
absl::Status LoadWeights(torch::nn::Module& module,
                         const NamedTensors& weights);

// Detached copies of all parameters, by name (a snapshot, not aliases).
NamedTensors CopyWeights(const torch::nn::Module& module);

// Number of scalar parameters; with `trainable_only`, only those with
// requires_grad.
int64_t CountParameters(const torch::nn::Module& module,
                        bool trainable_only = false);

}  // namespace fedge::model
