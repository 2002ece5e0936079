#include "strategies/reward.h"

#include <algorithm>
#include <cmath>

namespace fedge::strategies {

constexpr double kMaxTimeRatio = 4.0;
constexpr double kMaxImportance = 2.0;

double Reward(const RewardTerms& terms, const RewardWeights& weights) {
  return weights.loss * terms.loss_improvement +
         weights.pruning * terms.pruning_progress +
         weights.importance * terms.update_importance -
         weights.time * terms.time_ratio -
         weights.pruning_cost * terms.pruning_cost;
}

RewardTerms MakeRewardTerms(double loss_before, double loss_after,
                            double prune_ratio, double max_ratio,
                            double update_norm, double median_update_norm,
                            double seconds, double median_seconds,
                            bool straggler, double pruning_cost) {
  RewardTerms terms;
  if (std::isfinite(loss_before) && std::isfinite(loss_after) &&
      loss_before > 0) {
    terms.loss_improvement =
        std::clamp((loss_before - loss_after) / loss_before, -1.0, 1.0);
  }
  terms.pruning_progress =
      max_ratio > 0 ? std::clamp(prune_ratio / max_ratio, 0.0, 1.0) : 0.0;
  terms.update_importance =
      median_update_norm > 0 && std::isfinite(update_norm)
          ? std::clamp(update_norm / median_update_norm, 0.0, kMaxImportance)
          : 1.0;
  if (straggler) {
    terms.time_ratio = kMaxTimeRatio;
  } else if (median_seconds > 0 && std::isfinite(seconds)) {
    terms.time_ratio = std::clamp(seconds / median_seconds, 0.0, kMaxTimeRatio);
  } else {
    terms.time_ratio = 1.0;
  }
  terms.pruning_cost =
      std::isfinite(pruning_cost) ? std::clamp(pruning_cost, 0.0, 1.0) : 0.0;
  return terms;
}

double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

}  // namespace fedge::strategies
