// How long a device's task will take under each arm, predicted from what
// its earlier tasks took, and the round's pace: the time the round has to
// wait for anyway.
//
// FedSpine's reward has a term for a device's completion time. Learning
// that term by playing arms costs a device one round per arm and cell, and
// with the 30-40 plays a device gets in a federation the exploration alone
// fills the race (issue 22). But how an arm changes a device's time is
// known up to two per-device constants: training work shrinks with the
// pruned share of the blocks, and the adapter's bytes with its rank and
// pruned dimensions. One measured task gives those constants; the bandit
// is then told each arm's time term before it chooses (KnownReward) and
// learns only what cannot be predicted (loss improvement, update
// importance and the prediction's error). docs/architecture.md ("Time,
// known from one task") says where this departs from the paper and why.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "strategies/bandit.h"

namespace fedge::strategies {

// What a model's training work is made of, as shares of the dense base's
// work (work per token taken as proportional to parameters).
struct WorkShares {
  // The structured-prunable blocks' share (pruning::PrunableShare).
  double prunable = 0;
  // A rank-1 adapter on every LoRA target: the sum of the targets'
  // in + out features over the base's parameters. At rank 32 on all seven
  // projections of the text task's small decoder this is about a fifth of
  // the base's work; on a large model it is a few percent.
  double per_rank = 0;
};

// A task's training work relative to the dense base's: a combined ratio p
// leaves 1 - prunable * p of the base, and an adapter of rank r adds
// per_rank * r * (1 - p / 2) (pruning shrinks one of each target's two
// dimensions). The adapter's bytes: every LoRA target sits in a block, so
// an adapter of rank r at ratio p has r * (1 - p / 2) of a rank-1 dense
// adapter's bytes. Both are approximations; the bandit learns their error.
double RelativeWork(double combined_ratio, int64_t rank,
                    const WorkShares& shares);
double RelativeBytes(double combined_ratio, int64_t rank);

// What one task took, in seconds: training as the device measured it,
// transfer both ways, and the rest of its task-to-submission time (model
// build, encoding, waiting), all >= 0.
struct TaskTime {
  double combined_ratio = 0;
  int64_t rank = 1;
  double train_s = 0;
  double transfer_s = 0;
  double other_s = 0;
  // The task's optimizer steps over the steps the model predicts for
  // (FillPace): training time is taken as proportional to them.
  double step_multiple = 1;
};

// The checkpointed part of a DeviceTimeModel.
struct TimeModelState {
  int64_t observations = 0;
  double work_s = 0;   // Seconds per unit of RelativeWork.
  double byte_s = 0;   // Seconds per unit of RelativeBytes.
  double other_s = 0;  // Per task.
};

// Per device. Not thread-safe.
class DeviceTimeModel {
 public:
  // The newest task weighs half of the running averages, so a device
  // whose speed changed is followed within two or three tasks.
  explicit DeviceTimeModel(const WorkShares& shares) : shares_(shares) {}

  // Folds in one task; a task with a non-finite or negative time, or a
  // rank below 1, is ignored (returns false).
  bool Observe(const TaskTime& task);

  // Seconds from task to submission under an arm; nullopt before the
  // first observation.
  std::optional<double> Predict(double combined_ratio, int64_t rank) const;
  // The training part of Predict.
  std::optional<double> PredictTrain(double combined_ratio, int64_t rank) const;

  const TimeModelState& state() const { return state_; }
  void Restore(const TimeModelState& state) { state_ = state; }

 private:
  WorkShares shares_;
  TimeModelState state_;
};

// The round's pace: the longest of the participants' shortest predicted
// times, `fastest[i]` being device i's least predicted time over the arms
// it may play. A round in which every invited device is waited for cannot
// close sooner, so a device that finishes by then costs the round nothing.
// 0 when no device has a prediction.
double RoundPace(const std::vector<double>& fastest);

// How many times its usual optimizer steps a device can train and still
// submit by the round's pace: a device predicted to take `predicted_s`, of
// which `train_s` training, has pace_s - predicted_s to spare, and each
// extra multiple of its steps costs train_s. In [1, max_multiple]; 1 when
// anything is unknown (0, negative or not finite). The coordinator's
// --fill_pace: the round waits for its slowest device anyway, so faster
// devices spend the wait training instead of idle.
double FillPace(double predicted_s, double train_s, double pace_s,
                double max_multiple);

// The reward's time term (RewardTerms::time_over_pace): how far past the
// pace a task of `seconds` ends, as a multiple of the pace,
// max(0, seconds / pace - 1), capped at kMaxTimeOverPace. Oort (Lai et al.,
// OSDI 2021) likewise penalises only the time beyond a preferred round
// duration; fedge takes the duration from the participants themselves.
// 0 when the pace or the time is not known.
inline constexpr double kMaxTimeOverPace = 4.0;
double TimeOverPace(double seconds, double pace);

// The static capability rule, a baseline for the bandits (issue 22): of
// `arms`, the least pruned and then the highest ranked whose predicted
// `seconds` are within `budget`; the fastest arm when none is. The
// coordinator's budget is the 75th percentile of the round's devices'
// predicted times for the least pruned arm at the highest rank.
// REQUIRES: `arms` non-empty.
Arm CapabilityArm(const std::vector<Arm>& arms,
                  const std::function<double(const Arm&)>& seconds,
                  double budget);

// The q-quantile of `values`, q in [0, 1], by the nearest rank (a value
// of the list); 0 for none.
double Quantile(std::vector<double> values, double q);

}  // namespace fedge::strategies
