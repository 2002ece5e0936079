// A device's local work for one task, without any networking: build the
// physically pruned sub-model from the cached base, load the downloaded
// payload (the adapter in LoRA mode, the sub-model's weights in dense
// mode), fine-tune on the local shard and extract the update and the
// importance scores the coordinator's prune-and-tune needs.
//
// The client daemon (client/participant.h) runs it between its download and
// its upload; the simulator's virtual-clock mode (sim/virtual_clock.h) runs
// it in-process, so both train exactly the same way.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"

#include "fedge/v1/task.pb.h"
#include "model/dataset.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "model/trainer.h"
#include "split/protocol.h"

namespace fedge::client {

struct LocalHooks {
  // Called with the estimated peak bytes of training (EstimateTrainingBytes
  // of the built sub-model) before any step; false declines the task.
  std::function<bool(int64_t estimated_bytes)> admit;
  std::function<void()> on_train_start;
  std::function<void(const model::TrainProgress&)> on_progress;
  // Split tasks (task.split().cut_layer() > 0): the coordinator's half.
  // Required for them, ignored otherwise; borrowed for the call.
  split::SplitLink* split_link = nullptr;
};

// Examples the loss improvement is measured on (LocalResult::loss_before).
inline constexpr int64_t kProbeExamples = 128;

struct LocalResult {
  bool declined = false;  // `admit` said no; nothing below is set.
  int64_t estimated_bytes = 0;
  model::NamedTensors update;  // In the sub-model's names.
  // "heads.N" and "channels.N" (float32) of the kept units, LoRA mode only,
  // when at least one gradient was scored.
  model::NamedTensors importance;
  int64_t examples = 0;
  int64_t steps = 0;  // Optimizer steps run.
  // Floating-point operations of the local training (not split tasks, 0
  // for them): split::TrainingFlops of the whole sub-model, adapters
  // included, for the samples processed, at the model's max_tokens
  // positions each (the ViT's patches + 1; an upper bound for text), and
  // the probe's two forward passes.
  double train_flops = 0;
  // What training did to the device's loss, for the bandit's reward. Local
  // tasks: the mean loss on the same kProbeExamples of the shard (spread
  // evenly over it) before and after training, evaluated without dropout,
  // so the difference is the adapter's doing and not which batches the
  // first and last steps drew (ten times noisier, issue 22). Split tasks:
  // the first and last tenth of the training steps' losses
  // (model::LossWindows); the loss is the coordinator's.
  double loss_before = 0, loss_after = 0;
  // Wall seconds, steady clock; train_s includes the probe's evaluations.
  double build_s = 0, train_s = 0;
  int64_t split_steps = 0;  // Split tasks: steps applied on both sides.
};

// A split task trains only the head of the sub-model (split::TrainSplit)
// and returns the whole adapter, its tail as it was sent (the coordinator
// puts its own half in); it scores no importance (the tail's gradients are
// the coordinator's) and estimates only the head's memory.
// InvalidArgument for a task or payload that does not fit the base (wrong
// plan, names or shapes, a cut outside the model); FailedPrecondition for a
// split task without a link; the trainer's or the link's error.
absl::StatusOr<LocalResult> TrainLocally(const v1::Task& task,
                                         const std::string& model_config_json,
                                         const model::SafetensorsReader& base,
                                         const model::NamedTensors& payload,
                                         const model::Dataset& data,
                                         const LocalHooks& hooks = {});

}  // namespace fedge::client
