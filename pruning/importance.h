// Importance scores of attention heads and MLP channels, and the plan that
// keeps the most important ones.
//
// Two scores:
// - Magnitude: sum of |W_eff| over a unit's weights, W_eff = W + scale B A
//   when the Linear carries a LoRA adapter.
// - LoRA gradient (LoRAPrune, which FedSpine builds on; papers.md 1.3): the
//   full weight gradient is estimated from the LoRA factors' gradients,
//   G = dB A + B dA - dB dA, element importance is |G * W_eff|, summed per
//   unit. Only Linears with adapters contribute; it costs no full-weight
//   gradient. Scores are smoothed over optimizer steps with an EMA.
// Per Linear, a unit's scores are L2-normalised across that Linear's units
// before the Linears of a block are summed, so q, k, v and o (or gate, up,
// down) weigh the same whatever their scale.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include <ATen/core/Tensor.h>

#include "model/model.h"
#include "pruning/plan.h"

namespace fedge::pruning {

struct GroupScores {
  std::vector<at::Tensor> heads;     // Per block, [num_heads], float64.
  std::vector<at::Tensor> channels;  // Per block, [mlp_hidden], float64.
};

enum class ImportanceKind { kMagnitude, kLoraGradient };

// Parses "magnitude" / "lora_gradient". InvalidArgument otherwise.
absl::StatusOr<ImportanceKind> ParseImportanceKind(absl::string_view name);

GroupScores MagnitudeScores(model::ModelImpl& model);

// Accumulates LoRA-gradient scores over training steps. Call Update() after
// each backward pass and before the optimizer step (TrainOptions::
// after_backward). Not thread-safe. The model must outlive the scorer.
class LoraGradientScorer {
 public:
  // FailedPrecondition if `model` has no LoRA adapters.
  static absl::StatusOr<std::unique_ptr<LoraGradientScorer>> Create(
      model::ModelImpl* model, double ema = 0.9);

  // Folds the current gradients into the running scores. Adapters without
  // gradients (none computed yet) are skipped.
  void Update();

  // The smoothed scores; units of Linears without adapters score zero.
  const GroupScores& scores() const { return scores_; }
  int64_t updates() const { return updates_; }

 private:
  LoraGradientScorer(model::ModelImpl* model, double ema);
  model::ModelImpl* const model_;  // Not owned.
  const double ema_;
  GroupScores scores_;
  int64_t updates_ = 0;
};

// The plan that removes `ratio` (in [0, 1)) of each block's heads and
// channels, keeping the highest-scored, rounded so that no more than `ratio`
// of either goes (e.g. ratio 0.3 of 2 KV groups removes none); at least one
// head and one channel stay in every block that has any. With GQA, whole KV
// groups are kept or removed by their summed score. InvalidArgument for a bad
// ratio or scores that do not match the model.
absl::StatusOr<PruningPlan> PlanFromScores(const model::ModelImpl& model,
                                           const GroupScores& scores,
                                           double ratio);

}  // namespace fedge::pruning
