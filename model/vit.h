// Vision transformer for small single-image classification (the default
// model of fedge's Fashion-MNIST demo).
//
// Patches are flattened and embedded by a Linear ("patch_embed"), a class
// token and learned position embeddings are added, then pre-norm blocks
// ("layers.N": norm1, self_attn, norm2, mlp) and a final norm feed a linear
// head on the class token. Each block's heads and MLP width come from
// `VitConfig::layers`, so a pruned ViT is a smaller config.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include <ATen/core/Tensor.h>
#include <torch/nn/modules/container/modulelist.h>

#include "model/layers.h"
#include "model/model.h"

namespace fedge::model {

struct VitConfig {
  int64_t image_size = 28;  // Square images of image_size x image_size.
  int64_t channels = 1;
  int64_t patch_size = 7;  // Must divide image_size.
  int64_t dim = 128;
  int64_t head_dim = 32;
  int64_t num_classes = 10;
  double norm_eps = 1e-6;
  // One entry per block. num_kv_heads must equal num_heads (no GQA in ViT).
  std::vector<BlockShape> layers = std::vector<BlockShape>(
      4, BlockShape{/*num_heads=*/4, /*num_kv_heads=*/4, /*mlp_hidden=*/256});

  int64_t num_patches() const {
    return (image_size / patch_size) * (image_size / patch_size);
  }
  // InvalidArgument naming the first bad field.
  absl::Status Validate() const;
};

// fedge's own JSON form: {"model_type": "fedge_vit", ..., "layers": [...]}.
std::string VitConfigToJson(const VitConfig& config);
absl::StatusOr<VitConfig> VitConfigFromJson(absl::string_view json);

class VitBlockImpl : public torch::nn::Module {
 public:
  VitBlockImpl(const VitConfig& config, const BlockShape& shape);
  at::Tensor forward(const at::Tensor& x);

  LayerNorm norm1{nullptr}, norm2{nullptr};
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(VitBlock);

class VitImpl : public ModelImpl {
 public:
  // REQUIRES: config.Validate().ok(). Use CreateVit for unchecked configs.
  explicit VitImpl(const VitConfig& config);

  // images: [B, channels, image_size, image_size] float -> logits [B, classes].
  at::Tensor forward(const at::Tensor& images) override;
  Task task() const override { return Task::kClassification; }
  int64_t num_outputs() const override { return config_.num_classes; }
  absl::Status ValidateInput(const at::Tensor& input) const override;
  std::string ConfigJson() const override { return VitConfigToJson(config_); }
  std::vector<BlockShape> block_shapes() const override {
    return config_.layers;
  }
  int64_t head_dim() const override { return config_.head_dim; }
  std::string block_prefix(int64_t index) const override;
  absl::StatusOr<Model> WithBlockShapes(
      const std::vector<BlockShape>& shapes) const override;
  // Hidden states [B, patches + 1, dim], the class token first.
  at::Tensor ForwardHead(const at::Tensor& images, int64_t cut) override;
  at::Tensor ForwardTail(const at::Tensor& hidden, int64_t cut) override;
  int64_t hidden_dim() const override { return config_.dim; }
  int64_t max_tokens() const override { return config_.num_patches() + 1; }
  std::vector<int64_t> ExampleInputShape(int64_t batch) const override {
    return {batch, config_.channels, config_.image_size, config_.image_size};
  }

  const VitConfig& config() const { return config_; }

 protected:
  std::vector<std::string> embedding_prefixes() const override;
  int64_t EmbeddingActivationElements(
      at::IntArrayRef input_shape) const override;
  int64_t BlockActivationElementsOf(at::IntArrayRef input_shape,
                                    const BlockShape& block) const override;
  int64_t OutputActivationElements(at::IntArrayRef) const override { return 0; }

 private:
  VitConfig config_;
  Linear patch_embed_{nullptr};
  at::Tensor cls_token_;
  at::Tensor pos_embed_;
  torch::nn::ModuleList layers_{nullptr};
  LayerNorm norm_{nullptr};
  Linear head_{nullptr};
};
using Vit = std::shared_ptr<VitImpl>;

// Validates `config` and builds a freshly initialised ViT.
absl::StatusOr<Vit> CreateVit(const VitConfig& config);

}  // namespace fedge::model
