#include "client/local_round.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include <torch/types.h>

#include "lora/lora.h"
#include "model/checkpoint.h"
#include "pruning/importance.h"
#include "pruning/plan.h"
#include "split/client.h"
#include "strategies/privacy.h"
#include "strategies/schedule.h"
#include "transport/task_proto.h"

namespace fedge::client {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// kProbeExamples of `data` spread evenly over it (all of a smaller shard):
// a shard stored by label is then probed on every label it holds.
absl::StatusOr<model::Dataset> Probe(const model::Dataset& data) {
  const int64_t n = std::min<int64_t>(kProbeExamples, data.size());
  std::vector<int64_t> indices;
  for (int64_t i = 0; i < n; ++i) indices.push_back(i * data.size() / n);
  return model::Subset(data, indices);
}

}  // namespace

absl::StatusOr<LocalResult> TrainLocally(const v1::Task& task,
                                         const std::string& model_config_json,
                                         const model::SafetensorsReader& base,
                                         const model::NamedTensors& payload,
                                         const model::Dataset& data,
                                         const LocalHooks& hooks) {
  LocalResult result;
  const int64_t cut = task.split().cut_layer();
  if (cut > 0 && hooks.split_link == nullptr) {
    return absl::FailedPreconditionError(
        "a split task needs a link to the coordinator's half");
  }
  auto phase = Clock::now();
  const pruning::PruningPlan plan = transport::PlanFromProto(task.plan());
  // Dense: the payload holds every weight (LoadWeights below is strict),
  // so the base is not read.
  absl::StatusOr<model::Model> sub =
      task.dense() ? pruning::CreatePrunedModel(model_config_json, plan)
                   : pruning::LoadPrunedModel(model_config_json, plan, base);
  if (!sub.ok()) return sub.status();
  model::ModelImpl& net = **sub;
  std::unique_ptr<pruning::LoraGradientScorer> scorer;
  // LoRA: a frozen residual of the global change may come with the adapter
  // (lora::AddResiduals); the update is the adapter alone.
  const auto [adapters, residuals] = lora::SeparateResiduals(payload);
  if (task.dense()) {
    if (absl::Status s = model::LoadWeights(net, payload); !s.ok()) return s;
  } else {
    lora::LoraOptions lora;
    lora.rank = task.lora().rank();
    lora.alpha = task.lora().alpha();
    lora.dropout = task.lora().dropout();
    lora.target_modules.assign(task.lora().target_modules().begin(),
                               task.lora().target_modules().end());
    if (absl::StatusOr<std::vector<std::string>> injected =
            lora::Inject(net, lora);
        !injected.ok()) {
      return injected.status();
    }
    if (absl::Status s = lora::AddResiduals(net, residuals); !s.ok()) {
      return s;
    }
    if (absl::Status s = lora::LoadAdapters(net, adapters); !s.ok()) return s;
    if (cut == 0) {
      absl::StatusOr<std::unique_ptr<pruning::LoraGradientScorer>> created =
          pruning::LoraGradientScorer::Create(&net);
      if (!created.ok()) return created.status();
      scorer = std::move(*created);
    }
  }
  result.build_s = Since(phase);

  const v1::TrainConfig& t = task.train();
  model::TrainOptions train;
  train.epochs = t.epochs();
  train.max_steps = t.max_steps();
  train.batch_size = t.batch_size();
  train.learning_rate = t.learning_rate();
  train.weight_decay = t.weight_decay();
  train.max_grad_norm = t.max_grad_norm();
  train.seed = t.seed();
  // A classifier's loss only: a language model's devices train plain.
  train.balanced_softmax =
      t.balanced_softmax() && net.task() != model::Task::kLanguageModel;
  if (t.constant_lr_in_round()) train.schedule = model::LrSchedule::kConstant;
  train.progress_every = 10;
  std::function<void()> prox;
  if (t.fedprox_mu() > 0) {
    absl::StatusOr<std::function<void()>> hook =
        strategies::FedProxHook(net, t.fedprox_mu());
    if (!hook.ok()) return hook.status();
    prox = *hook;
  }
  pruning::LoraGradientScorer* scorer_ptr = scorer.get();
  train.after_backward = [scorer_ptr, &prox] {
    if (scorer_ptr != nullptr) scorer_ptr->Update();
    if (prox) prox();
  };
  train.on_progress = hooks.on_progress;
  if (data.size() == 0) {
    return absl::InvalidArgumentError("the local dataset is empty");
  }
  if (cut > 0) {
    if (absl::Status s = net.ValidateCut(cut); !s.ok()) return s;
    // The head's activations and its adapters' gradients and moments.
    std::vector<int64_t> shape = data.inputs.sizes().vec();
    shape[0] = train.batch_size;
    const int64_t activations = net.HeadTrainingActivationBytes(shape, cut);
    int64_t trainable = 0;
    for (const auto& item : net.named_parameters(/*recurse=*/true)) {
      if (item.value().requires_grad() && net.InHead(item.key(), cut)) {
        trainable += item.value().nbytes();
      }
    }
    result.estimated_bytes = model::TrainingPeakBytes(trainable, activations);
  } else {
    result.estimated_bytes =
        model::EstimateTrainingBytes(net, data.inputs.narrow(0, 0, 1), train);
  }
  if (hooks.admit && !hooks.admit(result.estimated_bytes)) {
    result.declined = true;
    return result;
  }
  if (hooks.on_train_start) hooks.on_train_start();
  phase = Clock::now();
  // Local training: the probe's loss before and after (LocalResult).
  std::optional<model::Dataset> probe;
  double probe_before = 0;
  if (cut == 0) {
    absl::StatusOr<model::Dataset> examples = Probe(data);
    if (!examples.ok()) return examples.status();
    probe = std::move(*examples);
    absl::StatusOr<model::EvalResult> before =
        model::Evaluate(net, *probe, train.batch_size);
    if (!before.ok()) return before.status();
    probe_before = before->loss;
  }
  absl::StatusOr<model::TrainResult> trained;
  if (cut > 0) {
    split::SplitOptions split;
    split.cut = cut;
    split.local_loss_steps = task.split().local_loss_steps();
    const double keep = task.split().dataset_keep_fraction();
    split.keep_fraction = keep > 0 ? keep : 1.0;
    absl::StatusOr<split::SplitResult> done =
        split::TrainSplit(net, data, train, split, *hooks.split_link);
    if (!done.ok()) return done.status();
    result.split_steps = done->split_steps;
    trained = done->train;
  } else {
    trained = model::Train(net, data, train);
  }
  if (!trained.ok()) return trained.status();
  if (probe) {
    absl::StatusOr<model::EvalResult> after =
        model::Evaluate(net, *probe, train.batch_size);
    if (!after.ok()) return after.status();
    result.loss_before = probe_before;
    result.loss_after = after->loss;
  } else {  // Split: the coordinator's loss, over the steps.
    result.loss_before = trained->first_loss;
    result.loss_after = trained->final_loss;
  }
  result.train_s = Since(phase);
  result.examples = data.size();
  result.steps = trained->steps;
  if (cut == 0) {
    // The probe's two forward passes count a third of a training step's
    // operations per example each.
    const int64_t blocks = static_cast<int64_t>(net.block_shapes().size());
    result.train_flops = split::TrainingFlops(net, trained->examples,
                                              net.max_tokens(), 0, blocks) +
                         split::TrainingFlops(net, 2 * probe->size(),
                                              net.max_tokens(), 0, blocks) /
                             3.0;
  }
  if (task.dense()) {
    // The sub-model ends with this function: its trained weights are the
    // update as they are, without a model-sized copy.
    for (const auto& item : net.named_parameters(/*recurse=*/true)) {
      result.update.insert(item.key(), item.value().detach());
    }
  } else {
    result.update = lora::ExtractAdapters(net);
  }
  if (t.local_dp_clip() > 0) {
    // Noised from a seed of the device's own, never the task's.
    absl::StatusOr<model::NamedTensors> private_update =
        strategies::ApplyLocalPrivacy(result.update, adapters,
                                      t.local_dp_clip(),
                                      t.local_dp_noise_multiplier());
    if (!private_update.ok()) return private_update.status();
    result.update = *std::move(private_update);
    // Its losses and importance scores come from its data unnoised: a
    // device that does not trust the coordinator keeps them.
    result.loss_before = result.loss_after = 0;
    scorer.reset();
  }
  if (scorer != nullptr && scorer->updates() > 0) {
    const pruning::GroupScores& scores = scorer->scores();
    for (size_t b = 0; b < scores.heads.size(); ++b) {
      result.importance.insert(absl::StrCat("heads.", b),
                               scores.heads[b].to(torch::kFloat32));
      result.importance.insert(absl::StrCat("channels.", b),
                               scores.channels[b].to(torch::kFloat32));
    }
  }
  return result;
}

}  // namespace fedge::client
