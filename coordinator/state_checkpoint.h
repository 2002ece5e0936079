// The coordinator's checkpoint: everything needed to continue a federation
// after a crash or SIGTERM, in one safetensors file written atomically
// (temporary file, fsync, rename, fsync of the directory). The tensors are
// the global model's state; the engine's registry, bandit plays, timing
// estimates and round number travel as JSON in the file's metadata, so
// there is never a tensor file from one round beside a JSON from another.
#pragma once

#include <string>

#include "absl/status/statusor.h"

#include "coordinator/engine_types.h"

namespace fedge::coordinator {

struct Checkpoint {
  EngineState state;
  // SHA-256 (hex) of the base model's weights file, checked on resume so a
  // checkpoint is never applied to another base.
  std::string base_digest;
  std::string mode;  // "lora" or "dense".
};

// The checkpoint's path inside a checkpoint directory.
std::string CheckpointPath(const std::string& dir);

// Writes `checkpoint` atomically to CheckpointPath(dir), creating `dir`,
// and removes temporary files a predecessor killed mid-write left there.
absl::Status SaveCheckpoint(const std::string& dir,
                            const Checkpoint& checkpoint);

// Reads CheckpointPath(dir). NotFound if there is none; DataLoss for a
// file that is not a complete fedge checkpoint (truncated, foreign,
// malformed JSON), naming what is wrong.
absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& dir);

}  // namespace fedge::coordinator
