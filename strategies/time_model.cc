#include "strategies/time_model.h"

#include <algorithm>
#include <cmath>

namespace fedge::strategies {
namespace {

bool NonNegative(double x) { return std::isfinite(x) && x >= 0; }

}  // namespace

double RelativeWork(double combined_ratio, int64_t rank,
                    const WorkShares& shares) {
  const double p = std::clamp(combined_ratio, 0.0, 1.0);
  const double per_rank =
      std::isfinite(shares.per_rank) ? std::max(shares.per_rank, 0.0) : 0.0;
  // The adapter's work grows as its size does: RelativeBytes.
  return std::max(1e-6, 1.0 - std::clamp(shares.prunable, 0.0, 1.0) * p +
                            per_rank * RelativeBytes(p, rank));
}

double RelativeBytes(double combined_ratio, int64_t rank) {
  return static_cast<double>(std::max<int64_t>(rank, 1)) *
         (1.0 - 0.5 * std::clamp(combined_ratio, 0.0, 1.0));
}

bool DeviceTimeModel::Observe(const TaskTime& task) {
  if (!NonNegative(task.train_s) || !NonNegative(task.transfer_s) ||
      !NonNegative(task.other_s) || !NonNegative(task.combined_ratio) ||
      task.rank < 1) {
    return false;
  }
  if (!(task.step_multiple > 0) || !std::isfinite(task.step_multiple)) {
    return false;
  }
  const double work_s = task.train_s / task.step_multiple /
                        RelativeWork(task.combined_ratio, task.rank, shares_);
  const double byte_s =
      task.transfer_s / RelativeBytes(task.combined_ratio, task.rank);
  const double w = state_.observations == 0 ? 1.0 : 0.5;
  state_.work_s += w * (work_s - state_.work_s);
  state_.byte_s += w * (byte_s - state_.byte_s);
  state_.other_s += w * (task.other_s - state_.other_s);
  ++state_.observations;
  return true;
}

std::optional<double> DeviceTimeModel::Predict(double combined_ratio,
                                               int64_t rank) const {
  const std::optional<double> train = PredictTrain(combined_ratio, rank);
  if (!train.has_value()) return std::nullopt;
  return *train + state_.byte_s * RelativeBytes(combined_ratio, rank) +
         state_.other_s;
}

std::optional<double> DeviceTimeModel::PredictTrain(double combined_ratio,
                                                    int64_t rank) const {
  if (state_.observations == 0) return std::nullopt;
  return state_.work_s * RelativeWork(combined_ratio, rank, shares_);
}

double FillPace(double predicted_s, double train_s, double pace_s,
                double max_multiple) {
  if (!NonNegative(predicted_s) || !(train_s > 0) || !std::isfinite(train_s) ||
      !(pace_s > 0) || !std::isfinite(pace_s) || !(max_multiple >= 1)) {
    return 1;
  }
  return std::clamp(1 + (pace_s - predicted_s) / train_s, 1.0, max_multiple);
}

double RoundPace(const std::vector<double>& fastest) {
  double pace = 0;
  for (double t : fastest) {
    if (NonNegative(t)) pace = std::max(pace, t);
  }
  return pace;
}

double TimeOverPace(double seconds, double pace) {
  if (!(pace > 0) || !NonNegative(seconds) || !std::isfinite(pace)) return 0;
  return std::clamp(seconds / pace - 1.0, 0.0, kMaxTimeOverPace);
}

Arm CapabilityArm(const std::vector<Arm>& arms,
                  const std::function<double(const Arm&)>& seconds,
                  double budget) {
  const Arm* best = nullptr;
  const Arm* fastest = &arms.front();
  double fastest_s = seconds(arms.front());
  for (const Arm& arm : arms) {
    const double t = seconds(arm);
    if (t < fastest_s) {
      fastest = &arm;
      fastest_s = t;
    }
    if (!(t <= budget)) continue;
    if (best == nullptr || arm.prune_ratio < best->prune_ratio ||
        (arm.prune_ratio == best->prune_ratio && arm.rank > best->rank)) {
      best = &arm;
    }
  }
  return best != nullptr ? *best : *fastest;
}

double Quantile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank =
      std::ceil(std::clamp(q, 0.0, 1.0) * static_cast<double>(values.size()));
  const size_t i = static_cast<size_t>(std::max(rank, 1.0)) - 1;
  return values[std::min(i, values.size() - 1)];
}

}  // namespace fedge::strategies
