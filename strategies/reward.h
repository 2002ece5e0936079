// The configuration bandit's reward (papers.md section 9): a weighted sum
// of normalised terms, each logged per device per round so the weights can
// be refitted offline.
#pragma once

#include <vector>

namespace fedge::strategies {

struct RewardTerms {
  // (loss_before - loss_after) / loss_before, clipped to [-1, 1].
  double loss_improvement = 0;
  // How far the arm's pruning ratio goes towards the ratio still needed to
  // reach the target sparsity, [0, 1]: pruning more moves prune-and-tune
  // towards its target, pruning past the target earns nothing, and without
  // a target (RewardInputs::target_ratio 0) pruning is worth only the time
  // it saves.
  double pruning_progress = 0;
  // The update's norm over the round's median update norm (the
  // coordinator's: the median of updates of the same rank), capped at 2.
  double update_importance = 0;
  // How far past the round's pace the device finished (TimeOverPace in
  // time_model.h), [0, 4]: finishing before the round would have ended
  // anyway costs nothing; a straggler past the deadline gets the cap.
  double time_over_pace = 0;
  // What the task's pruning costs the global model, [0, 1]: the loss of the
  // global model pruned as the device's sub-model was, over the unpruned
  // global model's loss, minus 1, on held-out server data (0 when not
  // measured), times the device's share of the round (1 / the updates the
  // round waits for): the global model moves by the mean of the round's
  // updates, so one device's sub-model moves it by that share, and its
  // pruned units still get the other devices' updates. The local loss
  // cannot see this: a device trains inside its sub-model and never meets
  // the units it lacks.
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
//   + importance * update_importance - time * time_over_pace
//   - pruning_cost * pruning_cost.
double Reward(const RewardTerms& terms, const RewardWeights& weights);

// What the coordinator measured of one device's task.
struct RewardInputs {
  double loss_before = 0;  // Local training loss, before and after.
  double loss_after = 0;
  double prune_ratio = 0;  // The arm's.
  // The device ratio that would take the round's global model to the
  // target sparsity (RatioToTarget in schedule.h); 0 when none is wanted.
  double target_ratio = 0;
  double update_norm = 0;
  double median_update_norm = 0;  // The round's; 0 if unknown: term 1.
  double seconds = 0;             // Issue to submission.
  // The round's pace (RoundPace in time_model.h); 0 if unknown: the
  // round's median seconds stand in.
  double pace_seconds = 0;
  double median_seconds = 0;
  bool straggler = false;   // Missed the deadline.
  double pruning_cost = 0;  // Clipped to [0, 1]; non-finite: 0.
};

RewardTerms MakeRewardTerms(const RewardInputs& in);

// The median of `values` (the mean of the middle two for an even count);
// 0 for none.
double Median(std::vector<double> values);

}  // namespace fedge::strategies
