#include "model/checkpoint.h"

#include <filesystem>
#include <map>
#include <optional>
#include <set>
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
  if (type == "llama" || type == "qwen2") {
    absl::StatusOr<LlamaConfig> config = LlamaConfigFromJson(config_json);
    if (!config.ok()) return config.status();
    if (absl::Status s = apply(*config); !s.ok()) return s;
    parsed.llama = *std::move(config);
    return parsed;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("config.json: model_type \"", type,
                   "\" is not supported (fedge_vit, llama or qwen2)"));
}

// The tensors of `dir`'s model.safetensors, or of the shards its index
// names, each shard checked against the index.
absl::StatusOr<NamedTensors> ReadWeights(const std::string& dir) {
  const std::string single = absl::StrCat(dir, "/", kWeightsFile);
  const std::string index_path = absl::StrCat(dir, "/", kWeightsIndexFile);
  if (std::filesystem::exists(single) || !std::filesystem::exists(index_path)) {
    absl::StatusOr<SafetensorsFile> file = ReadSafetensors(single);
    if (absl::IsNotFound(file.status())) {
      return absl::NotFoundError(
          absl::StrCat("no ", single, " and no ", index_path));
    }
    if (!file.ok()) return file.status();
    return std::move(file->tensors);
  }
  absl::StatusOr<std::string> index_text = ReadFile(index_path);
  if (!index_text.ok()) return index_text.status();
  absl::StatusOr<nlohmann::json> index =
      ParseJsonObject(*index_text, index_path);
  if (!index.ok()) return index.status();
  const auto map = index->find("weight_map");
  if (map == index->end() || !map->is_object() || map->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": weight_map must be a non-empty object"));
  }
  std::map<std::string, std::set<std::string>> shards;  // file -> names.
  for (auto it = map->begin(); it != map->end(); ++it) {
    if (!it.value().is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          index_path, ": weight_map[\"", it.key(), "\"] is not a string"));
    }
    const std::string shard = it.value().get<std::string>();
    if (shard.empty() || absl::StrContains(shard, "/") || shard[0] == '.') {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": shard \"", shard,
                       "\" must be a plain file name beside the index"));
    }
    shards[shard].insert(it.key());
  }
  NamedTensors weights;
  for (auto& [shard, names] : shards) {
    const std::string path = absl::StrCat(dir, "/", shard);
    absl::StatusOr<SafetensorsFile> file = ReadSafetensors(path);
    if (!file.ok()) return file.status();
    for (auto& item : file->tensors) {
      if (names.erase(item.key()) == 0) {
        return absl::DataLossError(absl::StrCat(path, ": tensor ", item.key(),
                                                " is not mapped to ", shard,
                                                " in ", index_path));
      }
      weights.insert(item.key(), std::move(item.value()));
    }
    if (!names.empty()) {
      return absl::DataLossError(absl::StrCat(path, ": lacks tensor ",
                                              *names.begin(), " that ",
                                              index_path, " maps to it"));
    }
  }
  return weights;
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
  absl::StatusOr<NamedTensors> file = ReadWeights(dir);
  if (!file.ok()) return file.status();
  // Hugging Face files may carry rotary caches (old LLaMA exports) and a
  // duplicate lm_head for tied embeddings; neither is a parameter here.
  const bool has_lm_head =
      (*model)->named_parameters().find("lm_head.weight") != nullptr;
  NamedTensors weights;
  for (auto& item : *file) {
    if (absl::EndsWith(item.key(), "rotary_emb.inv_freq")) continue;
    if (item.key() == "lm_head.weight" && !has_lm_head) continue;
    weights.insert(item.key(), std::move(item.value()));
  }
  if (absl::Status s = LoadWeights(**model, weights); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(dir, ": ", s.message()));
  }
  return model;
}

}  // namespace fedge::model
