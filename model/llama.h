// LLaMA-style causal decoder (RMSNorm, rotary embeddings, SwiGLU MLP,
// optional grouped KV heads) whose parameter names and config.json match
// Hugging Face's LlamaForCausalLM, so real small checkpoints load as they are
// ("model.layers.N.self_attn.q_proj.weight", "model.norm.weight",
// "lm_head.weight", ...).
//
// Qwen2 checkpoints (model_type "qwen2": the same decoder with biases on
// q/k/v) load too.
//
// Pruned models keep the same names with smaller tensors; their per-layer
// widths are stored in config.json under "fedge_layers", a key Hugging Face
// ignores.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include <ATen/core/Tensor.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>

#include "model/layers.h"
#include "model/model.h"

namespace fedge::model {

// Hugging Face's rope_scaling: how rotary frequencies are stretched for
// contexts longer than the model was first trained on.
struct RopeScaling {
  enum class Kind {
    kNone,
    kLinear,  // Every frequency divided by `factor`.
    kLlama3,  // Llama 3.1: low frequencies / factor, high kept, smooth between.
  };
  Kind kind = Kind::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;                     // kLlama3 only.
  double high_freq_factor = 4.0;                    // kLlama3 only.
  int64_t original_max_position_embeddings = 8192;  // kLlama3 only.
};

struct LlamaConfig {
  std::string model_type = "llama";  // "llama" or "qwen2".
  int64_t vocab_size = 256;
  int64_t hidden_size = 128;
  int64_t head_dim = 32;  // Hugging Face default: hidden_size / heads.
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  int64_t max_position_embeddings = 512;
  bool tie_word_embeddings = false;  // lm_head shares embed_tokens' weight.
  RopeScaling rope_scaling;
  // Biases: llama's attention_bias puts one on all four projections, qwen2
  // has them on q/k/v only; llama's mlp_bias on gate/up/down.
  bool qkv_bias = false;
  bool o_bias = false;
  bool mlp_bias = false;
  std::vector<BlockShape> layers = std::vector<BlockShape>(
      2, BlockShape{/*num_heads=*/4, /*num_kv_heads=*/4, /*mlp_hidden=*/256});

  absl::Status Validate() const;
};

// Hugging Face config.json. Reading accepts the keys LlamaForCausalLM and
// Qwen2ForCausalLM use (num_hidden_layers, num_attention_heads,
// num_key_value_heads, intermediate_size, head_dim, rope_scaling of type
// "linear" or "llama3", attention_bias, mlp_bias, ...), metadata that does
// not change the computation (token ids, torch_dtype, initializer_range,
// ...) and fedge's optional "fedge_layers". Any other key, another
// architecture, a rope_scaling kind fedge lacks, attention dropout or a
// sliding window is refused with InvalidArgument naming it.
std::string LlamaConfigToJson(const LlamaConfig& config);
absl::StatusOr<LlamaConfig> LlamaConfigFromJson(absl::string_view json);

// The rotary inverse frequencies [head_dim/2] (float64) of `config`, with
// its rope_scaling applied as Hugging Face does.
at::Tensor LlamaInverseFrequencies(const LlamaConfig& config);

class LlamaBlockImpl : public torch::nn::Module {
 public:
  LlamaBlockImpl(const LlamaConfig& config, const BlockShape& shape);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos,
                     const at::Tensor& sin);

  RmsNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(LlamaBlock);

// The "model." part: embed_tokens, layers, norm.
class LlamaBackboneImpl : public torch::nn::Module {
 public:
  explicit LlamaBackboneImpl(const LlamaConfig& config);
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RmsNorm norm{nullptr};
};
TORCH_MODULE(LlamaBackbone);

class LlamaImpl : public ModelImpl {
 public:
  // REQUIRES: config.Validate().ok(). Use CreateLlama for unchecked configs.
  explicit LlamaImpl(const LlamaConfig& config);

  // tokens: [B, T] int64 in [0, vocab), T <= max_position_embeddings.
  // Returns logits [B, T, vocab].
  at::Tensor forward(const at::Tensor& tokens) override;
  Task task() const override { return Task::kLanguageModel; }
  int64_t num_outputs() const override { return config_.vocab_size; }
  absl::Status ValidateInput(const at::Tensor& input) const override;
  std::string ConfigJson() const override { return LlamaConfigToJson(config_); }
  std::vector<BlockShape> block_shapes() const override {
    return config_.layers;
  }
  int64_t head_dim() const override { return config_.head_dim; }
  std::string block_prefix(int64_t index) const override;
  absl::StatusOr<Model> WithBlockShapes(
      const std::vector<BlockShape>& shapes) const override;
  // Hidden states [B, T, hidden_size].
  at::Tensor ForwardHead(const at::Tensor& tokens, int64_t cut) override;
  at::Tensor ForwardTail(const at::Tensor& hidden, int64_t cut) override;
  int64_t hidden_dim() const override { return config_.hidden_size; }
  int64_t max_tokens() const override {
    return config_.max_position_embeddings;
  }
  std::vector<int64_t> ExampleInputShape(int64_t batch) const override {
    return {batch, config_.max_position_embeddings};
  }

  const LlamaConfig& config() const { return config_; }

 protected:
  std::vector<std::string> embedding_prefixes() const override {
    return {"model.embed_tokens."};
  }
  int64_t EmbeddingActivationElements(
      at::IntArrayRef input_shape) const override;
  int64_t BlockActivationElementsOf(at::IntArrayRef input_shape,
                                    const BlockShape& block) const override;
  int64_t OutputActivationElements(at::IntArrayRef input_shape) const override;

 private:
  LlamaConfig config_;
  LlamaBackbone model_{nullptr};
  Linear lm_head_{nullptr};  // Null when tie_word_embeddings.
  at::Tensor rope_cos_;      // [max_position_embeddings, head_dim].
  at::Tensor rope_sin_;
};
using Llama = std::shared_ptr<LlamaImpl>;

absl::StatusOr<Llama> CreateLlama(const LlamaConfig& config);

}  // namespace fedge::model
