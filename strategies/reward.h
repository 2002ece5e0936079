// The configuration bandit's reward (papers.md section 9): a weighted sum
// of normalised terms, each logged per device per round so the weights can
// be refitted offline.
#pragma once

#include <vector>

namespace fedge::strategies {

struct RewardTerms {
  // (loss_before - loss_after) / loss_before, clipped to [-1, 1].
  double loss_improvement = 0;
  // The arm's pruning ratio over the largest ratio in the arm space, [0, 1]:
  // pruning more moves prune-and-tune towards its target.
  double pruning_progress = 0;
  // The update's norm over the round's median update norm, capped at 2.
  double update_importance = 0;
  // The device's completion time over the round's median completion time,
  // capped at 4; a straggler past the deadline gets the cap.
  double time_ratio = 0;
  // What the task's pruning costs the global model, [0, 1]: the loss of the
  // global model pruned as the device's sub-model was, over the unpruned
  // global model's loss, minus 1, on held-out server data (0 when not
  // measured). The local loss cannot see this: a device trains inside its
  // sub-model and never meets the units it lacks.
  double pruning_cost = 0;
};

struct RewardWeights {
  double loss = 1.0;
  double pruning = 0.3;
  double importance = 0.1;
  double time = 0.5;
  double pruning_cost = 1.0;
};

// loss * loss_improvement + pruning * pruning_progress
//   + importance * update_importance - time * time_ratio
//   - pruning_cost * pruning_cost.
double Reward(const RewardTerms& terms, const RewardWeights& weights);

// The terms above from raw measurements. `median_seconds` and
// `median_update_norm` are the round's medians (0 if unknown: the term is
// then neutral, 1). `straggler` marks a device that missed the deadline.
// `pruning_cost` is clipped to [0, 1] (non-finite: 0).
RewardTerms MakeRewardTerms(double loss_before, double loss_after,
                            double prune_ratio, double max_ratio,
                            double update_norm, double median_update_norm,
                            double seconds, double median_seconds,
                            bool straggler, double pruning_cost = 0);

// The median of `values` (the mean of the middle two for an even count);
// 0 for none.
double Median(std::vector<double> values);

}  // namespace fedge::strategies
