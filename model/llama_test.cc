#include "model/llama.h"

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include <torch/types.h>

#include "tests/testing/prune_reference.h"

namespace fedge::model {
namespace {

LlamaConfig TinyConfig() {
  LlamaConfig config;
  config.vocab_size = 11;
  config.hidden_size = 12;
  config.head_dim = 4;
  config.max_position_embeddings = 16;
  config.layers = {{3, 3, 10}, {4, 2, 7}};  // Second block uses GQA.
  return config;
}

// Plain per-position, per-head reference of the decoder, in double
// precision, written from the LLaMA paper and Hugging Face's definition
// rather than from fedge's modules.
at::Tensor ReferenceForward(const LlamaConfig& c, const NamedTensors& w,
                            const at::Tensor& tokens) {
  auto W = [&](const std::string& name) { return w[name].to(torch::kFloat64); };
  auto rms = [&](const at::Tensor& v, const at::Tensor& g) {
    return v / std::sqrt((v * v).mean().item<double>() + c.rms_norm_eps) * g;
  };
  auto rope = [&](at::Tensor v, int64_t pos) {  // v: [head_dim]
    const int64_t half = c.head_dim / 2;
    at::Tensor out = v.clone();
    for (int64_t i = 0; i < half; ++i) {
      const double freq = std::pow(c.rope_theta, -2.0 * i / c.head_dim);
      const double cs = std::cos(pos * freq), sn = std::sin(pos * freq);
      const double a = v[i].item<double>(), b = v[i + half].item<double>();
      out[i] = a * cs - b * sn;
      out[i + half] = b * cs + a * sn;
    }
    return out;
  };
  const int64_t T = tokens.size(0);
  std::vector<at::Tensor> x;
  for (int64_t t = 0; t < T; ++t) {
    x.push_back(W("model.embed_tokens.weight")[tokens[t].item<int64_t>()]);
  }
  for (size_t l = 0; l < c.layers.size(); ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const int64_t H = c.layers[l].num_heads, KV = c.layers[l].num_kv_heads;
    const int64_t hd = c.head_dim;
    std::vector<at::Tensor> q(T), k(T), v(T), attn(T);
    for (int64_t t = 0; t < T; ++t) {
      const at::Tensor h = rms(x[t], W(p + "input_layernorm.weight"));
      q[t] = torch::mv(W(p + "self_attn.q_proj.weight"), h);
      k[t] = torch::mv(W(p + "self_attn.k_proj.weight"), h);
      v[t] = torch::mv(W(p + "self_attn.v_proj.weight"), h);
    }
    for (int64_t t = 0; t < T; ++t) {
      std::vector<at::Tensor> heads;
      for (int64_t head = 0; head < H; ++head) {
        const int64_t g = head / (H / KV);
        const at::Tensor qh = rope(q[t].narrow(0, head * hd, hd), t);
        std::vector<double> scores;
        double max_score = -1e300;
        for (int64_t s = 0; s <= t; ++s) {
          const at::Tensor kh = rope(k[s].narrow(0, g * hd, hd), s);
          scores.push_back(torch::dot(qh, kh).item<double>() / std::sqrt(hd));
          max_score = std::max(max_score, scores.back());
        }
        double total = 0;
        for (double& s : scores) total += (s = std::exp(s - max_score));
        at::Tensor out = torch::zeros({hd}, torch::kFloat64);
        for (int64_t s = 0; s <= t; ++s) {
          out += scores[s] / total * v[s].narrow(0, g * hd, hd);
        }
        heads.push_back(out);
      }
      attn[t] = torch::mv(W(p + "self_attn.o_proj.weight"), torch::cat(heads));
    }
    for (int64_t t = 0; t < T; ++t) {
      x[t] = x[t] + attn[t];
      const at::Tensor h = rms(x[t], W(p + "post_attention_layernorm.weight"));
      const at::Tensor gate = torch::mv(W(p + "mlp.gate_proj.weight"), h);
      const at::Tensor up = torch::mv(W(p + "mlp.up_proj.weight"), h);
      x[t] = x[t] + torch::mv(W(p + "mlp.down_proj.weight"),
                              gate / (1 + torch::exp(-gate)) * up);
    }
  }
  const at::Tensor head = c.tie_word_embeddings ? W("model.embed_tokens.weight")
                                                : W("lm_head.weight");
  std::vector<at::Tensor> logits;
  for (int64_t t = 0; t < T; ++t) {
    logits.push_back(torch::mv(head, rms(x[t], W("model.norm.weight"))));
  }
  return torch::stack(logits);
}

void RandomizeNorms(LlamaImpl& model) {
  torch::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    if (item.key().find("norm") != std::string::npos) {
      item.value().uniform_(0.5, 1.5);
    }
  }
}

TEST(LlamaTest, ForwardMatchesNaiveReference) {
  for (bool tied : {false, true}) {
    torch::manual_seed(4);
    LlamaConfig config = TinyConfig();
    config.tie_word_embeddings = tied;
    absl::StatusOr<Llama> model = CreateLlama(config);
    ASSERT_TRUE(model.ok()) << model.status();
    RandomizeNorms(**model);
    const at::Tensor tokens = torch::randint(0, 11, {2, 6}, torch::kLong);

    torch::NoGradGuard no_grad;
    const at::Tensor logits = (*model)->forward(tokens);

    ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{2, 6, 11}));
    const NamedTensors weights = CopyWeights(**model);
    for (int64_t b = 0; b < 2; ++b) {
      const at::Tensor expected = ReferenceForward(config, weights, tokens[b]);
      EXPECT_TRUE(
          torch::allclose(logits[b].to(torch::kFloat64), expected, 1e-4, 1e-5))
          << "tied=" << tied << " batch " << b << "\n"
          << (logits[b].to(torch::kFloat64) - expected).abs().max();
    }
  }
}

TEST(LlamaTest, UsesHuggingFaceParameterNames) {
  absl::StatusOr<Llama> model = CreateLlama(TinyConfig());
  ASSERT_TRUE(model.ok());
  const NamedTensors params = (*model)->named_parameters();
  for (const char* name :
       {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
        "model.layers.1.self_attn.k_proj.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.1.post_attention_layernorm.weight",
        "model.layers.0.input_layernorm.weight", "model.norm.weight",
        "lm_head.weight"}) {
    EXPECT_NE(params.find(name), nullptr) << name;
  }
  EXPECT_EQ(params.find("model.layers.0.self_attn.q_proj.bias"), nullptr);
}

TEST(LlamaTest, PrunedConfigWithCopiedWeightsMatchesZeroedFullModel) {
  torch::manual_seed(5);
  const LlamaConfig config = TinyConfig();
  absl::StatusOr<Llama> full = CreateLlama(config);
  ASSERT_TRUE(full.ok());
  RandomizeNorms(**full);
  // Block 1 uses GQA (4 query heads over 2 KV heads): drop KV group 0 whole.
  const std::vector<testing::BlockKeep> keep = {
      {{0, 2}, {0, 2}, {1, 3, 4, 8}},
      {{2, 3}, {1}, {0, 6}},
  };
  const NamedTensors weights = CopyWeights(**full);
  ASSERT_TRUE(
      LoadWeights(**full, testing::ZeroRemoved(weights, "model.layers.{}.",
                                               keep, config.head_dim))
          .ok());
  LlamaConfig pruned_config = config;
  pruned_config.layers = {{2, 2, 4}, {2, 1, 2}};
  absl::StatusOr<Llama> pruned = CreateLlama(pruned_config);
  ASSERT_TRUE(pruned.ok()) << pruned.status();

  absl::Status loaded = LoadWeights(
      **pruned,
      testing::SliceKept(weights, "model.layers.{}.", keep, config.head_dim));

  ASSERT_TRUE(loaded.ok()) << loaded;
  const at::Tensor tokens = torch::randint(0, 11, {3, 7}, torch::kLong);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose((*pruned)->forward(tokens),
                              (*full)->forward(tokens), 1e-4, 1e-5));
}

TEST(LlamaTest, ASubModelsActivationEstimateNeedsOnlyItsShapes) {
  absl::StatusOr<Llama> full = CreateLlama(TinyConfig());
  ASSERT_TRUE(full.ok());
  LlamaConfig pruned_config = TinyConfig();
  pruned_config.layers = {{2, 2, 4}, {2, 1, 2}};
  absl::StatusOr<Llama> built = CreateLlama(pruned_config);
  ASSERT_TRUE(built.ok()) << built.status();
  const std::vector<int64_t> shape = (*full)->ExampleInputShape(4);
  EXPECT_EQ((*full)->TrainingActivationBytes(shape, pruned_config.layers),
            (*built)->TrainingActivationBytes(shape));
  EXPECT_EQ(
      (*full)->HeadTrainingActivationBytes(shape, 1, pruned_config.layers),
      (*built)->HeadTrainingActivationBytes(shape, 1));
}

TEST(LlamaTest, ReadsHuggingFaceConfigJson) {
  // The shape of a real small checkpoint's config (TinyLlama-like).
  const char* json = R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 172,
    "max_position_embeddings": 128, "num_attention_heads": 8,
    "num_hidden_layers": 3, "num_key_value_heads": 2, "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0, "tie_word_embeddings": false,
    "torch_dtype": "bfloat16", "vocab_size": 320, "use_cache": true})";

  absl::StatusOr<LlamaConfig> config = LlamaConfigFromJson(json);

  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->head_dim, 8);
  ASSERT_EQ(config->layers.size(), 3u);
  EXPECT_EQ(config->layers[2], (BlockShape{8, 2, 172}));
}

TEST(LlamaTest, ConfigJsonRoundTripsPerLayerWidths) {
  const LlamaConfig config = TinyConfig();
  absl::StatusOr<LlamaConfig> back =
      LlamaConfigFromJson(LlamaConfigToJson(config));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->layers, config.layers);
  EXPECT_EQ(back->head_dim, config.head_dim);
}

TEST(LlamaTest, UnsupportedConfigsAreRejected) {
  EXPECT_FALSE(LlamaConfigFromJson(R"({"model_type":"mistral"})").ok());
  EXPECT_FALSE(LlamaConfigFromJson(
                   R"({"model_type":"llama","vocab_size":8,"hidden_size":8,
                       "num_attention_heads":2,"intermediate_size":8,
                       "num_hidden_layers":1,"rope_scaling":{"type":"linear"}})")
                   .ok());
  absl::StatusOr<LlamaConfig> missing =
      LlamaConfigFromJson(R"({"model_type":"llama","hidden_size":8})");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("vocab_size"), std::string::npos);
}

// Llama 3.1's rope scaling, written out per frequency from its definition:
// long wavelengths divided by the factor, short ones kept, a linear blend
// in context / wavelength between.
TEST(LlamaTest, Llama3RopeScalingMatchesItsDefinition) {
  LlamaConfig c = TinyConfig();
  c.head_dim = 16;
  c.rope_theta = 500000;
  c.rope_scaling.kind = RopeScaling::Kind::kLlama3;
  c.rope_scaling.factor = 8;
  c.rope_scaling.low_freq_factor = 1;
  c.rope_scaling.high_freq_factor = 4;
  c.rope_scaling.original_max_position_embeddings = 64;
  const at::Tensor inv = LlamaInverseFrequencies(c);
  ASSERT_EQ(inv.size(0), 8);
  int kept = 0, divided = 0, blended = 0;
  for (int64_t i = 0; i < 8; ++i) {
    const double f = std::pow(500000.0, -2.0 * i / 16);
    const double wavelength = 2 * M_PI / f;
    double want;
    if (wavelength < 64.0 / 4) {
      want = f, ++kept;
    } else if (wavelength > 64.0 / 1) {
      want = f / 8, ++divided;
    } else {
      const double smooth = (64.0 / wavelength - 1) / (4 - 1);
      want = (1 - smooth) * f / 8 + smooth * f, ++blended;
    }
    EXPECT_NEAR(inv[i].item<double>(), want, 1e-12 * f) << i;
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(blended, 0);
}

TEST(LlamaTest, ScalingBiasesAndModelTypeRoundTrip) {
  LlamaConfig c = TinyConfig();
  c.rope_scaling.kind = RopeScaling::Kind::kLlama3;
  c.rope_scaling.factor = 32;
  c.rope_scaling.original_max_position_embeddings = 8;
  c.qkv_bias = c.o_bias = c.mlp_bias = true;
  absl::StatusOr<LlamaConfig> back = LlamaConfigFromJson(LlamaConfigToJson(c));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->rope_scaling.kind, RopeScaling::Kind::kLlama3);
  EXPECT_EQ(back->rope_scaling.factor, 32);
  EXPECT_EQ(back->rope_scaling.original_max_position_embeddings, 8);
  EXPECT_TRUE(back->qkv_bias && back->o_bias && back->mlp_bias);

  c = TinyConfig();
  c.model_type = "qwen2";
  c.qkv_bias = true;
  back = LlamaConfigFromJson(LlamaConfigToJson(c));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->model_type, "qwen2");
  EXPECT_TRUE(back->qkv_bias);
  EXPECT_FALSE(back->o_bias || back->mlp_bias);
  absl::StatusOr<Llama> model = CreateLlama(*back);
  ASSERT_TRUE(model.ok());
  EXPECT_NE(
      (*model)->named_parameters().find("model.layers.0.self_attn.k_proj.bias"),
      nullptr);
  EXPECT_EQ(
      (*model)->named_parameters().find("model.layers.0.self_attn.o_proj.bias"),
      nullptr);
}

// The config.json of a published small model (Llama 3.2 1B's keys, shrunk)
// loads; every key fedge does not implement is refused by name.
TEST(LlamaTest, RealConfigKeysLoadAndUnsupportedOnesAreNamed) {
  const std::string real = R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false,
    "attention_dropout": 0.0, "bos_token_id": 128000, "eos_token_id": 128001,
    "head_dim": 4, "hidden_act": "silu", "hidden_size": 8,
    "initializer_range": 0.02, "intermediate_size": 16,
    "max_position_embeddings": 131072, "mlp_bias": false,
    "model_type": "llama", "num_attention_heads": 2,
    "num_hidden_layers": 1, "num_key_value_heads": 1, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0,
                     "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192,
                     "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": true,
    "torch_dtype": "bfloat16", "transformers_version": "4.45.0.dev0",
    "use_cache": true, "vocab_size": 64})";
  absl::StatusOr<LlamaConfig> config = LlamaConfigFromJson(real);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->rope_scaling.kind, RopeScaling::Kind::kLlama3);
  EXPECT_EQ(config->layers[0].num_kv_heads, 1);

  auto refused = [&](const std::string& from, const std::string& to) {
    std::string text = real;
    text.replace(text.find(from), from.size(), to);
    return LlamaConfigFromJson(text).status();
  };
  for (const auto& [from, to, named] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {R"("use_cache")", R"("quantization_config")",
            "quantization_config"},
           {R"("llama3")", R"("yarn")", "yarn"},
           {R"("attention_dropout": 0.0)", R"("attention_dropout": 0.1)",
            "attention_dropout"},
           {R"("bfloat16")", R"("int8")", "int8"},
           {R"("hidden_act": "silu")", R"("hidden_act": "gelu")", "gelu"},
           {R"(["LlamaForCausalLM"])", R"(["MistralForCausalLM"])",
            "MistralForCausalLM"},
           {R"("low_freq_factor")", R"("beta_fast")", "beta_fast"}}) {
    const absl::Status s = refused(from, to);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << to;
    EXPECT_NE(s.message().find(named), std::string::npos) << s.message();
  }
}

TEST(LlamaTest, ValidateInputChecksTokenRangeAndLength) {
  absl::StatusOr<Llama> model = CreateLlama(TinyConfig());
  ASSERT_TRUE(model.ok());
  EXPECT_TRUE((*model)->ValidateInput(torch::zeros({1, 4}, torch::kLong)).ok());
  EXPECT_FALSE(
      (*model)->ValidateInput(torch::full({1, 4}, 11, torch::kLong)).ok());
  EXPECT_FALSE(
      (*model)->ValidateInput(torch::zeros({1, 17}, torch::kLong)).ok());
  EXPECT_FALSE((*model)->ValidateInput(torch::zeros({1, 4})).ok());
}

}  // namespace
}  // namespace fedge::model

namespace fedge::model {
namespace {

TEST(LlamaTest, HeadAndTailComposeToTheWholeModel) {
  torch::manual_seed(6);
  absl::StatusOr<Llama> llama = CreateLlama(TinyConfig());
  ASSERT_TRUE(llama.ok());
  const at::Tensor tokens =
      torch::randint(0, TinyConfig().vocab_size, {2, 5}, torch::kLong);
  const at::Tensor hidden = (*llama)->ForwardHead(tokens, 1);
  EXPECT_TRUE((*llama)->ValidateHidden(hidden).ok());
  EXPECT_TRUE(torch::allclose((*llama)->ForwardTail(hidden, 1),
                              (*llama)->forward(tokens), 1e-5, 1e-6));
  EXPECT_TRUE((*llama)->InHead("model.embed_tokens.weight", 1));
  EXPECT_TRUE((*llama)->InHead("model.layers.0.mlp.up_proj.weight", 1));
  EXPECT_FALSE((*llama)->InHead("model.layers.1.mlp.up_proj.weight", 1));
  EXPECT_FALSE((*llama)->InHead("model.norm.weight", 1));
}

}  // namespace
}  // namespace fedge::model
