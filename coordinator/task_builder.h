// The heavy half of making a device's task, done outside the engine's lock
// once the engine has chosen the arm: the pruning plan at the task's
// combined ratio, the split cut, and the payload (the sliced global change
// factored to the task's rank by truncated SVD, or the sliced weights).
// Also the seeds and ids a task carries.
//
// Thread-safe (GlobalModel is): devices' tasks are built concurrently.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "coordinator/engine_types.h"
#include "coordinator/global_model.h"

namespace fedge::coordinator {

// A seed from the federation's seed, a device id and a salt (round and
// attempt): the same on every platform.
uint64_t DeviceSeed(uint64_t seed, absl::string_view device, int64_t salt);

// `bytes` random bytes (std::random_device), hex: task nonces.
std::string RandomHex(size_t bytes);

// The cut `policy` gives a device with `budget_bytes` (0: none) for the
// sub-model of `base` that `plan` leaves, training batches of `batch_size`:
// 0 (no split) or 1..blocks. InvalidArgument for a bad mode or a plan of
// another block count. "auto" with a budget prices the trainer's memory
// estimate from the plan's block shapes alone (no sub-model is built).
absl::StatusOr<int64_t> ChooseCut(const SplitPolicy& policy,
                                  const model::ModelImpl& base,
                                  const pruning::PruningPlan& plan,
                                  int64_t budget_bytes, int64_t batch_size);

struct BuiltTask {
  pruning::PruningPlan plan;
  int64_t cut = 0;
  NamedTensors payload;  // What the device downloads.
  // The names and shapes its update must have.
  std::map<std::string, std::vector<int64_t>> expected;
};

// Builds `task`'s plan (at task.combined_ratio), cut (LoRA mode, for a
// device with `budget_bytes`) and payload (at task.rank, revived adapter
// components seeded by `seed`) from `global`'s current version. The
// errors of GlobalModel::Plan and Payload and of ChooseCut.
absl::StatusOr<BuiltTask> BuildTask(const GlobalModel& global,
                                    const EngineOptions& options,
                                    const Task& task, int64_t budget_bytes,
                                    uint64_t seed);

}  // namespace fedge::coordinator
