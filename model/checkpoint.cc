#include "model/checkpoint.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include <torch/types.h>

#include "model/file_io.h"
#include "model/json_util.h"
#include "model/llama.h"
#include "model/safetensors.h"
#include "model/vit.h"

namespace fedge::model {

absl::Status SaveCheckpoint(ModelImpl& model, const std::string& dir) {
  if (absl::Status s = MakeDirectories(dir); !s.ok()) return s;
  NamedTensors weights;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    weights.insert(item.key(), item.value().detach().to(torch::kFloat32));
  }
  if (absl::Status s = WriteSafetensors(absl::StrCat(dir, "/", kWeightsFile),
                                        weights, {{"format", "pt"}});
      !s.ok()) {
    return s;
  }
  return WriteFileAtomically(absl::StrCat(dir, "/", kConfigFile),
                             model.ConfigJson());
}

absl::StatusOr<Model> CreateModelFromConfig(const std::string& config_json) {
  absl::StatusOr<nlohmann::json> json =
      ParseJsonObject(config_json, "config.json");
  if (!json.ok()) return json.status();
  JsonReader reader(*json, "config.json");
  const std::string type = reader.String("model_type");
  if (!reader.status().ok()) return reader.status();
  if (type == "fedge_vit") {
    absl::StatusOr<VitConfig> config = VitConfigFromJson(config_json);
    if (!config.ok()) return config.status();
    return Model(std::make_shared<VitImpl>(*config));
  }
  if (type == "llama") {
    absl::StatusOr<LlamaConfig> config = LlamaConfigFromJson(config_json);
    if (!config.ok()) return config.status();
    return Model(std::make_shared<LlamaImpl>(*config));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("config.json: model_type \"", type,
                   "\" is not supported (fedge_vit or llama)"));
}

absl::StatusOr<Model> LoadCheckpoint(const std::string& dir) {
  const std::string config_path = absl::StrCat(dir, "/", kConfigFile);
  absl::StatusOr<std::string> config_json = ReadFile(config_path);
  if (!config_json.ok()) return config_json.status();
  absl::StatusOr<Model> model = CreateModelFromConfig(*config_json);
  if (!model.ok()) {
    return absl::Status(
        model.status().code(),
        absl::StrCat(config_path, ": ", model.status().message()));
  }
  const std::string weights_path = absl::StrCat(dir, "/", kWeightsFile);
  absl::StatusOr<SafetensorsFile> file = ReadSafetensors(weights_path);
  if (!file.ok()) return file.status();
  // Hugging Face files may carry rotary caches (old LLaMA exports) and a
  // duplicate lm_head for tied embeddings; neither is a parameter here.
  const bool has_lm_head =
      (*model)->named_parameters().find("lm_head.weight") != nullptr;
  NamedTensors weights;
  for (auto& item : file->tensors) {
    if (absl::EndsWith(item.key(), "rotary_emb.inv_freq")) continue;
    if (item.key() == "lm_head.weight" && !has_lm_head) continue;
    weights.insert(item.key(), std::move(item.value()));
  }
  if (absl::Status s = LoadWeights(**model, weights); !s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat(weights_path, ": ", s.message()));
  }
  return model;
}

}  // namespace fedge::model
