#include "coordinator/task_builder.h"

#include <algorithm>
#include <random>

#include "absl/strings/escaping.h"

#include "lora/lora.h"
#include "model/trainer.h"
#include "pruning/plan.h"

namespace fedge::coordinator {
namespace {

// FNV-1a: a seed mix that is the same on every platform.
uint64_t Mix(uint64_t h, absl::string_view bytes) {
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

}  // namespace

uint64_t DeviceSeed(uint64_t seed, absl::string_view device, int64_t salt) {
  uint64_t h = 14695981039346656037ULL;
  h = Mix(
      h, absl::string_view(reinterpret_cast<const char*>(&seed), sizeof(seed)));
  h = Mix(h, device);
  return Mix(
      h, absl::string_view(reinterpret_cast<const char*>(&salt), sizeof(salt)));
}

std::string RandomHex(size_t bytes) {
  std::random_device device;
  std::string raw;
  for (size_t i = 0; i < bytes; ++i) {
    raw.push_back(static_cast<char>(device() & 0xff));
  }
  return absl::BytesToHexString(raw);
}

absl::StatusOr<int64_t> ChooseCut(const SplitPolicy& policy,
                                  const model::ModelImpl& base,
                                  const pruning::PruningPlan& plan,
                                  int64_t budget_bytes, int64_t batch_size) {
  const auto blocks = static_cast<int64_t>(base.block_shapes().size());
  absl::StatusOr<int64_t> mode = ParseSplitMode(policy.mode);
  if (!mode.ok()) return mode.status();
  if (*mode > blocks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "split at block ", *mode, ": the model has ", blocks, " blocks"));
  }
  if (*mode >= 0) return *mode;
  if (budget_bytes <= 0) return 0;
  // From the plan's block shapes alone: no sub-model is built.
  const std::vector<model::BlockShape> shapes = pruning::PlannedShapes(plan);
  if (static_cast<int64_t>(shapes.size()) != blocks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a plan of ", shapes.size(), " blocks for a model of ", blocks));
  }
  const std::vector<int64_t> shape = base.ExampleInputShape(batch_size);
  // The trainer's estimate; the adapters' gradients and moments are
  // negligible beside the activations.
  auto peak = [](int64_t activations) {
    return model::TrainingPeakBytes(/*trainable_bytes=*/0, activations);
  };
  if (peak(base.TrainingActivationBytes(shape, shapes)) <= budget_bytes) {
    return 0;
  }
  for (int64_t cut = blocks - 1; cut > 1; --cut) {
    if (peak(base.HeadTrainingActivationBytes(shape, cut, shapes)) <=
        budget_bytes) {
      return cut;
    }
  }
  return 1;
}

absl::StatusOr<BuiltTask> BuildTask(const GlobalModel& global,
                                    const EngineOptions& options,
                                    const Task& task, int64_t budget_bytes,
                                    uint64_t seed) {
  BuiltTask built;
  absl::StatusOr<pruning::PruningPlan> plan = global.Plan(task.combined_ratio);
  if (!plan.ok()) return plan.status();
  built.plan = *std::move(plan);
  if (options.mode == Mode::kLora) {
    absl::StatusOr<int64_t> cut =
        ChooseCut(options.split, global.base(), built.plan, budget_bytes,
                  options.train.batch_size);
    if (!cut.ok()) return cut.status();
    built.cut = *cut;
  }
  absl::StatusOr<NamedTensors> payload =
      global.Payload(built.plan, std::max<int64_t>(task.rank, 1), seed);
  if (!payload.ok()) return payload.status();
  built.payload = *std::move(payload);
  for (const auto& item : built.payload) {
    // A frozen residual is downloaded, not trained: no update carries it.
    if (lora::IsResidual(item.key())) continue;
    built.expected[item.key()] = item.value().sizes().vec();
  }
  return built;
}

}  // namespace fedge::coordinator
