#include "strategies/reward.h"

#include <algorithm>
#include <cmath>

#include "strategies/time_model.h"

namespace fedge::strategies {

constexpr double kMaxImportance = 2.0;

double Reward(const RewardTerms& terms, const RewardWeights& weights) {
  return weights.loss * terms.loss_improvement +
         weights.pruning * terms.pruning_progress +
         weights.importance * terms.update_importance -
         weights.time * terms.time_over_pace -
         weights.pruning_cost * terms.pruning_cost;
}

RewardTerms MakeRewardTerms(const RewardInputs& in) {
  RewardTerms terms;
  if (std::isfinite(in.loss_before) && std::isfinite(in.loss_after) &&
      in.loss_before > 0) {
    terms.loss_improvement = std::clamp(
        (in.loss_before - in.loss_after) / in.loss_before, -1.0, 1.0);
  }
  terms.pruning_progress =
      in.target_ratio > 0
          ? std::clamp(in.prune_ratio / in.target_ratio, 0.0, 1.0)
          : 0.0;
  terms.update_importance =
      in.median_update_norm > 0 && std::isfinite(in.update_norm)
          ? std::clamp(in.update_norm / in.median_update_norm, 0.0,
                       kMaxImportance)
          : 1.0;
  terms.time_over_pace =
      in.straggler
          ? kMaxTimeOverPace
          : TimeOverPace(in.seconds, in.pace_seconds > 0 ? in.pace_seconds
                                                         : in.median_seconds);
  terms.pruning_cost = std::isfinite(in.pruning_cost)
                           ? std::clamp(in.pruning_cost, 0.0, 1.0)
                           : 0.0;
  return terms;
}

double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

}  // namespace fedge::strategies
