// Structured pruning plans and their application: a PruningPlan says, for
// every transformer block, which attention heads, KV heads and MLP channels
// stay. Applying it builds a physically smaller model (smaller config,
// sliced weight copies), not a mask on the full model, so the sub-model
// trains and infers faster and needs less memory.
//
// What is sliced, per block (rows = output features, columns = inputs):
//   heads:    q_proj rows, o_proj columns (and LoRA B rows of q_proj, LoRA A
//             columns of o_proj); biases of q_proj.
//   KV heads: k_proj and v_proj rows (and their LoRA B rows, biases).
//   channels: gate_proj and up_proj rows, down_proj columns (and the LoRA
//             factors on the same side).
// Everything else is copied unchanged. With grouped KV heads (GQA) a plan
// keeps or removes whole groups: every kept query head's KV head is kept,
// and each kept KV head keeps the same number of query heads.
//
// Plans are relative to the model they are applied to; pruning a pruned
// model again takes a plan over its (smaller) blocks, and ComposePlans
// expresses the result against the original model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "model/model.h"
#include "model/safetensors.h"

namespace fedge::pruning {

using model::NamedTensors;

// What one block keeps, as sorted, unique indices into that block.
struct BlockPlan {
  std::vector<int64_t> heads;
  std::vector<int64_t> kv_heads;
  std::vector<int64_t> channels;

  friend bool operator==(const BlockPlan& a, const BlockPlan& b) {
    return a.heads == b.heads && a.kv_heads == b.kv_heads &&
           a.channels == b.channels;
  }
};

struct PruningPlan {
  std::vector<BlockPlan> blocks;
};

// The plan that keeps everything of `model`.
PruningPlan FullPlan(const model::ModelImpl& model);

// Checks `plan` against `model`: one entry per block, indices sorted, unique
// and in range, GQA groups whole. InvalidArgument naming block and field.
absl::Status ValidatePlan(const model::ModelImpl& model,
                          const PruningPlan& plan);
// The same against a model's block shapes.
absl::Status ValidatePlan(const std::vector<model::BlockShape>& shapes,
                          const PruningPlan& plan);

// `plan` with the given blocks removed entirely (no heads, KV heads or
// channels: the block's residual branches contribute only their output
// biases). Whole-layer pruning as an explicit option; PlanFromScores never
// empties a block by itself. InvalidArgument for an index out of range.
absl::StatusOr<PruningPlan> DropBlocks(const PruningPlan& plan,
                                       const std::vector<int64_t>& blocks);

// The block shapes `plan` leaves.
std::vector<model::BlockShape> PlannedShapes(const PruningPlan& plan);

// Builds the physically pruned model: a fresh model from
// model.WithBlockShapes(...) into which the kept slices of every parameter
// are copied. LoRA adapters on `model` are carried over (same rank, alpha
// and targets) with their factors sliced the same way. InvalidArgument for
// a plan that does not validate.
absl::StatusOr<model::Model> ApplyPlan(model::ModelImpl& model,
                                       const PruningPlan& plan);

// Builds the physically pruned model straight from the full model's
// config.json text and safetensors weights, reading only the kept slices
// of each parameter: peak memory follows the sub-model, never the full
// model (the client builds every round's sub-model from its cache this
// way). Equal to ApplyPlan on the loaded full model. InvalidArgument for a
// plan that does not validate, or weights missing a parameter or of the
// wrong shape (naming it); DataLoss for a truncated file.
absl::StatusOr<model::Model> LoadPrunedModel(
    const std::string& config_json, const PruningPlan& plan,
    const model::SafetensorsReader& weights);

// The same sub-model's architecture alone, its weights freshly
// initialised: for a caller that loads every parameter itself (a dense
// round's payload holds them all), so nothing of the base is read.
// InvalidArgument for a config or plan that does not fit.
absl::StatusOr<model::Model> CreatePrunedModel(const std::string& config_json,
                                               const PruningPlan& plan);

// Slices named tensors of `model` (parameters or LoRA adapter tensors, by
// their parameter names) to `plan`; names no rule matches are copied.
// InvalidArgument if a sliced tensor's size disagrees with the model.
absl::StatusOr<NamedTensors> SliceTensors(const model::ModelImpl& model,
                                          const PruningPlan& plan,
                                          const NamedTensors& tensors);

struct Scattered {
  NamedTensors tensors;  // Full-size, zeros where `plan` removed units.
  // Same shapes: 1 where the sub-model held a value. Only for tensors the
  // plan cut; a tensor without an entry is covered everywhere.
  NamedTensors coverage;
};

// The inverse of SliceTensors: places tensors of the pruned sub-model back
// into the coordinates of the full `model`. Tensors no rule matches, and
// tensors the plan keeps whole, are passed through as they are (sharing
// storage with `pruned`, not copied) with no coverage entry: full coverage
// without a model-sized mask of ones (dense FedAvg of a whole model scatters
// nothing).
absl::StatusOr<Scattered> ScatterTensors(const model::ModelImpl& model,
                                         const PruningPlan& plan,
                                         const NamedTensors& pruned);
// The same for a device that holds only the full model's config.json text
// (and its sub-model): what it scatters its own change with under secure
// aggregation. InvalidArgument for a config or plan that does not fit.
absl::StatusOr<Scattered> ScatterTensors(const std::string& config_json,
                                         const PruningPlan& plan,
                                         const NamedTensors& pruned);

// `inner` is a plan over the sub-model that `outer` produced; returns the
// plan over the original model that gives the same sub-model.
absl::StatusOr<PruningPlan> ComposePlans(const PruningPlan& outer,
                                         const PruningPlan& inner);

// Fraction of the model's block parameters (attention and MLP projections)
// that `plan` removes, in [0, 1].
double RemovedFraction(const model::ModelImpl& model, const PruningPlan& plan);

// Fraction of all the model's parameters (adapters aside) that structured
// pruning can remove, (0, 1]: the block projections over everything. A
// combined ratio p leaves about 1 - share * p of the training work
// (strategies/time_model.h).
double PrunableShare(const model::ModelImpl& model);

}  // namespace fedge::pruning
