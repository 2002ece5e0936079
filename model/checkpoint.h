// Checkpoints: a directory holding config.json and model.safetensors, the
// layout Hugging Face uses, so LLaMA checkpoints from the Python ecosystem
// load directly and fedge's own can be read back there.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "model/model.h"

namespace fedge::model {

inline constexpr char kConfigFile[] = "config.json";
inline constexpr char kWeightsFile[] = "model.safetensors";
// Sharded weights: {"weight_map": {tensor name: shard file name}, ...}, the
// shards beside it.
inline constexpr char kWeightsIndexFile[] = "model.safetensors.index.json";

// Writes `model`'s config.json and float32 weights into `dir` (created if
// missing), each file atomically. Errors are the file system's.
absl::Status SaveCheckpoint(ModelImpl& model, const std::string& dir);

// Builds the model described by `dir`/config.json ("fedge_vit", "llama" or
// "qwen2") and loads its weights into it (bf16/f16 converted to float32):
// `dir`/model.safetensors, or else the shards
// `dir`/model.safetensors.index.json names. NotFound if the config or both
// weight layouts are missing; InvalidArgument/DataLoss for a bad config, index
// or weights file (a shard outside `dir`, a tensor the index places in another
// shard or misses), naming the file and the problem.
absl::StatusOr<Model> LoadCheckpoint(const std::string& dir);

// Builds an untrained model from a config.json text.
absl::StatusOr<Model> CreateModelFromConfig(const std::string& config_json);

// As above, with the blocks reshaped to `block_shapes` (one per block of
// the config): the untrained, physically pruned model of that config,
// built without ever allocating the full one. InvalidArgument for a wrong
// count or shapes that do not validate.
absl::StatusOr<Model> CreateModelFromConfig(
    const std::string& config_json,
    const std::vector<BlockShape>& block_shapes);

// The block shapes a config.json text describes, without building it.
absl::StatusOr<std::vector<BlockShape>> BlockShapesFromConfig(
    const std::string& config_json);

}  // namespace fedge::model
