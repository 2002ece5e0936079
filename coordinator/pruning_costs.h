// What pruning costs the global model: the one-shot rise of its validation
// loss at a pruning ratio, (pruned loss / unpruned loss - 1) clipped to
// [0, 1]. A FedSpine reward term that the bandits are told before they
// choose (it is the same for every device and measured, so they need not
// learn it by playing it; strategies::KnownReward).
//
// Measuring is heavy (an evaluation of a materialised model per distinct
// plan), so it is split from looking up: PruningCostMeter measures on the
// global model as it is, outside the engine's lock; PruningCostTable holds
// what a round's bandits may ask, under it.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

#include "coordinator/global_model.h"
#include "model/model.h"

namespace fedge::coordinator {

// EngineHooks::validation_loss: the mean loss of `model` on held-out data.
// `stop` (may be empty) is asked between batches; once it answers true the
// call returns Cancelled, so a measurement nobody waits for any more ends
// within a batch.
using StopFn = std::function<bool()>;
using ValidationLossFn = std::function<absl::StatusOr<double>(
    model::ModelImpl& model, const StopFn& stop)>;

// Thread-safe; measurements run one at a time.
class PruningCostMeter {
 public:
  // `global` must outlive the meter. `loss` may be empty: nothing is
  // measured and every cost is 0.
  PruningCostMeter(const GlobalModel* global, ValidationLossFn loss);

  bool enabled() const { return static_cast<bool>(loss_); }

  // The cost of each of `ratios` on the global model's current version; 0
  // for a ratio <= 0 and for a failed measurement (logged: a reward term,
  // not a correctness matter). Ratios whose plans remove the same units
  // share one evaluation, and losses are kept until the version changes.
  // Once `stop` (may be empty) answers true, measuring ends within a batch
  // and the ratios not yet measured are left out of the answer.
  std::map<double, double> Measure(const std::vector<double>& ratios,
                                   const StopFn& stop = {});

 private:
  // The validation loss of the global model pruned by Plan(ratio); NaN
  // when it cannot be measured, nullopt when stopped (not kept).
  std::optional<double> Loss(double ratio, const StopFn& stop)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const GlobalModel& global_;
  const ValidationLossFn loss_;
  absl::Mutex mu_;
  int64_t version_ ABSL_GUARDED_BY(mu_) = -1;
  // By the plan's kept units, for version_.
  std::map<std::string, double> losses_ ABSL_GUARDED_BY(mu_);
};

// The costs the open round's bandits may ask about, by combined ratio, and
// those measured ahead for the round after it. Not thread-safe (the
// engine's lock guards it).
class PruningCostTable {
 public:
  // The open round's cost at `ratio`: 0 for ratio <= 0, nullopt if not
  // measured.
  std::optional<double> Find(double ratio) const;
  // Those of `ratios` > 0 that the open round has no cost for.
  std::vector<double> Missing(const std::vector<double>& ratios) const;
  // Those of `ratios` > 0 not yet measured ahead for the next round.
  std::vector<double> MissingNext(const std::vector<double>& ratios) const;
  void Add(const std::map<double, double>& costs);
  void AddNext(const std::map<double, double>& costs);
  // A round committed: the costs measured ahead are the open round's now.
  void Advance();

 private:
  std::map<double, double> current_, next_;
};

}  // namespace fedge::coordinator
