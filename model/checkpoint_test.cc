#include "model/checkpoint.h"

#include <cstdio>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "model/file_io.h"
#include "model/llama.h"
#include "model/safetensors.h"
#include "model/vit.h"

namespace fedge::model {
namespace {

std::string TempDir(const std::string& name) {
  return absl::StrCat(::testing::TempDir(), "/checkpoint_test_", name);
}

TEST(CheckpointTest, VitRoundTripGivesIdenticalOutputs) {
  torch::manual_seed(6);
  VitConfig config;
  config.layers = {{2, 2, 32}, {4, 4, 8}};
  absl::StatusOr<Vit> vit = CreateVit(config);
  ASSERT_TRUE(vit.ok());
  const std::string dir = TempDir("vit");

  ASSERT_TRUE(SaveCheckpoint(**vit, dir).ok());
  absl::StatusOr<Model> loaded = LoadCheckpoint(dir);

  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const at::Tensor images = torch::randn({2, 1, 28, 28});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(
      torch::equal((*loaded)->forward(images), (*vit)->forward(images)));
}

TEST(CheckpointTest, LoadsABfloat16HuggingFaceStyleLlama) {
  torch::manual_seed(7);
  LlamaConfig config;
  config.vocab_size = 32;
  config.hidden_size = 16;
  config.head_dim = 4;
  config.tie_word_embeddings = true;
  config.layers = {{4, 2, 24}};
  absl::StatusOr<Llama> llama = CreateLlama(config);
  ASSERT_TRUE(llama.ok());
  // Write the weights as a Python export would: bf16, with a stale rotary
  // cache and a duplicate lm_head for the tied embedding.
  NamedTensors weights;
  for (const auto& item : (*llama)->named_parameters()) {
    weights.insert(item.key(), item.value().detach().to(torch::kBFloat16));
  }
  weights.insert("model.layers.0.self_attn.rotary_emb.inv_freq",
                 torch::ones({2}));
  weights.insert("lm_head.weight",
                 weights["model.embed_tokens.weight"].clone());
  const std::string dir = TempDir("llama");
  ASSERT_TRUE(MakeDirectories(dir).ok());
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", weights).ok());
  ASSERT_TRUE(
      WriteFileAtomically(dir + "/config.json", (*llama)->ConfigJson()).ok());

  absl::StatusOr<Model> loaded = LoadCheckpoint(dir);

  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const NamedTensors params = (*loaded)->named_parameters();
  const at::Tensor* q = params.find("model.layers.0.self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(
      *q,
      weights["model.layers.0.self_attn.q_proj.weight"].to(torch::kFloat32)));
}

TEST(CheckpointTest, RejectsNanWeightsWrongShapesAndMissingFiles) {
  VitConfig config;
  config.layers = {{2, 2, 8}};
  absl::StatusOr<Vit> vit = CreateVit(config);
  ASSERT_TRUE(vit.ok());
  const std::string dir = TempDir("bad");
  ASSERT_TRUE(SaveCheckpoint(**vit, dir).ok());
  absl::StatusOr<SafetensorsFile> file =
      ReadSafetensors(dir + "/model.safetensors");
  ASSERT_TRUE(file.ok());

  NamedTensors nan = file->tensors;
  nan["head.weight"][0][0] = std::numeric_limits<float>::quiet_NaN();
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", nan).ok());
  absl::StatusOr<Model> loaded = LoadCheckpoint(dir);
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("NaN"), std::string::npos)
      << loaded.status();

  NamedTensors shape = file->tensors;
  shape["head.weight"] = torch::zeros({3, 3});
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", shape).ok());
  loaded = LoadCheckpoint(dir);
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("head.weight"), std::string::npos);

  NamedTensors extra = file->tensors;
  extra.insert("stray", torch::zeros({1}));
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", extra).ok());
  EXPECT_FALSE(LoadCheckpoint(dir).ok());

  EXPECT_EQ(LoadCheckpoint(TempDir("missing")).status().code(),
            absl::StatusCode::kNotFound);
}

// A Qwen2-shaped model (q/k/v biases) written as Hugging Face shards it:
// two safetensors files and model.safetensors.index.json.
class ShardedCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(8);
    LlamaConfig config;
    config.model_type = "qwen2";
    config.qkv_bias = true;
    config.vocab_size = 24;
    config.hidden_size = 16;
    config.head_dim = 4;
    config.layers = {{4, 2, 12}, {4, 2, 12}};
    absl::StatusOr<Llama> llama = CreateLlama(config);
    ASSERT_TRUE(llama.ok()) << llama.status();
    model_ = *llama;
    dir_ = TempDir(
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(MakeDirectories(dir_).ok());
    ASSERT_TRUE(
        WriteFileAtomically(dir_ + "/config.json", LlamaConfigToJson(config))
            .ok());
    nlohmann::json map = nlohmann::json::object();
    for (const auto& item : model_->named_parameters()) {
      const bool first = absl::StartsWith(item.key(), "model.layers.0.") ||
                         item.key() == "model.embed_tokens.weight";
      const std::string shard = first ? "model-00001-of-00002.safetensors"
                                      : "model-00002-of-00002.safetensors";
      shards_[shard].insert(item.key(),
                            item.value().detach().to(torch::kBFloat16));
      map[item.key()] = shard;
    }
    index_ = {{"metadata", {{"total_size", 0}}}, {"weight_map", map}};
  }

  void Write() {
    for (const auto& [name, tensors] : shards_) {
      ASSERT_TRUE(WriteSafetensors(dir_ + "/" + name, tensors).ok());
    }
    ASSERT_TRUE(
        WriteFileAtomically(dir_ + "/" + kWeightsIndexFile, index_.dump())
            .ok());
  }

  Llama model_;
  std::string dir_;
  std::map<std::string, NamedTensors> shards_;
  nlohmann::json index_;
};

TEST_F(ShardedCheckpointTest, LoadsEveryShard) {
  Write();
  absl::StatusOr<Model> loaded = LoadCheckpoint(dir_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE((*loaded)->named_parameters().find(
                  "model.layers.1.self_attn.q_proj.bias") != nullptr);
  EXPECT_TRUE((*loaded)->named_parameters().find(
                  "model.layers.1.self_attn.o_proj.bias") == nullptr);
  const at::Tensor tokens = torch::randint(0, 24, {2, 6}, torch::kLong);
  torch::NoGradGuard no_grad;
  for (const auto& item : model_->named_parameters()) {
    item.value().copy_(item.value().to(torch::kBFloat16).to(torch::kFloat32));
  }
  EXPECT_TRUE(torch::allclose((*loaded)->forward(tokens),
                              model_->forward(tokens), 1e-5, 1e-6));
}

TEST_F(ShardedCheckpointTest, AMissingTensorNamesItsShard) {
  shards_["model-00002-of-00002.safetensors"] = [&] {
    NamedTensors kept;
    for (const auto& item : shards_["model-00002-of-00002.safetensors"]) {
      if (item.key() != "model.norm.weight")
        kept.insert(item.key(), item.value());
    }
    return kept;
  }();
  Write();
  absl::StatusOr<Model> loaded = LoadCheckpoint(dir_);
  ASSERT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(loaded.status().message().find("model.norm.weight"),
            std::string::npos);
  EXPECT_NE(loaded.status().message().find("model-00002-of-00002"),
            std::string::npos);
}

TEST_F(ShardedCheckpointTest, AMisplacedTensorIsRefused) {
  index_["weight_map"]["model.norm.weight"] =
      "model-00001-of-00002.safetensors";
  Write();
  EXPECT_EQ(LoadCheckpoint(dir_).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(ShardedCheckpointTest, AShardOutsideTheDirectoryIsRefused) {
  index_["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors";
  Write();
  absl::StatusOr<Model> loaded = LoadCheckpoint(dir_);
  ASSERT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find("elsewhere"), std::string::npos);
}

TEST_F(ShardedCheckpointTest, AMissingShardIsNotFound) {
  Write();
  ASSERT_EQ(std::remove((dir_ + "/model-00001-of-00002.safetensors").c_str()),
            0);
  EXPECT_EQ(LoadCheckpoint(dir_).status().code(), absl::StatusCode::kNotFound);
}

TEST(CheckpointTest, UnknownModelTypeIsInvalidArgument) {
  EXPECT_EQ(CreateModelFromConfig(R"({"model_type":"gpt2"})").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateModelFromConfig("not json").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fedge::model
