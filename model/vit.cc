#include "model/vit.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "model/json_util.h"

namespace fedge::model {

absl::Status VitConfig::Validate() const {
  auto positive = [](int64_t v, absl::string_view name) -> absl::Status {
    if (v <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("vit config: ", name, " must be positive, got ", v));
    }
    return absl::OkStatus();
  };
  for (const auto& [value, name] :
       {std::pair<int64_t, const char*>{image_size, "image_size"},
        {channels, "channels"},
        {patch_size, "patch_size"},
        {dim, "dim"},
        {head_dim, "head_dim"},
        {num_classes, "num_classes"}}) {
    if (absl::Status s = positive(value, name); !s.ok()) return s;
  }
  if (image_size % patch_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("vit config: patch_size ", patch_size,
                     " does not divide image_size ", image_size));
  }
  if (!(norm_eps > 0)) {
    return absl::InvalidArgumentError("vit config: norm_eps must be positive");
  }
  if (layers.empty()) {
    return absl::InvalidArgumentError("vit config: no layers");
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    if (absl::Status s = ValidateBlockShape(layers[i], i); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("vit config: ", s.message()));
    }
    if (layers[i].num_kv_heads != layers[i].num_heads) {
      return absl::InvalidArgumentError(absl::StrCat(
          "vit config: block ", i, ": num_kv_heads must equal num_heads"));
    }
  }
  return absl::OkStatus();
}

std::string VitConfigToJson(const VitConfig& config) {
  nlohmann::json layers = nlohmann::json::array();
  for (const BlockShape& s : config.layers) {
    layers.push_back(
        {{"num_heads", s.num_heads}, {"mlp_hidden", s.mlp_hidden}});
  }
  const nlohmann::json json = {{"model_type", "fedge_vit"},
                               {"image_size", config.image_size},
                               {"channels", config.channels},
                               {"patch_size", config.patch_size},
                               {"dim", config.dim},
                               {"head_dim", config.head_dim},
                               {"num_classes", config.num_classes},
                               {"norm_eps", config.norm_eps},
                               {"layers", layers}};
  return json.dump(2);
}

absl::StatusOr<VitConfig> VitConfigFromJson(absl::string_view text) {
  absl::StatusOr<nlohmann::json> json = ParseJsonObject(text, "vit config");
  if (!json.ok()) return json.status();
  JsonReader r(*json, "vit config");
  if (r.String("model_type") != "fedge_vit" && r.status().ok()) {
    return absl::InvalidArgumentError(
        "vit config: model_type is not \"fedge_vit\"");
  }
  VitConfig c;
  c.image_size = r.Int("image_size", c.image_size);
  c.channels = r.Int("channels", c.channels);
  c.patch_size = r.Int("patch_size", c.patch_size);
  c.dim = r.Int("dim", c.dim);
  c.head_dim = r.Int("head_dim", c.head_dim);
  c.num_classes = r.Int("num_classes", c.num_classes);
  c.norm_eps = r.Double("norm_eps", c.norm_eps);
  c.layers.clear();
  for (JsonReader& layer : r.Objects("layers")) {
    BlockShape s;
    s.num_heads = layer.Int("num_heads");
    s.num_kv_heads = s.num_heads;
    s.mlp_hidden = layer.Int("mlp_hidden");
    c.layers.push_back(s);
  }
  if (!r.status().ok()) return r.status();
  if (absl::Status s = c.Validate(); !s.ok()) return s;
  return c;
}

VitBlockImpl::VitBlockImpl(const VitConfig& config, const BlockShape& shape) {
  norm1 = register_module("norm1", LayerNorm(config.dim, config.norm_eps));
  AttentionOptions attention;
  attention.dim = config.dim;
  attention.head_dim = config.head_dim;
  attention.num_heads = shape.num_heads;
  attention.num_kv_heads = shape.num_kv_heads;
  attention.qkv_bias = true;
  attention.o_bias = true;
  self_attn = register_module("self_attn", Attention(attention));
  norm2 = register_module("norm2", LayerNorm(config.dim, config.norm_eps));
  mlp = register_module(
      "mlp", Mlp(config.dim, shape.mlp_hidden, MlpKind::kGelu, /*bias=*/true));
}

at::Tensor VitBlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = x + self_attn(norm1(x));
  return h + mlp(norm2(h));
}

VitImpl::VitImpl(const VitConfig& config) : config_(config) {
  const int64_t patch_pixels =
      config.channels * config.patch_size * config.patch_size;
  patch_embed_ =
      register_module("patch_embed", Linear(patch_pixels, config.dim, true));
  cls_token_ =
      register_parameter("cls_token", torch::randn({1, 1, config.dim}) * 0.02);
  pos_embed_ = register_parameter(
      "pos_embed",
      torch::randn({1, config.num_patches() + 1, config.dim}) * 0.02);
  layers_ = register_module("layers", torch::nn::ModuleList());
  for (const BlockShape& shape : config.layers) {
    layers_->push_back(VitBlock(config, shape));
  }
  norm_ = register_module("norm", LayerNorm(config.dim, config.norm_eps));
  head_ = register_module("head", Linear(config.dim, config.num_classes, true));
}

at::Tensor VitImpl::forward(const at::Tensor& images) {
  const auto blocks = static_cast<int64_t>(config_.layers.size());
  return ForwardTail(ForwardHead(images, blocks), blocks);
}

at::Tensor VitImpl::ForwardHead(const at::Tensor& images, int64_t cut) {
  const int64_t batch = images.size(0);
  const int64_t c = config_.channels;
  const int64_t p = config_.patch_size;
  const int64_t grid = config_.image_size / p;
  // [B, C, g*p, g*p] -> [B, g*g, C*p*p], patches in row-major order.
  at::Tensor patches = images.reshape({batch, c, grid, p, grid, p})
                           .permute({0, 2, 4, 1, 3, 5})
                           .reshape({batch, grid * grid, c * p * p});
  at::Tensor x = patch_embed_(patches);
  x = torch::cat({cls_token_.expand({batch, 1, config_.dim}), x}, 1) +
      pos_embed_;
  for (int64_t i = 0; i < cut; ++i) {
    x = layers_[i]->as<VitBlockImpl>()->forward(x);
  }
  return x;
}

at::Tensor VitImpl::ForwardTail(const at::Tensor& hidden, int64_t cut) {
  at::Tensor x = hidden;
  for (int64_t i = cut; i < static_cast<int64_t>(layers_->size()); ++i) {
    x = layers_[i]->as<VitBlockImpl>()->forward(x);
  }
  return head_(norm_(x.select(1, 0)));
}

std::vector<std::string> VitImpl::embedding_prefixes() const {
  return {"patch_embed.", "cls_token", "pos_embed"};
}

int64_t VitImpl::EmbeddingActivationElements(at::IntArrayRef) const {
  // The patch embedding's input and output.
  return config_.num_patches() * config_.channels * config_.patch_size *
             config_.patch_size +
         (config_.num_patches() + 1) * config_.dim;
}

int64_t VitImpl::BlockActivationElementsOf(at::IntArrayRef,
                                           const BlockShape& block) const {
  return BlockActivationElements(block, config_.num_patches() + 1, config_.dim,
                                 config_.head_dim, /*mlp_tensors=*/2);
}

absl::Status VitImpl::ValidateInput(const at::Tensor& input) const {
  if (!input.defined()) return absl::InvalidArgumentError("input undefined");
  const std::vector<int64_t> expected = {config_.channels, config_.image_size,
                                         config_.image_size};
  if (input.dim() != 4 || input.sizes().slice(1).vec() != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("vit input has shape ", c10::str(input.sizes()),
                     ", expected [B, ", config_.channels, ", ",
                     config_.image_size, ", ", config_.image_size, "]"));
  }
  if (input.scalar_type() != torch::kFloat32) {
    return absl::InvalidArgumentError(
        absl::StrCat("vit input has dtype ", c10::toString(input.scalar_type()),
                     ", expected Float"));
  }
  return absl::OkStatus();
}

std::string VitImpl::block_prefix(int64_t index) const {
  return absl::StrCat("layers.", index, ".");
}

absl::StatusOr<Model> VitImpl::WithBlockShapes(
    const std::vector<BlockShape>& shapes) const {
  if (shapes.size() != config_.layers.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("vit: ", shapes.size(), " block shapes for ",
                     config_.layers.size(), " blocks"));
  }
  VitConfig config = config_;
  config.layers = shapes;
  absl::StatusOr<Vit> vit = CreateVit(config);
  if (!vit.ok()) return vit.status();
  return Model(*std::move(vit));
}

absl::StatusOr<Vit> CreateVit(const VitConfig& config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  return std::make_shared<VitImpl>(config);
}

}  // namespace fedge::model
