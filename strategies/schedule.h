// Prune-and-tune: the global sparsity schedule and FedProx's proximal term.
#pragma once

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "model/model.h"

namespace fedge::strategies {

// The global model's pruning ratio rises from 0 at start_round to `target`
// at end_round along the cubic of Zhu and Gupta (2017),
// target * (1 - (1 - progress)^3): fast early, while the model has slack,
// gentle near the end so it can recover.
struct SparsitySchedule {
  double target = 0.0;  // [0, 1)
  int64_t start_round = 0;
  int64_t end_round = 10;  // > start_round unless target is 0.

  // InvalidArgument naming the bad field.
  absl::Status Validate() const;
  double Ratio(int64_t round) const;
};

// A device whose arm prunes `device_ratio` of what the global model (at
// `global_ratio`) keeps prunes this much of the base model in all.
double CombinedRatio(double global_ratio, double device_ratio);

// Its inverse: the device ratio that prunes a global model at
// `global_ratio` to `target` in all; 0 once the global ratio is there.
double RatioToTarget(double global_ratio, double target);

// FedProx (Li et al. 2020): adds mu * (w - w_start) to the gradient of
// every trainable parameter, the gradient of (mu / 2) ||w - w_start||^2, so
// local training cannot drift far from where the round started. The start
// values are copied now. Use as TrainOptions::after_backward. The model
// must outlive the hook. InvalidArgument if mu < 0 or not finite;
// FailedPrecondition if nothing is trainable.
absl::StatusOr<std::function<void()>> FedProxHook(model::ModelImpl& model,
                                                  double mu);

}  // namespace fedge::strategies
