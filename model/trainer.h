// Local training and evaluation of any fedge Model on an in-memory Dataset.
//
// Only parameters with requires_grad are trained (LoRA freezes the base by
// clearing it), with AdamW, a warm-up + cosine (or constant) learning-rate
// schedule, gradient-norm clipping and shuffled mini-batches. A progress
// callback reports every `progress_every` steps.
//
// Not thread-safe: one Train or Evaluate per model at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"

#include "model/dataset.h"
#include "model/model.h"

namespace fedge::model {

enum class LrSchedule { kConstant, kCosine };

struct TrainProgress {
  int64_t step = 0;  // Optimizer steps done so far (1-based).
  int64_t total_steps = 0;
  int64_t epoch = 0;  // 0-based.
  double loss = 0;    // Mean loss over the steps since the last report.
  double learning_rate = 0;
  double samples_per_second = 0;
};

struct TrainOptions {
  int64_t epochs = 1;
  // Stop after this many optimizer steps (0: no limit beyond epochs).
  int64_t max_steps = 0;
  int64_t batch_size = 64;
  double learning_rate = 1e-3;
  // Decoupled weight decay, applied to matrices only (not norms or biases).
  double weight_decay = 0.01;
  double beta1 = 0.9;
  double beta2 = 0.999;
  // Clip the global gradient norm to this value (0: no clipping).
  double max_grad_norm = 1.0;
  LrSchedule schedule = LrSchedule::kCosine;
  // Fraction of the steps spent warming the learning rate up linearly.
  double warmup_fraction = 0.05;
  // Shuffling order (and dropout, through the global LibTorch generator).
  uint64_t seed = 0;
  int64_t progress_every = 50;
  std::function<void(const TrainProgress&)> on_progress;
  // Called after each backward pass, before clipping and the optimizer step,
  // with gradients in place (importance scoring reads them here).
  std::function<void()> after_backward;
  // Classification only: the loss is taken on logits + log(the data's label
  // frequencies) (balanced softmax, the logit adjustment FedLC applies to
  // label-skewed devices), so that a shard holding few labels does not pull
  // the shared model towards them. The model is unchanged and is evaluated
  // without it. Train refuses it for a language model.
  bool balanced_softmax = false;

  // InvalidArgument naming the first bad field.
  absl::Status Validate() const;
};

// The peak a training step adds to the process, from the bytes of its
// trainable parameters (their gradients and AdamW's two moments: 3x) and
// of the activations autograd keeps (ModelImpl::TrainingActivationBytes).
// The activations count 2.5x: the backward pass holds each saved tensor's
// gradient beside it, and freed temporaries stay resident in malloc's
// arenas within a step. Calibrated, not derived: the resident peak of one
// step measured 2.0-2.4x the saved activations on the decoder (64 and 128
// tokens, batch 4 and 16, python3-torch on the same LibTorch, and
// fedge-client's own peak RSS); docs/tasks.md has the figures.
int64_t TrainingPeakBytes(int64_t trainable_bytes, int64_t activation_bytes);

// Estimated memory a Train() call adds to the process at its peak
// (TrainingPeakBytes), for batches of `options.batch_size` shaped like
// `example` (one sample or a batch). The parameters and the data are not
// counted: they are resident before training starts.
int64_t EstimateTrainingBytes(const ModelImpl& model, const at::Tensor& example,
                              const TrainOptions& options);

struct TrainResult {
  int64_t steps = 0;
  int64_t examples = 0;   // Samples processed (counting repeats by epoch).
  double first_loss = 0;  // Mean loss of the first 10% of the steps run.
  double final_loss = 0;  // Mean loss of the last 10% of the steps run.
  double seconds = 0;
};

// The mean training loss of a run's first and last tenth of its steps (at
// least one step each), so that first - final is what the run did to its
// own loss even when it stops long before an epoch ends (a round's
// max_steps). Two windows of one step each when the run has fewer than 20.
class LossWindows {
 public:
  explicit LossWindows(int64_t total_steps)
      : window_(total_steps >= 20 ? total_steps / 10 : 1) {}
  void Add(double loss) { losses_.push_back(loss); }  // In step order.
  double first() const;                               // 0 before any step.
  double last() const;

 private:
  int64_t window_;
  std::vector<double> losses_;
};

// InvalidArgument unless `data` is a non-empty data set `model` can train
// and evaluate on: inputs that pass ValidateInput, int64 targets of the
// task's shape, every target in [0, num_outputs).
absl::Status ValidateDataset(const ModelImpl& model, const Dataset& data);

// The trainer's optimizer over a chosen set of parameters: AdamW with
// weight decay on matrices only, the warm-up + schedule of `options`, and
// gradient-norm clipping. Split training runs one on each side of the cut.
// Not thread-safe.
class Optimizer {
 public:
  // REQUIRES: options.Validate().ok(), every tensor in `params` a leaf that
  // requires grad. FailedPrecondition if `params` is empty. `total_steps`
  // sets the schedule's length.
  static absl::StatusOr<std::unique_ptr<Optimizer>> Create(
      std::vector<at::Tensor> params, const TrainOptions& options,
      int64_t total_steps);
  ~Optimizer();

  // Drops the parameters' gradients (backward then writes fresh ones).
  void DropGrads();
  // Sets step `step`'s (0-based) scheduled rate, clips the gradients and
  // updates the parameters. Returns the rate used.
  double Step(int64_t step);

 private:
  struct State;
  explicit Optimizer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// Trains `model` in place. InvalidArgument for bad options, an empty or
// mismatched dataset (checked against model.ValidateInput); FailedPrecondition
// if no parameter is trainable or the loss becomes NaN/Inf (the step that
// produced it is not applied, weights stay finite).
absl::StatusOr<TrainResult> Train(ModelImpl& model, const Dataset& data,
                                  const TrainOptions& options);

struct EvalResult {
  int64_t examples = 0;
  double loss = 0;        // Mean cross-entropy per target.
  double accuracy = 0;    // Fraction of correct top-1 predictions per target.
  double perplexity = 0;  // exp(loss); meaningful for language models.
  // Total cross-entropy in bits over the UTF-8 bytes the targets stand for
  // (Dataset::target_bytes); 0 when the data set does not carry them.
  double bits_per_byte = 0;
  // Language models whose data mask targets (kIgnoreTarget: one record per
  // window, its prompt masked): the share of examples whose every scored
  // target is the top-1 prediction, which is exactly the share a greedy
  // decoder would answer word for word (each step's prefix is then the
  // reference's). -1 when the data masks nothing.
  double exact_match = -1;
};

// Evaluates without gradients, in eval mode (the previous mode is restored).
// Loss, accuracy and bytes count scored targets only.
// InvalidArgument for an empty or mismatched dataset.
absl::StatusOr<EvalResult> Evaluate(ModelImpl& model, const Dataset& data,
                                    int64_t batch_size = 256);

// The loss the trainer optimises: cross-entropy for both tasks.
at::Tensor TaskLoss(Task task, const at::Tensor& logits,
                    const at::Tensor& targets);

}  // namespace fedge::model
