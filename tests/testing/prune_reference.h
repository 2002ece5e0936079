// A plain, loop-based reference for structured pruning of transformer
// weights, used to check models (and later the pruning library) against.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"

namespace fedge::testing {

// What one block keeps, as indices into the full block.
struct BlockKeep {
  std::vector<int64_t> heads;     // Query heads.
  std::vector<int64_t> kv_heads;  // Key/value heads (== heads without GQA).
  std::vector<int64_t> channels;  // MLP hidden channels.
};

// `prefix` is the block's name prefix with "{}" for the block index, e.g.
// "layers.{}." or "model.layers.{}.".

// The full weights with every removed head's and channel's contribution
// cut: o_proj columns of removed heads and down_proj columns of removed
// channels set to zero. Same shapes as `full`.
model::NamedTensors ZeroRemoved(const model::NamedTensors& full,
                                const std::string& prefix,
                                const std::vector<BlockKeep>& keep,
                                int64_t head_dim);

// The weights of the physically smaller model: q/k/v (and gate/up) rows and
// o_proj (and down_proj) columns of the kept units only; everything else
// copied unchanged.
model::NamedTensors SliceKept(const model::NamedTensors& full,
                              const std::string& prefix,
                              const std::vector<BlockKeep>& keep,
                              int64_t head_dim);

}  // namespace fedge::testing
