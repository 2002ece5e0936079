#include "model/layers.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include <torch/nn/init.h>
#include <torch/types.h>

namespace fedge::model {

absl::Status ValidateBlockShape(const BlockShape& shape, int64_t block) {
  const std::string where = absl::StrCat("block ", block, ": ");
  if (shape.num_heads < 0 || shape.num_kv_heads < 0 || shape.mlp_hidden < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, "negative width (heads ", shape.num_heads, ", kv heads ",
        shape.num_kv_heads, ", mlp ", shape.mlp_hidden, ")"));
  }
  if ((shape.num_heads == 0) != (shape.num_kv_heads == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        where,
        "num_heads and num_kv_heads must both be zero or both positive"));
  }
  if (shape.num_kv_heads > 0 && shape.num_heads % shape.num_kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "num_kv_heads ", shape.num_kv_heads,
                     " does not divide num_heads ", shape.num_heads));
  }
  return absl::OkStatus();
}

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool bias) {
  // torch.nn.Linear's initialisation: U(-1/sqrt(in), 1/sqrt(in)).
  const double bound = in_features > 0 ? 1.0 / std::sqrt(in_features) : 0.0;
  weight = register_parameter(
      "weight",
      torch::empty({out_features, in_features}).uniform_(-bound, bound));
  if (bias) {
    this->bias = register_parameter(
        "bias", torch::empty({out_features}).uniform_(-bound, bound));
  }
}

at::Tensor LinearImpl::forward(const at::Tensor& x) {
  const at::Tensor y = torch::linear(x, weight, bias);
  return adapter_ ? adapter_->AddTo(y, x) : y;
}

void LinearImpl::SetAdapter(std::shared_ptr<AdapterImpl> adapter) {
  if (adapter_) unregister_module("adapter");
  adapter_ = std::move(adapter);
  if (adapter_) register_module("adapter", adapter_);
}

RmsNormImpl::RmsNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

at::Tensor RmsNormImpl::forward(const at::Tensor& x) {
  const at::Tensor variance = x.pow(2).mean(-1, /*keepdim=*/true);
  return x * torch::rsqrt(variance + eps_) * weight;
}

LayerNormImpl::LayerNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
  bias = register_parameter("bias", torch::zeros({dim}));
}

at::Tensor LayerNormImpl::forward(const at::Tensor& x) {
  return torch::layer_norm(x, {weight.size(0)}, weight, bias, eps_);
}

AttentionImpl::AttentionImpl(const AttentionOptions& options)
    : options_(options) {
  const int64_t q_width = options.num_heads * options.head_dim;
  const int64_t kv_width = options.num_kv_heads * options.head_dim;
  q_proj =
      register_module("q_proj", Linear(options.dim, q_width, options.qkv_bias));
  k_proj = register_module("k_proj",
                           Linear(options.dim, kv_width, options.qkv_bias));
  v_proj = register_module("v_proj",
                           Linear(options.dim, kv_width, options.qkv_bias));
  o_proj =
      register_module("o_proj", Linear(q_width, options.dim, options.o_bias));
}

namespace {

// [x1, x2] -> [-x2, x1] over the last dimension.
at::Tensor RotateHalf(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

at::Tensor AttentionImpl::forward(const at::Tensor& x,
                                  const at::Tensor& rope_cos,
                                  const at::Tensor& rope_sin) {
  const int64_t batch = x.size(0);
  const int64_t seq = x.size(1);
  const int64_t heads = options_.num_heads;
  const int64_t kv_heads = options_.num_kv_heads;
  const int64_t hd = options_.head_dim;
  if (heads == 0) {
    // A fully pruned attention contributes only o_proj's bias (if any).
    at::Tensor out = torch::zeros({batch, seq, options_.dim}, x.options());
    return o_proj->bias.defined() ? out + o_proj->bias : out;
  }
  // Query heads are grouped by the key/value head they share (head h reads
  // KV head h / groups, as repeat_interleave would give), and a group's
  // queries are stacked along the sequence: one [groups*T, hd] x [hd, T]
  // product per KV head, with no copy of K and V per query head.
  const int64_t groups = heads / kv_heads;
  at::Tensor q = q_proj(x)
                     .view({batch, seq, kv_heads, groups, hd})
                     .permute({0, 2, 3, 1, 4});  // [B, kv, g, T, hd]
  at::Tensor k = k_proj(x).view({batch, seq, kv_heads, hd}).transpose(1, 2);
  at::Tensor v = v_proj(x).view({batch, seq, kv_heads, hd}).transpose(1, 2);
  if (rope_cos.defined()) {
    q = q * rope_cos + RotateHalf(q) * rope_sin;
    k = k * rope_cos + RotateHalf(k) * rope_sin;
  }
  q = q.reshape({batch * kv_heads, groups * seq, hd});
  const at::Tensor k_t = k.reshape({batch * kv_heads, seq, hd}).transpose(1, 2);
  v = v.reshape({batch * kv_heads, seq, hd});
  const double scale = 1.0 / std::sqrt(double(hd));
  at::Tensor scores;
  if (options_.causal) {
    // -inf above the diagonal of each group's [T, T] block, added by the
    // product itself.
    const at::Tensor future =
        torch::full({seq, seq}, -std::numeric_limits<float>::infinity(),
                    x.options())
            .triu(1)
            .repeat({groups, 1});
    scores = torch::baddbmm(future, q, k_t, /*beta=*/1.0, /*alpha=*/scale);
  } else {
    scores = torch::bmm(q, k_t).mul_(scale);
  }
  at::Tensor out = torch::bmm(torch::softmax(scores, -1), v);
  out = out.view({batch, kv_heads, groups, seq, hd})
            .permute({0, 3, 1, 2, 4})
            .reshape({batch, seq, heads * hd});
  return o_proj(out);
}

MlpImpl::MlpImpl(int64_t dim, int64_t hidden, MlpKind kind, bool bias)
    : kind_(kind) {
  if (kind == MlpKind::kSwiGlu) {
    gate_proj = register_module("gate_proj", Linear(dim, hidden, bias));
  }
  up_proj = register_module("up_proj", Linear(dim, hidden, bias));
  down_proj = register_module("down_proj", Linear(hidden, dim, bias));
}

at::Tensor MlpImpl::forward(const at::Tensor& x) {
  if (up_proj->out_features() == 0) {
    at::Tensor out = torch::zeros(
        {x.size(0), x.size(1), down_proj->out_features()}, x.options());
    return down_proj->bias.defined() ? out + down_proj->bias : out;
  }
  if (kind_ == MlpKind::kSwiGlu) {
    return down_proj(torch::silu(gate_proj(x)) * up_proj(x));
  }
  return down_proj(torch::gelu(up_proj(x)));
}

at::Tensor RotaryInverseFrequencies(int64_t head_dim, double theta) {
  return 1.0 /
         torch::pow(theta, torch::arange(0, head_dim, 2, torch::kFloat64) /
                               static_cast<double>(head_dim));
}

std::pair<at::Tensor, at::Tensor> RotaryTables(int64_t seq_len,
                                               const at::Tensor& inv_freq) {
  const at::Tensor positions = torch::arange(seq_len, torch::kFloat64);
  const at::Tensor freqs = torch::outer(positions, inv_freq);
  const at::Tensor emb = torch::cat({freqs, freqs}, -1);
  return {emb.cos().to(torch::kFloat32), emb.sin().to(torch::kFloat32)};
}

std::vector<std::pair<std::string, Linear>> NamedLinears(
    torch::nn::Module& root) {
  std::vector<std::pair<std::string, Linear>> out;
  for (const auto& item : root.named_modules(/*name_prefix=*/"",
                                             /*include_self=*/false)) {
    if (auto linear = std::dynamic_pointer_cast<LinearImpl>(item.value())) {
      out.emplace_back(item.key(), Linear(linear));
    }
  }
  return out;
}

absl::StatusOr<Linear> FindLinear(torch::nn::Module& root,
                                  absl::string_view name) {
  for (auto& [path, linear] : NamedLinears(root)) {
    if (path == name) return linear;
  }
  return absl::NotFoundError(absl::StrCat("no Linear named \"", name, "\""));
}

}  // namespace fedge::model
