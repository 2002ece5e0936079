// The device's half of split fine-tuning: train the head (embedding and
// blocks [0, cut)) of a sub-model against the coordinator's tail through a
// SplitLink, with SFPrompt's two communication savers as options:
//
//   local-loss updates  before split training, `local_loss_steps` steps train
//                       the head against a small local classifier (a norm
//                       and a linear layer on the class token) with a loss
//                       of the device's own: no traffic at all;
//   dataset pruning     then score every local sample by EL2N (the L2 norm of
//                       softmax(local classifier) minus the one-hot label)
//                       and split-train only on the `keep_fraction` hardest.
//
// Gradient clipping applies to each side separately (a global norm would
// need another exchange per step). Not thread-safe.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"

#include "model/dataset.h"
#include "model/model.h"
#include "model/trainer.h"
#include "split/protocol.h"

namespace fedge::split {

struct SplitOptions {
  int64_t cut = 1;               // The device runs blocks [0, cut).
  int64_t local_loss_steps = 0;  // Phase 1; classification models only.
  double keep_fraction = 1.0;    // (0, 1]; < 1 needs local_loss_steps > 0.
  // InvalidArgument naming the bad field.
  absl::Status Validate() const;
};

struct SplitResult {
  model::TrainResult train;   // Over the split steps; seconds: whole call.
  int64_t split_steps = 0;    // Exchanges with the server, all applied.
  int64_t local_steps = 0;    // Local-loss steps.
  int64_t kept_examples = 0;  // After dataset pruning.
  double local_s = 0, prune_s = 0;  // Wall seconds of phases 1 and 2.
};

// Trains the trainable parameters of `model`'s head in place. The trainer's
// options apply (epochs, batch size, schedule, seed; `after_backward` runs
// after each head backward, `on_progress` per split step). The link is
// finished with the steps applied, also when a step fails.
// InvalidArgument for bad options, a bad cut or data (ValidateDataset),
// local-loss options on a language model, or a reply of the wrong shape or
// with NaN/Inf; the link's error if an exchange fails (the steps applied
// until then stay applied on both sides).
absl::StatusOr<SplitResult> TrainSplit(model::ModelImpl& model,
                                       const model::Dataset& data,
                                       const model::TrainOptions& options,
                                       const SplitOptions& split,
                                       SplitLink& link);

// Floating-point operations of a training step (forward and backward,
// taken as 3x the forward's 2 x multiply-adds) through blocks [begin, end)
// for `batch` sequences of `tokens` positions: every matrix in the blocks
// (projections, MLP, adapters) applied to each position, plus the attention
// products. The embedding and the output head, about 1% of a block each in
// the default ViT, are left out. Used to report a device's share of the
// compute at a given cut.
double TrainingFlops(const model::ModelImpl& model, int64_t batch,
                     int64_t tokens, int64_t begin, int64_t end);

}  // namespace fedge::split
