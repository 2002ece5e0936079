#include "model/checkpoint.h"

#include <optional>
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

namespace {

// Parses a config.json text of either family; `reshape`, if given, replaces
// its block shapes. Exactly one of the two results is set.
struct ParsedConfig {
  std::optional<VitConfig> vit;
  std::optional<LlamaConfig> llama;
};

absl::StatusOr<ParsedConfig> ParseConfig(
    const std::string& config_json,
    const std::vector<BlockShape>* reshape = nullptr) {
  absl::StatusOr<nlohmann::json> json =
      ParseJsonObject(config_json, "config.json");
  if (!json.ok()) return json.status();
  JsonReader reader(*json, "config.json");
  const std::string type = reader.String("model_type");
  if (!reader.status().ok()) return reader.status();
  auto apply = [&](auto& config) -> absl::Status {
    if (reshape == nullptr) return absl::OkStatus();
    if (reshape->size() != config.layers.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("config.json: ", reshape->size(), " block shapes for ",
                       config.layers.size(), " blocks"));
    }
    config.layers = *reshape;
    return config.Validate();
  };
  ParsedConfig parsed;
  if (type == "fedge_vit") {
    absl::StatusOr<VitConfig> config = VitConfigFromJson(config_json);
    if (!config.ok()) return config.status();
    if (absl::Status s = apply(*config); !s.ok()) return s;
    parsed.vit = *std::move(config);
    return parsed;
  }
  if (type == "llama") {
    absl::StatusOr<LlamaConfig> config = LlamaConfigFromJson(config_json);
    if (!config.ok()) return config.status();
    if (absl::Status s = apply(*config); !s.ok()) return s;
    parsed.llama = *std::move(config);
    return parsed;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("config.json: model_type \"", type,
                   "\" is not supported (fedge_vit or llama)"));
}

absl::StatusOr<Model> Build(const ParsedConfig& parsed) {
  if (parsed.vit) return Model(std::make_shared<VitImpl>(*parsed.vit));
  return Model(std::make_shared<LlamaImpl>(*parsed.llama));
}

}  // namespace

absl::StatusOr<Model> CreateModelFromConfig(const std::string& config_json) {
  absl::StatusOr<ParsedConfig> parsed = ParseConfig(config_json);
  if (!parsed.ok()) return parsed.status();
  return Build(*parsed);
}

absl::StatusOr<Model> CreateModelFromConfig(
    const std::string& config_json,
    const std::vector<BlockShape>& block_shapes) {
  absl::StatusOr<ParsedConfig> parsed = ParseConfig(config_json, &block_shapes);
  if (!parsed.ok()) return parsed.status();
  return Build(*parsed);
}

absl::StatusOr<std::vector<BlockShape>> BlockShapesFromConfig(
    const std::string& config_json) {
  absl::StatusOr<ParsedConfig> parsed = ParseConfig(config_json);
  if (!parsed.ok()) return parsed.status();
  return parsed->vit ? parsed->vit->layers : parsed->llama->layers;
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
