#include "lora/peft.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include <torch/types.h>

#include "model/file_io.h"
#include "model/llama.h"
#include "model/safetensors.h"

namespace fedge::lora {
namespace {

TEST(PeftTest, ExportsPeftNamesShapesAndConfig) {
  model::LlamaConfig config;
  config.hidden_size = 16;
  config.head_dim = 4;
  config.layers = {{4, 2, 24}};
  model::Llama llama = *model::CreateLlama(config);
  LoraOptions options;
  options.rank = 4;
  ASSERT_TRUE(Inject(*llama, options).ok());
  const NamedTensors adapters = ExtractAdapters(*llama);
  PeftExportOptions peft;
  peft.rank = 4;
  peft.alpha = options.alpha;
  peft.target_modules = options.target_modules;
  peft.task_type = "CAUSAL_LM";
  const std::string dir = absl::StrCat(::testing::TempDir(), "/peft");

  ASSERT_TRUE(ExportPeft(dir, adapters, peft).ok());

  absl::StatusOr<model::SafetensorsFile> file =
      model::ReadSafetensors(dir + "/adapter_model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  const at::Tensor* a = file->tensors.find(
      "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  const at::Tensor* b = file->tensors.find(
      "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(a->sizes(), (std::vector<int64_t>{4, 16}));
  EXPECT_EQ(b->sizes(), (std::vector<int64_t>{8, 4}));  // 2 KV heads x 4.
  EXPECT_EQ(file->tensors.size(), 4u);
  absl::StatusOr<std::string> json =
      model::ReadFile(dir + "/adapter_config.json");
  ASSERT_TRUE(json.ok());
  for (const char* expected :
       {"\"peft_type\": \"LORA\"", "\"r\": 4", "\"lora_alpha\": 16.0",
        "\"CAUSAL_LM\"", "\"q_proj\""}) {
    EXPECT_NE(json->find(expected), std::string::npos) << expected << "\n"
                                                       << *json;
  }
}

TEST(PeftTest, RejectsNonLoraTensorsAndWrongRank) {
  NamedTensors stray;
  stray.insert("layers.0.weight", torch::zeros({2, 2}));
  EXPECT_FALSE(ToPeftTensors(stray, 2).ok());
  NamedTensors rank4;
  rank4.insert("x.adapter.lora_A", torch::zeros({4, 3}));
  EXPECT_FALSE(ToPeftTensors(rank4, 8).ok());
}

}  // namespace
}  // namespace fedge::lora
