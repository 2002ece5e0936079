#include "split/client.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/types.h>

namespace fedge::split {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The device's own classifier for local-loss updates and EL2N scores.
struct LocalHead {
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear linear{nullptr};

  LocalHead(int64_t dim, int64_t classes)
      : norm(torch::nn::LayerNormOptions({dim})), linear(dim, classes) {}
  at::Tensor operator()(const at::Tensor& hidden) {
    return linear(norm(hidden.select(1, 0)));
  }
  std::vector<at::Tensor> parameters() const {
    std::vector<at::Tensor> out = norm->parameters();
    for (const at::Tensor& p : linear->parameters()) out.push_back(p);
    return out;
  }
};

// Shuffled mini-batches over `n` samples, epoch after epoch.
class Batches {
 public:
  Batches(int64_t n, int64_t batch_size, uint64_t seed)
      : n_(n),
        batch_size_(batch_size),
        generator_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}
  // Indices of the next batch; `epoch` is the epoch it belongs to.
  at::Tensor Next(int64_t* epoch) {
    if (!order_.defined() || begin_ >= n_) {
      order_ = torch::randperm(n_, generator_, torch::kLong);
      begin_ = 0;
      ++epoch_;
    }
    const int64_t size = std::min(batch_size_, n_ - begin_);
    at::Tensor index = order_.narrow(0, begin_, size);
    begin_ += size;
    *epoch = epoch_;
    return index;
  }

 private:
  int64_t n_, batch_size_;
  at::Generator generator_;
  at::Tensor order_;
  int64_t begin_ = 0;
  int64_t epoch_ = -1;
};

std::vector<at::Tensor> HeadParameters(const model::ModelImpl& model,
                                       int64_t cut) {
  std::vector<at::Tensor> out;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (item.value().requires_grad() && model.InHead(item.key(), cut)) {
      out.push_back(item.value());
    }
  }
  return out;
}

// Phase 1: local-loss updates of the head and the local classifier.
absl::Status LocalLossPhase(model::ModelImpl& model, const model::Dataset& data,
                            const model::TrainOptions& options, int64_t cut,
                            int64_t steps, LocalHead& head) {
  std::vector<at::Tensor> params = HeadParameters(model, cut);
  for (const at::Tensor& p : head.parameters()) params.push_back(p);
  absl::StatusOr<std::unique_ptr<model::Optimizer>> optimizer =
      model::Optimizer::Create(params, options, steps);
  if (!optimizer.ok()) return optimizer.status();
  Batches batches(data.size(), options.batch_size, options.seed + 1);
  for (int64_t step = 0; step < steps; ++step) {
    int64_t epoch = 0;
    const at::Tensor index = batches.Next(&epoch);
    (*optimizer)->DropGrads();
    const at::Tensor logits =
        head(model.ForwardHead(data.inputs.index_select(0, index), cut));
    const at::Tensor loss =
        torch::cross_entropy_loss(logits, data.targets.index_select(0, index));
    const double value = loss.item<double>();
    if (!std::isfinite(value)) {
      return absl::FailedPreconditionError(
          absl::StrCat("local-loss step ", step + 1, ": loss became ", value,
                       "; the step was not applied"));
    }
    loss.backward();
    (*optimizer)->Step(step);
  }
  return absl::OkStatus();
}

// Phase 2: the indices of the `keep` samples with the largest EL2N score.
at::Tensor HardestSamples(model::ModelImpl& model, const model::Dataset& data,
                          int64_t cut, LocalHead& head, int64_t keep,
                          int64_t batch_size) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.train(false);
  std::vector<at::Tensor> scores;
  for (int64_t begin = 0; begin < data.size(); begin += batch_size) {
    const int64_t size = std::min(batch_size, data.size() - begin);
    const at::Tensor probs = torch::softmax(
        head(model.ForwardHead(data.inputs.narrow(0, begin, size), cut)), -1);
    const at::Tensor onehot =
        torch::one_hot(data.targets.narrow(0, begin, size), probs.size(-1))
            .to(torch::kFloat32);
    scores.push_back((probs - onehot).norm(2, {-1}));
  }
  model.train(was_training);
  return std::get<0>(std::get<1>(torch::cat(scores).topk(keep)).sort());
}

}  // namespace

absl::Status SplitOptions::Validate() const {
  if (cut < 1) return absl::InvalidArgumentError("split: cut must be >= 1");
  if (local_loss_steps < 0) {
    return absl::InvalidArgumentError(
        "split: local_loss_steps must be non-negative");
  }
  if (!(keep_fraction > 0 && keep_fraction <= 1)) {
    return absl::InvalidArgumentError("split: keep_fraction must be in (0, 1]");
  }
  if (keep_fraction < 1 && local_loss_steps == 0) {
    return absl::InvalidArgumentError(
        "split: dataset pruning (keep_fraction < 1) scores samples with the "
        "local classifier, so it needs local_loss_steps > 0");
  }
  return absl::OkStatus();
}

absl::StatusOr<SplitResult> TrainSplit(model::ModelImpl& model,
                                       const model::Dataset& data,
                                       const model::TrainOptions& options,
                                       const SplitOptions& split,
                                       SplitLink& link) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  if (absl::Status s = split.Validate(); !s.ok()) return s;
  if (absl::Status s = model.ValidateCut(split.cut); !s.ok()) return s;
  if (absl::Status s = model::ValidateDataset(model, data); !s.ok()) return s;
  if (split.local_loss_steps > 0 &&
      model.task() != model::Task::kClassification) {
    return absl::InvalidArgumentError(
        "split: local-loss updates need a classification model");
  }
  const auto start = Clock::now();
  SplitResult result;
  model.train(true);
  torch::manual_seed(options.seed);

  model::Dataset kept = data;
  if (split.local_loss_steps > 0) {
    LocalHead head(model.hidden_dim(), model.num_outputs());
    auto phase = Clock::now();
    if (absl::Status s = LocalLossPhase(model, data, options, split.cut,
                                        split.local_loss_steps, head);
        !s.ok()) {
      model.train(false);
      return s;
    }
    result.local_steps = split.local_loss_steps;
    result.local_s = Since(phase);
    if (split.keep_fraction < 1) {
      phase = Clock::now();
      const int64_t keep = std::max<int64_t>(
          1,
          static_cast<int64_t>(std::ceil(split.keep_fraction * data.size())));
      const at::Tensor index = HardestSamples(model, data, split.cut, head,
                                              keep, options.batch_size);
      kept.inputs = data.inputs.index_select(0, index);
      kept.targets = data.targets.index_select(0, index);
      result.prune_s = Since(phase);
    }
  }
  result.kept_examples = kept.size();

  const int64_t steps_per_epoch =
      (kept.size() + options.batch_size - 1) / options.batch_size;
  int64_t total = steps_per_epoch * options.epochs;
  if (options.max_steps > 0) total = std::min(total, options.max_steps);

  std::vector<at::Tensor> params = HeadParameters(model, split.cut);
  std::unique_ptr<model::Optimizer> optimizer;
  if (!params.empty()) {
    absl::StatusOr<std::unique_ptr<model::Optimizer>> made =
        model::Optimizer::Create(params, options, total);
    if (!made.ok()) return made.status();
    optimizer = *std::move(made);
  }

  Batches batches(kept.size(), options.batch_size, options.seed);
  double report_loss = 0;
  int64_t report_steps = 0;
  model::LossWindows windows(total);
  absl::Status failure;
  for (int64_t step = 0; step < total; ++step) {
    int64_t epoch = 0;
    const at::Tensor index = batches.Next(&epoch);
    if (optimizer) optimizer->DropGrads();
    const at::Tensor hidden =
        model.ForwardHead(kept.inputs.index_select(0, index), split.cut);
    StepRequest request;
    request.step = step + 1;
    request.applied_steps = step;
    request.total_steps = total;
    request.activations = hidden.detach();
    request.targets = kept.targets.index_select(0, index);
    absl::StatusOr<StepReply> reply = link.Step(request);
    if (!reply.ok()) {
      failure = reply.status();
      break;
    }
    if (!reply->gradients.defined() ||
        reply->gradients.sizes() != hidden.sizes() ||
        reply->gradients.scalar_type() != torch::kFloat32 ||
        !torch::isfinite(reply->gradients).all().item<bool>() ||
        !std::isfinite(reply->loss)) {
      failure = absl::InvalidArgumentError(
          absl::StrCat("split step ", step + 1,
                       ": the server's gradient is missing, not float32 of the "
                       "activations' shape ",
                       c10::str(hidden.sizes()), ", or not finite"));
      break;
    }
    if (hidden.requires_grad()) hidden.backward(reply->gradients);
    if (options.after_backward) options.after_backward();
    const double lr = optimizer ? optimizer->Step(step) : 0;
    ++result.split_steps;
    result.train.examples += index.size(0);
    windows.Add(reply->loss);
    report_loss += reply->loss;
    ++report_steps;
    if (options.on_progress &&
        ((step + 1) % options.progress_every == 0 || step + 1 == total)) {
      model::TrainProgress progress;
      progress.step = step + 1;
      progress.total_steps = total;
      progress.epoch = epoch;
      progress.loss = report_loss / report_steps;
      progress.learning_rate = lr;
      options.on_progress(progress);
      report_loss = 0;
      report_steps = 0;
    }
  }
  model.train(false);
  const absl::Status finished = link.Finish(result.split_steps);
  if (!failure.ok()) return failure;
  if (!finished.ok()) return finished;
  result.train.steps = result.split_steps;
  result.train.first_loss = windows.first();
  result.train.final_loss = windows.last();
  result.train.seconds = Since(start);
  return result;
}

double TrainingFlops(const model::ModelImpl& model, int64_t batch,
                     int64_t tokens, int64_t begin, int64_t end) {
  const std::vector<model::BlockShape> shapes = model.block_shapes();
  double macs = 0;
  for (int64_t i = begin; i < end; ++i) {
    const std::string prefix = model.block_prefix(i);
    for (const auto& item : model.named_parameters(/*recurse=*/true)) {
      if (absl::StartsWith(item.key(), prefix) && item.value().dim() == 2) {
        macs += double(item.value().numel()) * tokens;
      }
    }
    // Q K^T and the weighted sum of V.
    macs += 2.0 * tokens * tokens * shapes[i].num_heads * model.head_dim();
  }
  return 3 * 2 * macs * batch;
}

}  // namespace fedge::split
