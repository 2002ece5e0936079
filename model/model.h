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
#include "absl/strings/string_view.h"
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
  int64_t TrainingActivationBytes(at::IntArrayRef input_shape) const;
  // The same for this model with its blocks shaped `shapes` (a pruned
  // sub-model's: pruning::PlannedShapes), computed from the shapes alone,
  // without building the sub-model (pruning leaves the embedding and the
  // output as they are). `shapes` has one entry per block.
  int64_t TrainingActivationBytes(at::IntArrayRef input_shape,
                                  const std::vector<BlockShape>& shapes) const;

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

  // --- What split fine-tuning needs --------------------------------------
  // The model cut before block `cut`, 1 <= cut <= number of blocks (callers
  // check with ValidateCut). ForwardHead runs the embedding and blocks
  // [0, cut) and returns the hidden states at the cut, [B, T, hidden_dim()];
  // ForwardTail runs blocks [cut, n), the final norm and the output head on
  // them. forward(x) is ForwardTail(ForwardHead(x, n), n), so the two halves
  // compute exactly what the whole model does.
  virtual at::Tensor ForwardHead(const at::Tensor& input, int64_t cut) = 0;
  virtual at::Tensor ForwardTail(const at::Tensor& hidden, int64_t cut) = 0;
  virtual int64_t hidden_dim() const = 0;
  // Whether parameter `name` is used before the cut: the embedding's and
  // those of blocks [0, cut). Everything else belongs to the tail.
  bool InHead(absl::string_view name, int64_t cut) const;
  // InvalidArgument naming the problem unless `hidden` is float32
  // [B, T, hidden_dim()] with 1 <= T <= max_tokens(), B >= 1, all finite:
  // what a tail may be given.
  absl::Status ValidateHidden(const at::Tensor& hidden) const;
  // The shape of a batch of `batch` full-size inputs (the longest sequence
  // for language models), for memory estimates made without data.
  virtual std::vector<int64_t> ExampleInputShape(int64_t batch) const = 0;
  // The most positions a hidden state can have.
  virtual int64_t max_tokens() const = 0;
  // InvalidArgument unless 1 <= cut <= number of blocks.
  absl::Status ValidateCut(int64_t cut) const;
  // Estimated bytes of the activations the head keeps for backward on a
  // batch of `input_shape` (the head's share of TrainingActivationBytes).
  int64_t HeadTrainingActivationBytes(at::IntArrayRef input_shape,
                                      int64_t cut) const;
  // The same with the blocks shaped `shapes` (see TrainingActivationBytes).
  int64_t HeadTrainingActivationBytes(
      at::IntArrayRef input_shape, int64_t cut,
      const std::vector<BlockShape>& shapes) const;

 protected:
  // Parameter names of the embedding (the part before block 0), as prefixes.
  virtual std::vector<std::string> embedding_prefixes() const = 0;
  // Per-sample float32 elements kept for backward by the embedding and by
  // block `index`, for a valid input of `input_shape`.
  virtual int64_t EmbeddingActivationElements(
      at::IntArrayRef input_shape) const = 0;
  virtual int64_t BlockActivationElementsOf(at::IntArrayRef input_shape,
                                            const BlockShape& block) const = 0;
  // The same for what follows the last block (final norm, head, logits).
  virtual int64_t OutputActivationElements(
      at::IntArrayRef input_shape) const = 0;
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

// Keeps `module`'s structure and lets its weights' memory go: every
// parameter becomes a zero-valued placeholder of its shape and dtype that
// holds a single element (an expanded scalar). Names, shapes and block
// shapes stay; values read afterwards are zeros. Tensors taken before with
// detach() keep the values (they share the old storage, which goes with its
// last holder). For a holder that needs only the structure once the
// weights live elsewhere (the dense coordinator's base, served from disk).
void DropWeights(torch::nn::Module& module);

// Number of scalar parameters; with `trainable_only`, only those with
// requires_grad.
int64_t CountParameters(const torch::nn::Module& module,
                        bool trainable_only = false);

}  // namespace fedge::model
