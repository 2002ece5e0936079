#include "model/llama.h"

#include <cmath>
#include <iterator>

#include "absl/strings/str_cat.h"
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "model/json_util.h"

namespace fedge::model {

absl::Status LlamaConfig::Validate() const {
  auto bad = [](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("llama config: ", what));
  };
  if (vocab_size <= 0) return bad("vocab_size must be positive");
  if (hidden_size <= 0) return bad("hidden_size must be positive");
  if (head_dim <= 0 || head_dim % 2 != 0) {
    return bad("head_dim must be positive and even (rotary embeddings)");
  }
  if (!(rms_norm_eps > 0)) return bad("rms_norm_eps must be positive");
  if (!(rope_theta > 0)) return bad("rope_theta must be positive");
  if (max_position_embeddings <= 0) {
    return bad("max_position_embeddings must be positive");
  }
  if (model_type == "llama") {
    if (qkv_bias != o_bias) {
      return bad("llama's attention_bias covers q, k, v and o together");
    }
  } else if (model_type == "qwen2") {
    if (!qkv_bias || o_bias || mlp_bias) {
      return bad("qwen2 has biases on q, k and v only");
    }
  } else {
    return bad(absl::StrCat("model_type \"", model_type,
                            "\" is not supported (llama or qwen2)"));
  }
  if (rope_scaling.kind != RopeScaling::Kind::kNone &&
      !(rope_scaling.factor > 0)) {
    return bad("rope_scaling.factor must be positive");
  }
  if (rope_scaling.kind == RopeScaling::Kind::kLlama3 &&
      (!(rope_scaling.low_freq_factor > 0) ||
       !(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor) ||
       rope_scaling.original_max_position_embeddings <= 0)) {
    return bad(
        "rope_scaling llama3 needs 0 < low_freq_factor < high_freq_factor and "
        "a positive original_max_position_embeddings");
  }
  if (layers.empty()) return bad("no layers");
  for (size_t i = 0; i < layers.size(); ++i) {
    if (absl::Status s = ValidateBlockShape(layers[i], i); !s.ok()) {
      return bad(s.message());
    }
  }
  return absl::OkStatus();
}

std::string LlamaConfigToJson(const LlamaConfig& config) {
  const BlockShape& first = config.layers.front();
  const bool qwen2 = config.model_type == "qwen2";
  nlohmann::json json = {
      {"architectures", {qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM"}},
      {"model_type", config.model_type},
      {"vocab_size", config.vocab_size},
      {"hidden_size", config.hidden_size},
      {"intermediate_size", first.mlp_hidden},
      {"num_hidden_layers", config.layers.size()},
      {"num_attention_heads", first.num_heads},
      {"num_key_value_heads", first.num_kv_heads},
      {"head_dim", config.head_dim},
      {"hidden_act", "silu"},
      {"rms_norm_eps", config.rms_norm_eps},
      {"rope_theta", config.rope_theta},
      {"max_position_embeddings", config.max_position_embeddings},
      {"tie_word_embeddings", config.tie_word_embeddings},
      {"torch_dtype", "float32"}};
  if (qwen2) {
    json["use_sliding_window"] = false;
  } else {
    json["attention_bias"] = config.qkv_bias;
    json["mlp_bias"] = config.mlp_bias;
  }
  const RopeScaling& rope = config.rope_scaling;
  switch (rope.kind) {
    case RopeScaling::Kind::kNone:
      json["rope_scaling"] = nullptr;
      break;
    case RopeScaling::Kind::kLinear:
      json["rope_scaling"] = {{"rope_type", "linear"}, {"factor", rope.factor}};
      break;
    case RopeScaling::Kind::kLlama3:
      json["rope_scaling"] = {{"rope_type", "llama3"},
                              {"factor", rope.factor},
                              {"low_freq_factor", rope.low_freq_factor},
                              {"high_freq_factor", rope.high_freq_factor},
                              {"original_max_position_embeddings",
                               rope.original_max_position_embeddings}};
      break;
  }
  bool uniform = true;
  for (const BlockShape& s : config.layers) uniform = uniform && s == first;
  if (!uniform) {
    nlohmann::json layers = nlohmann::json::array();
    for (const BlockShape& s : config.layers) {
      layers.push_back({{"num_attention_heads", s.num_heads},
                        {"num_key_value_heads", s.num_kv_heads},
                        {"intermediate_size", s.mlp_hidden}});
    }
    json["fedge_layers"] = layers;
  }
  return json.dump(2);
}

namespace {

// Keys read below, and metadata that does not change what the model
// computes: token ids are the tokenizer's business, initializer_range and
// use_cache only matter to training from scratch and to generation caches,
// pretraining_tp only splits matmuls, torch_dtype is checked but each
// tensor's own dtype is what the safetensors loader reads.
constexpr absl::string_view kLlamaKeys[] = {
    "architectures", "model_type", "vocab_size", "hidden_size",
    "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "hidden_act", "rms_norm_eps",
    "rope_theta", "rope_scaling", "max_position_embeddings",
    "tie_word_embeddings", "attention_bias", "mlp_bias", "attention_dropout",
    "torch_dtype", "fedge_layers",
    // Qwen2: the sliding window must be off.
    "use_sliding_window", "sliding_window", "max_window_layers",
    // Metadata.
    "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range",
    "use_cache", "pretraining_tp", "transformers_version", "_name_or_path"};

absl::StatusOr<RopeScaling> ReadRopeScaling(JsonReader& r) {
  RopeScaling rope;
  if (!r.Has("rope_scaling")) return rope;  // Absent or null.
  JsonReader s = r.Object("rope_scaling");
  // Hugging Face wrote "type" before it wrote "rope_type".
  const std::string kind =
      s.Has("rope_type") ? s.String("rope_type") : s.String("type", "");
  if (kind == "linear") {
    s.RejectUnknown({"rope_type", "type", "factor"});
    rope.kind = RopeScaling::Kind::kLinear;
    rope.factor = s.Double("factor");
  } else if (kind == "llama3") {
    s.RejectUnknown({"rope_type", "type", "factor", "low_freq_factor",
                     "high_freq_factor", "original_max_position_embeddings"});
    rope.kind = RopeScaling::Kind::kLlama3;
    rope.factor = s.Double("factor");
    rope.low_freq_factor = s.Double("low_freq_factor");
    rope.high_freq_factor = s.Double("high_freq_factor");
    rope.original_max_position_embeddings =
        s.Int("original_max_position_embeddings");
  } else if (kind == "default") {
    s.RejectUnknown({"rope_type", "type"});
  } else {
    if (!r.status().ok()) return r.status();
    return absl::InvalidArgumentError(
        absl::StrCat("llama config: rope_scaling type \"", kind,
                     "\" is not supported (linear, llama3 or default)"));
  }
  if (!r.status().ok()) return r.status();
  return rope;
}

}  // namespace

absl::StatusOr<LlamaConfig> LlamaConfigFromJson(absl::string_view text) {
  absl::StatusOr<nlohmann::json> json = ParseJsonObject(text, "llama config");
  if (!json.ok()) return json.status();
  JsonReader r(*json, "llama config");
  r.RejectUnknown({std::begin(kLlamaKeys), std::end(kLlamaKeys)});
  if (!r.status().ok()) return r.status();
  LlamaConfig c;
  c.model_type = r.String("model_type", "llama");
  const bool qwen2 = c.model_type == "qwen2";
  if (c.model_type != "llama" && !qwen2) {
    return absl::InvalidArgumentError(
        absl::StrCat("llama config: model_type \"", c.model_type,
                     "\" is not supported (llama or qwen2)"));
  }
  const std::string architecture =
      qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
  for (const std::string& a : r.Strings("architectures")) {
    if (a != architecture) {
      return absl::InvalidArgumentError(
          absl::StrCat("llama config: architecture \"", a,
                       "\" is not supported with model_type \"", c.model_type,
                       "\" (only ", architecture, ")"));
    }
  }
  const std::string act = r.String("hidden_act", "silu");
  if (act != "silu") {
    return absl::InvalidArgumentError(absl::StrCat(
        "llama config: hidden_act \"", act, "\" is not supported (only silu)"));
  }
  const std::string dtype = r.String("torch_dtype", "float32");
  if (dtype != "float32" && dtype != "float16" && dtype != "bfloat16") {
    return absl::InvalidArgumentError(
        absl::StrCat("llama config: torch_dtype \"", dtype,
                     "\" is not supported (float32, float16 or bfloat16)"));
  }
  if (r.Double("attention_dropout", 0.0) != 0.0) {
    return absl::InvalidArgumentError(
        "llama config: attention_dropout is not supported (must be 0)");
  }
  if (r.Bool("use_sliding_window", false)) {
    return absl::InvalidArgumentError(
        "llama config: use_sliding_window is not supported (must be false)");
  }
  absl::StatusOr<RopeScaling> rope = ReadRopeScaling(r);
  if (!rope.ok()) return rope.status();
  c.rope_scaling = *rope;
  if (qwen2) {
    c.qkv_bias = true;
  } else {
    c.qkv_bias = c.o_bias = r.Bool("attention_bias", false);
    c.mlp_bias = r.Bool("mlp_bias", false);
  }
  c.vocab_size = r.Int("vocab_size");
  c.hidden_size = r.Int("hidden_size");
  const int64_t heads = r.Int("num_attention_heads");
  const int64_t kv_heads = r.Int("num_key_value_heads", heads);
  const int64_t intermediate = r.Int("intermediate_size");
  const int64_t num_layers = r.Int("num_hidden_layers");
  c.head_dim = r.Int("head_dim", heads > 0 ? c.hidden_size / heads : 0);
  c.rms_norm_eps = r.Double("rms_norm_eps", 1e-6);
  c.rope_theta = r.Double("rope_theta", 10000.0);
  c.max_position_embeddings = r.Int("max_position_embeddings", 2048);
  c.tie_word_embeddings = r.Bool("tie_word_embeddings", false);
  std::vector<JsonReader> layers = r.Objects("fedge_layers", /*optional=*/true);
  if (!r.status().ok()) return r.status();
  if (num_layers <= 0 || num_layers > 4096) {
    return absl::InvalidArgumentError(absl::StrCat(
        "llama config: num_hidden_layers ", num_layers, " out of range"));
  }
  c.layers.assign(num_layers, BlockShape{heads, kv_heads, intermediate});
  if (!layers.empty()) {
    if (static_cast<int64_t>(layers.size()) != num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("llama config: fedge_layers has ", layers.size(),
                       " entries, num_hidden_layers is ", num_layers));
    }
    for (size_t i = 0; i < layers.size(); ++i) {
      c.layers[i].num_heads = layers[i].Int("num_attention_heads");
      c.layers[i].num_kv_heads = layers[i].Int("num_key_value_heads");
      c.layers[i].mlp_hidden = layers[i].Int("intermediate_size");
    }
    if (!r.status().ok()) return r.status();
  }
  if (absl::Status s = c.Validate(); !s.ok()) return s;
  return c;
}

at::Tensor LlamaInverseFrequencies(const LlamaConfig& config) {
  const at::Tensor inv_freq =
      RotaryInverseFrequencies(config.head_dim, config.rope_theta);
  const RopeScaling& rope = config.rope_scaling;
  switch (rope.kind) {
    case RopeScaling::Kind::kNone:
      return inv_freq;
    case RopeScaling::Kind::kLinear:
      return inv_freq / rope.factor;
    case RopeScaling::Kind::kLlama3:
      break;
  }
  // Wavelengths longer than the original context / low_freq_factor are
  // divided by the factor, shorter than context / high_freq_factor kept,
  // and those between interpolated linearly in context / wavelength.
  const double context =
      static_cast<double>(rope.original_max_position_embeddings);
  const at::Tensor wavelength = 2.0 * M_PI / inv_freq;
  const at::Tensor smooth = (context / wavelength - rope.low_freq_factor) /
                            (rope.high_freq_factor - rope.low_freq_factor);
  const at::Tensor between =
      (1.0 - smooth) * inv_freq / rope.factor + smooth * inv_freq;
  return torch::where(wavelength > context / rope.low_freq_factor,
                      inv_freq / rope.factor,
                      torch::where(wavelength < context / rope.high_freq_factor,
                                   inv_freq, between));
}

LlamaBlockImpl::LlamaBlockImpl(const LlamaConfig& config,
                               const BlockShape& shape) {
  input_layernorm = register_module(
      "input_layernorm", RmsNorm(config.hidden_size, config.rms_norm_eps));
  AttentionOptions attention;
  attention.dim = config.hidden_size;
  attention.head_dim = config.head_dim;
  attention.num_heads = shape.num_heads;
  attention.num_kv_heads = shape.num_kv_heads;
  attention.qkv_bias = config.qkv_bias;
  attention.o_bias = config.o_bias;
  attention.causal = true;
  self_attn = register_module("self_attn", Attention(attention));
  post_attention_layernorm =
      register_module("post_attention_layernorm",
                      RmsNorm(config.hidden_size, config.rms_norm_eps));
  mlp = register_module("mlp", Mlp(config.hidden_size, shape.mlp_hidden,
                                   MlpKind::kSwiGlu, config.mlp_bias));
}

at::Tensor LlamaBlockImpl::forward(const at::Tensor& x, const at::Tensor& cos,
                                   const at::Tensor& sin) {
  at::Tensor h = x + self_attn(input_layernorm(x), cos, sin);
  return h + mlp(post_attention_layernorm(h));
}

LlamaBackboneImpl::LlamaBackboneImpl(const LlamaConfig& config) {
  embed_tokens = register_module(
      "embed_tokens",
      torch::nn::Embedding(config.vocab_size, config.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (const BlockShape& shape : config.layers) {
    layers->push_back(LlamaBlock(config, shape));
  }
  norm =
      register_module("norm", RmsNorm(config.hidden_size, config.rms_norm_eps));
}

LlamaImpl::LlamaImpl(const LlamaConfig& config) : config_(config) {
  model_ = register_module("model", LlamaBackbone(config));
  {
    torch::NoGradGuard no_grad;
    model_->embed_tokens->weight.normal_(0.0, 0.02);
  }
  if (!config.tie_word_embeddings) {
    lm_head_ = register_module(
        "lm_head", Linear(config.hidden_size, config.vocab_size, false));
  }
  std::tie(rope_cos_, rope_sin_) = RotaryTables(
      config.max_position_embeddings, LlamaInverseFrequencies(config));
}

// Per sample: the embeddings and the blocks (rotary q/k copies included in
// the 2x of q and k), then the final norm and the logits with their softmax.
int64_t LlamaImpl::EmbeddingActivationElements(
    at::IntArrayRef input_shape) const {
  return input_shape[1] * config_.hidden_size * 2;
}

int64_t LlamaImpl::BlockActivationElementsOf(at::IntArrayRef input_shape,
                                             const BlockShape& block) const {
  return BlockActivationElements(block, input_shape[1], config_.hidden_size,
                                 config_.head_dim,
                                 /*mlp_tensors=*/3);
}

int64_t LlamaImpl::OutputActivationElements(at::IntArrayRef input_shape) const {
  return input_shape[1] * 2 * config_.vocab_size;
}

at::Tensor LlamaImpl::forward(const at::Tensor& tokens) {
  const auto blocks = static_cast<int64_t>(config_.layers.size());
  return ForwardTail(ForwardHead(tokens, blocks), blocks);
}

at::Tensor LlamaImpl::ForwardHead(const at::Tensor& tokens, int64_t cut) {
  const int64_t seq = tokens.size(1);
  const at::Tensor cos = rope_cos_.narrow(0, 0, seq);
  const at::Tensor sin = rope_sin_.narrow(0, 0, seq);
  at::Tensor x = model_->embed_tokens(tokens);
  for (int64_t i = 0; i < cut; ++i) {
    x = model_->layers[i]->as<LlamaBlockImpl>()->forward(x, cos, sin);
  }
  return x;
}

at::Tensor LlamaImpl::ForwardTail(const at::Tensor& hidden, int64_t cut) {
  const int64_t seq = hidden.size(1);
  const at::Tensor cos = rope_cos_.narrow(0, 0, seq);
  const at::Tensor sin = rope_sin_.narrow(0, 0, seq);
  at::Tensor x = hidden;
  for (int64_t i = cut; i < static_cast<int64_t>(model_->layers->size()); ++i) {
    x = model_->layers[i]->as<LlamaBlockImpl>()->forward(x, cos, sin);
  }
  x = model_->norm(x);
  if (lm_head_) return lm_head_(x);
  return torch::linear(x, model_->embed_tokens->weight);
}

absl::Status LlamaImpl::ValidateInput(const at::Tensor& input) const {
  if (!input.defined()) return absl::InvalidArgumentError("input undefined");
  if (input.dim() != 2 || input.scalar_type() != torch::kLong) {
    return absl::InvalidArgumentError(absl::StrCat(
        "llama input must be int64 tokens [B, T], got ",
        c10::toString(input.scalar_type()), " ", c10::str(input.sizes())));
  }
  if (input.size(1) > config_.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat("llama input has ", input.size(1),
                     " positions, max_position_embeddings is ",
                     config_.max_position_embeddings));
  }
  if (input.numel() > 0 &&
      (input.min().item<int64_t>() < 0 ||
       input.max().item<int64_t>() >= config_.vocab_size)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "llama input has token ids outside [0, ", config_.vocab_size, ")"));
  }
  return absl::OkStatus();
}

std::string LlamaImpl::block_prefix(int64_t index) const {
  return absl::StrCat("model.layers.", index, ".");
}

absl::StatusOr<Model> LlamaImpl::WithBlockShapes(
    const std::vector<BlockShape>& shapes) const {
  if (shapes.size() != config_.layers.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("llama: ", shapes.size(), " block shapes for ",
                     config_.layers.size(), " blocks"));
  }
  LlamaConfig config = config_;
  config.layers = shapes;
  absl::StatusOr<Llama> llama = CreateLlama(config);
  if (!llama.ok()) return llama.status();
  return Model(*std::move(llama));
}

absl::StatusOr<Llama> CreateLlama(const LlamaConfig& config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  return std::make_shared<LlamaImpl>(config);
}

}  // namespace fedge::model
