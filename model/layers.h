// Transformer building blocks shared by the ViT and the LLaMA-style decoder,
// built for structured pruning: every block's number of attention heads and
// MLP hidden width is a constructor argument, so a pruned block is simply a
// smaller block with copied weights, never a mask in the hot path.
//
// Every projection is a fedge::model::Linear registered under a stable name
// (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj), so LoRA
// and pruning find them by name. A Linear has one optional adapter slot whose
// output is added to the projection's (see Adapter).
//
// Modules are thread-compatible: concurrent forward passes on one module are
// safe only in eval mode under NoGradGuard.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace fedge::model {

// The per-block widths a pruning plan changes.
struct BlockShape {
  int64_t num_heads = 4;     // Query heads; 0 removes attention entirely.
  int64_t num_kv_heads = 4;  // Key/value heads; divides num_heads (GQA).
  int64_t mlp_hidden = 256;  // MLP channels; 0 removes the MLP entirely.

  friend bool operator==(const BlockShape& a, const BlockShape& b) {
    return a.num_heads == b.num_heads && a.num_kv_heads == b.num_kv_heads &&
           a.mlp_hidden == b.mlp_hidden;
  }
};

// Checks one block's shape: non-negative widths, num_kv_heads divides
// num_heads, both zero or both positive. InvalidArgument naming `block`.
absl::Status ValidateBlockShape(const BlockShape& shape, int64_t block);

// Something added to a Linear's output: y = W x + b + adapter(x). LoRA
// implements it; model/ knows nothing about LoRA.
class AdapterImpl : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  // y + forward(x), where y is the wrapped layer's output for x. An adapter
  // may fuse the addition into its last product (LoRA does).
  virtual at::Tensor AddTo(const at::Tensor& y, const at::Tensor& x) {
    return y + forward(x);
  }
};

// y = x W^T + b (+ adapter(x)). `weight` is [out, in], `bias` is [out] or
// undefined. Parameters are named "weight" and "bias" as in torch.nn.Linear
// and Hugging Face checkpoints.
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias);

  at::Tensor forward(const at::Tensor& x);

  // Installs `adapter` as the submodule "adapter" (its parameters become
  // "<linear>.adapter.<name>"), replacing any previous one; nullptr removes it.
  void SetAdapter(std::shared_ptr<AdapterImpl> adapter);
  const std::shared_ptr<AdapterImpl>& adapter() const { return adapter_; }

  int64_t in_features() const { return weight.size(1); }
  int64_t out_features() const { return weight.size(0); }

  at::Tensor weight;
  at::Tensor bias;

 private:
  std::shared_ptr<AdapterImpl> adapter_;
};
TORCH_MODULE(Linear);

// Root-mean-square layer norm (LLaMA): x / rms(x) * weight.
class RmsNormImpl : public torch::nn::Module {
 public:
  RmsNormImpl(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RmsNorm);

// Layer norm with affine weight and bias, named as torch.nn.LayerNorm.
class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;
  at::Tensor bias;

 private:
  double eps_;
};
TORCH_MODULE(LayerNorm);

struct AttentionOptions {
  int64_t dim = 128;      // Model width (input and output of the block).
  int64_t head_dim = 32;  // Width of one head; fixed under pruning.
  int64_t num_heads = 4;  // Query heads.
  int64_t num_kv_heads = 4;
  bool qkv_bias = true;  // Bias on q_proj, k_proj and v_proj.
  bool o_bias = true;    // Bias on o_proj.
  bool causal = false;   // Mask future positions (decoder).
};

// Multi-head self-attention with optional grouped KV heads and rotary
// embeddings. Children: q_proj [H*hd, dim], k_proj/v_proj [KV*hd, dim],
// o_proj [dim, H*hd].
class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const AttentionOptions& options);

  // x: [B, T, dim]. `rope_cos`/`rope_sin`: [T, head_dim] or undefined for no
  // rotary embedding. Returns [B, T, dim].
  at::Tensor forward(const at::Tensor& x, const at::Tensor& rope_cos = {},
                     const at::Tensor& rope_sin = {});

  const AttentionOptions& options() const { return options_; }

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  AttentionOptions options_;
};
TORCH_MODULE(Attention);

enum class MlpKind {
  kGelu,    // down(gelu(up(x))): ViT.
  kSwiGlu,  // down(silu(gate(x)) * up(x)): LLaMA.
};

// Feed-forward block. Children: up_proj [hidden, dim], down_proj
// [dim, hidden], and for kSwiGlu gate_proj [hidden, dim].
class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int64_t dim, int64_t hidden, MlpKind kind, bool bias);
  at::Tensor forward(const at::Tensor& x);

  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};

 private:
  MlpKind kind_;
};
TORCH_MODULE(Mlp);

// Hugging Face's default rotary inverse frequencies theta^(-2i/head_dim),
// i < head_dim/2, as float64 [head_dim/2].
at::Tensor RotaryInverseFrequencies(int64_t head_dim, double theta);

// Rotary embedding tables as Hugging Face's LLaMA computes them (the
// "rotate half" convention) from `inv_freq` [head_dim/2]: cos and sin of
// shape [seq_len, head_dim], float32.
std::pair<at::Tensor, at::Tensor> RotaryTables(int64_t seq_len,
                                               const at::Tensor& inv_freq);

// Every Linear under `root`, with its dotted path
// ("layers.0.self_attn.q_proj"), in registration order.
std::vector<std::pair<std::string, Linear>> NamedLinears(
    torch::nn::Module& root);

// The Linear at dotted path `name` under `root`. NotFound if there is none.
absl::StatusOr<Linear> FindLinear(torch::nn::Module& root,
                                  absl::string_view name);

}  // namespace fedge::model
