#include "model/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/types.h>

namespace fedge::model {
namespace {

constexpr double kPi = 3.14159265358979323846;

double ScheduledRate(const TrainOptions& o, int64_t step, int64_t total) {
  const auto warmup = static_cast<int64_t>(o.warmup_fraction * total);
  if (step < warmup) return o.learning_rate * (step + 1) / warmup;
  if (o.schedule == LrSchedule::kConstant) return o.learning_rate;
  const double progress =
      total > warmup ? double(step - warmup) / double(total - warmup) : 1.0;
  return o.learning_rate * 0.5 * (1.0 + std::cos(kPi * progress));
}

}  // namespace

absl::Status ValidateDataset(const ModelImpl& model, const Dataset& data) {
  if (data.size() == 0) return absl::InvalidArgumentError("dataset is empty");
  if (!data.targets.defined() || data.targets.size(0) != data.size()) {
    return absl::InvalidArgumentError(
        "dataset targets do not match its inputs in count");
  }
  if (data.targets.scalar_type() != torch::kLong) {
    return absl::InvalidArgumentError("dataset targets must be int64");
  }
  if (data.target_bytes.defined() &&
      (data.target_bytes.scalar_type() != torch::kLong ||
       data.target_bytes.dim() != 1 ||
       data.target_bytes.size(0) != data.size())) {
    return absl::InvalidArgumentError(
        "dataset target_bytes must be int64 [N], one count per example");
  }
  // Validate one sample's shape and every target's range up front, so that
  // no batch can make LibTorch throw halfway through training.
  if (absl::Status s = model.ValidateInput(data.inputs.narrow(0, 0, 1));
      !s.ok()) {
    return s;
  }
  if (model.task() == Task::kLanguageModel) {
    if (absl::Status s = model.ValidateInput(data.inputs); !s.ok()) return s;
    if (data.targets.sizes() != data.inputs.sizes()) {
      return absl::InvalidArgumentError(
          "language-model targets must have the inputs' shape");
    }
  } else if (data.targets.dim() != 1) {
    return absl::InvalidArgumentError("class targets must be a vector [N]");
  }
  at::Tensor scored = data.targets;
  if (model.task() == Task::kLanguageModel) {
    scored = data.targets.masked_select(data.targets.ne(kIgnoreTarget));
    if (scored.numel() == 0) {
      return absl::InvalidArgumentError("every target is masked");
    }
  }
  const int64_t lo = scored.min().item<int64_t>();
  const int64_t hi = scored.max().item<int64_t>();
  if (lo < 0 || hi >= model.num_outputs()) {
    return absl::InvalidArgumentError(
        absl::StrCat("targets span [", lo, ", ", hi, "], the model has ",
                     model.num_outputs(), " outputs"));
  }
  return absl::OkStatus();
}

absl::Status TrainOptions::Validate() const {
  auto bad = [](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("train options: ", what));
  };
  if (epochs < 1) return bad("epochs must be at least 1");
  if (max_steps < 0) return bad("max_steps must be non-negative");
  if (batch_size < 1) return bad("batch_size must be at least 1");
  if (!(learning_rate > 0) || !std::isfinite(learning_rate)) {
    return bad("learning_rate must be positive and finite");
  }
  if (!(weight_decay >= 0)) return bad("weight_decay must be non-negative");
  if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1)) {
    return bad("betas must be in [0, 1)");
  }
  if (!(max_grad_norm >= 0)) return bad("max_grad_norm must be non-negative");
  if (!(warmup_fraction >= 0 && warmup_fraction < 1)) {
    return bad("warmup_fraction must be in [0, 1)");
  }
  if (progress_every < 1) return bad("progress_every must be at least 1");
  return absl::OkStatus();
}

at::Tensor TaskLoss(Task task, const at::Tensor& logits,
                    const at::Tensor& targets) {
  if (task == Task::kLanguageModel) {
    return torch::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}),
                                     targets.reshape({-1}));
  }
  return torch::cross_entropy_loss(logits, targets);
}

int64_t TrainingPeakBytes(int64_t trainable_bytes, int64_t activation_bytes) {
  return 3 * trainable_bytes + activation_bytes * 5 / 2;
}

int64_t EstimateTrainingBytes(const ModelImpl& model, const at::Tensor& example,
                              const TrainOptions& options) {
  int64_t trainable = 0;
  for (const at::Tensor& p : model.parameters(/*recurse=*/true)) {
    if (p.requires_grad()) trainable += p.nbytes();
  }
  std::vector<int64_t> shape = example.sizes().vec();
  shape[0] = options.batch_size;
  return TrainingPeakBytes(trainable, model.TrainingActivationBytes(shape));
}

struct Optimizer::State {
  TrainOptions options;
  int64_t total_steps = 0;
  std::vector<at::Tensor> params;
  std::unique_ptr<torch::optim::AdamW> adamw;
};

Optimizer::Optimizer(std::unique_ptr<State> state) : state_(std::move(state)) {}
Optimizer::~Optimizer() = default;

absl::StatusOr<std::unique_ptr<Optimizer>> Optimizer::Create(
    std::vector<at::Tensor> params, const TrainOptions& options,
    int64_t total_steps) {
  if (params.empty()) {
    return absl::FailedPreconditionError("model has no trainable parameters");
  }
  std::vector<at::Tensor> decay;
  std::vector<at::Tensor> no_decay;
  for (const at::Tensor& p : params) {
    (p.dim() >= 2 ? decay : no_decay).push_back(p);
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  auto adamw = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(options.learning_rate)
            .betas({options.beta1, options.beta2})
            .weight_decay(wd));
  };
  if (!decay.empty()) groups.emplace_back(decay, adamw(options.weight_decay));
  if (!no_decay.empty()) groups.emplace_back(no_decay, adamw(0.0));
  auto state = std::make_unique<State>();
  state->options = options;
  state->total_steps = total_steps;
  state->params = std::move(params);
  state->adamw = std::make_unique<torch::optim::AdamW>(
      groups, torch::optim::AdamWOptions(options.learning_rate));
  return std::unique_ptr<Optimizer>(new Optimizer(std::move(state)));
}

void Optimizer::DropGrads() {
  // Drop the gradients rather than zeroing them (what PyTorch 2 does by
  // default): backward then writes fresh ones instead of adding into
  // zeros, one kernel per parameter less.
  for (at::Tensor& p : state_->params) p.mutable_grad().reset();
}

double Optimizer::Step(int64_t step) {
  const double lr = ScheduledRate(state_->options, step, state_->total_steps);
  for (auto& group : state_->adamw->param_groups()) {
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  }
  if (state_->options.max_grad_norm > 0) {
    torch::nn::utils::clip_grad_norm_(state_->params,
                                      state_->options.max_grad_norm);
  }
  state_->adamw->step();
  return lr;
}

double LossWindows::first() const {
  const auto n = std::min<size_t>(losses_.size(), window_);
  if (n == 0) return 0;
  return std::accumulate(losses_.begin(), losses_.begin() + n, 0.0) / n;
}

double LossWindows::last() const {
  const auto n = std::min<size_t>(losses_.size(), window_);
  if (n == 0) return 0;
  return std::accumulate(losses_.end() - n, losses_.end(), 0.0) / n;
}

absl::StatusOr<TrainResult> Train(ModelImpl& model, const Dataset& data,
                                  const TrainOptions& options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  if (absl::Status s = ValidateDataset(model, data); !s.ok()) return s;

  // Balanced softmax: log of the label frequencies, add-one smoothed so
  // that a label the shard lacks costs a finite logit.
  at::Tensor log_prior;
  if (options.balanced_softmax) {
    if (model.task() == Task::kLanguageModel) {
      return absl::InvalidArgumentError(
          "train options: balanced_softmax needs a classification model");
    }
    const at::Tensor counts =
        torch::bincount(data.targets.reshape({-1}), {}, model.num_outputs())
            .to(torch::kFloat32);
    log_prior = ((counts + 1) / (counts.sum() + counts.numel())).log();
  }

  std::vector<at::Tensor> trainable;
  for (const at::Tensor& p : model.parameters(/*recurse=*/true)) {
    if (p.requires_grad()) trainable.push_back(p);
  }
  const int64_t n = data.size();
  const int64_t steps_per_epoch =
      (n + options.batch_size - 1) / options.batch_size;
  int64_t total_steps = steps_per_epoch * options.epochs;
  if (options.max_steps > 0)
    total_steps = std::min(total_steps, options.max_steps);

  absl::StatusOr<std::unique_ptr<Optimizer>> optimizer =
      Optimizer::Create(trainable, options, total_steps);
  if (!optimizer.ok()) return optimizer.status();

  torch::manual_seed(options.seed);
  at::Generator generator =
      at::make_generator<at::CPUGeneratorImpl>(options.seed);
  model.train(true);

  TrainResult result;
  const auto start = std::chrono::steady_clock::now();
  auto report_start = start;
  double report_loss = 0;
  int64_t report_steps = 0;
  int64_t report_examples = 0;
  LossWindows windows(total_steps);

  for (int64_t epoch = 0; epoch < options.epochs && result.steps < total_steps;
       ++epoch) {
    const at::Tensor order = torch::randperm(n, generator, torch::kLong);
    for (int64_t begin = 0; begin < n && result.steps < total_steps;
         begin += options.batch_size) {
      const int64_t size = std::min(options.batch_size, n - begin);
      const at::Tensor index = order.narrow(0, begin, size);
      const at::Tensor inputs = data.inputs.index_select(0, index);
      const at::Tensor targets = data.targets.index_select(0, index);

      (*optimizer)->DropGrads();
      at::Tensor logits = model.forward(inputs);
      if (log_prior.defined()) logits = logits + log_prior;
      const at::Tensor loss = TaskLoss(model.task(), logits, targets);
      const double value = loss.item<double>();
      if (!std::isfinite(value)) {
        model.train(false);
        return absl::FailedPreconditionError(absl::StrCat(
            "loss became ", value, " at step ", result.steps + 1,
            "; the step was not applied (lower the learning rate, or check "
            "the weights and data for NaN)"));
      }
      loss.backward();
      if (options.after_backward) options.after_backward();
      const double lr = (*optimizer)->Step(result.steps);

      ++result.steps;
      result.examples += size;
      windows.Add(value);
      report_loss += value;
      ++report_steps;
      report_examples += size;
      if (options.on_progress && (result.steps % options.progress_every == 0 ||
                                  result.steps == total_steps)) {
        const auto now = std::chrono::steady_clock::now();
        const double seconds =
            std::chrono::duration<double>(now - report_start).count();
        TrainProgress progress;
        progress.step = result.steps;
        progress.total_steps = total_steps;
        progress.epoch = epoch;
        progress.loss = report_loss / report_steps;
        progress.learning_rate = lr;
        progress.samples_per_second =
            seconds > 0 ? report_examples / seconds : 0;
        options.on_progress(progress);
        report_start = now;
        report_loss = 0;
        report_steps = 0;
        report_examples = 0;
      }
    }
  }
  model.train(false);
  result.first_loss = windows.first();
  result.final_loss = windows.last();
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  return result;
}

absl::StatusOr<EvalResult> Evaluate(ModelImpl& model, const Dataset& data,
                                    int64_t batch_size) {
  if (batch_size < 1) {
    return absl::InvalidArgumentError("batch_size must be at least 1");
  }
  if (absl::Status s = ValidateDataset(model, data); !s.ok()) return s;
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.train(false);
  double loss_sum = 0;
  int64_t correct = 0;
  int64_t targets_seen = 0;
  int64_t exact = 0;
  bool masked = false;
  const int64_t n = data.size();
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    const int64_t size = std::min(batch_size, n - begin);
    const at::Tensor inputs = data.inputs.narrow(0, begin, size);
    const at::Tensor targets = data.targets.narrow(0, begin, size);
    const at::Tensor logits = model.forward(inputs);
    const at::Tensor scored = targets.ne(kIgnoreTarget);
    const int64_t count = scored.sum().item<int64_t>();
    if (count == 0) continue;
    loss_sum += TaskLoss(model.task(), logits, targets).item<double>() * count;
    const at::Tensor right = logits.argmax(-1).eq(targets);
    correct += right.logical_and(scored).sum().item<int64_t>();
    targets_seen += count;
    if (targets.dim() == 2) {
      masked = masked || count < targets.numel();
      exact += right.logical_or(scored.logical_not())
                   .all(/*dim=*/1)
                   .sum()
                   .item<int64_t>();
    }
  }
  model.train(was_training);
  EvalResult result;
  result.examples = n;
  if (masked) result.exact_match = double(exact) / n;
  result.loss = loss_sum / targets_seen;
  result.accuracy = double(correct) / targets_seen;
  result.perplexity = std::exp(result.loss);
  if (data.target_bytes.defined()) {
    const int64_t bytes = data.target_bytes.sum().item<int64_t>();
    if (bytes > 0) result.bits_per_byte = loss_sum / std::log(2.0) / bytes;
  }
  return result;
}

}  // namespace fedge::model
