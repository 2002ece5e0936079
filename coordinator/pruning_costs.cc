#include "coordinator/pruning_costs.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include <glog/logging.h>

namespace fedge::coordinator {

PruningCostMeter::PruningCostMeter(const GlobalModel* global,
                                   ValidationLossFn loss)
    : global_(*global), loss_(std::move(loss)) {}

std::map<double, double> PruningCostMeter::Measure(
    const std::vector<double>& ratios, const StopFn& stop) {
  std::map<double, double> costs;
  absl::MutexLock lock(&mu_);
  if (const int64_t version = global_.version(); version != version_) {
    losses_.clear();
    version_ = version;
  }
  for (double ratio : ratios) {
    if (ratio <= 0 || !enabled()) {
      costs[ratio] = 0;
      continue;
    }
    const std::optional<double> dense = Loss(0, stop);
    if (!dense.has_value()) break;
    const std::optional<double> pruned = Loss(ratio, stop);
    if (!pruned.has_value()) break;
    costs[ratio] = std::isfinite(*dense) && std::isfinite(*pruned) && *dense > 0
                       ? std::clamp(*pruned / *dense - 1, 0.0, 1.0)
                       : 0;
  }
  return costs;
}

std::optional<double> PruningCostMeter::Loss(double ratio, const StopFn& stop) {
  absl::StatusOr<pruning::PruningPlan> plan = global_.Plan(ratio);
  std::string key;
  if (plan.ok()) {
    for (const pruning::BlockPlan& b : plan->blocks) {
      absl::StrAppend(&key, absl::StrJoin(b.heads, ","), ";",
                      absl::StrJoin(b.kv_heads, ","), ";",
                      absl::StrJoin(b.channels, ","), "|");
    }
    if (auto it = losses_.find(key); it != losses_.end()) return it->second;
  }
  if (stop && stop()) return std::nullopt;
  absl::StatusOr<double> loss = [&]() -> absl::StatusOr<double> {
    if (!plan.ok()) return plan.status();
    absl::StatusOr<model::Model> model = global_.Materialize(ratio);
    if (!model.ok()) return model.status();
    absl::StatusOr<double> l = loss_(**model, stop);
    if (l.ok() && !(std::isfinite(*l) && *l >= 0)) {
      return absl::InternalError(
          absl::StrCat("validation loss is not a finite loss: ", *l));
    }
    return l;
  }();
  if (absl::IsCancelled(loss.status())) return std::nullopt;
  if (!loss.ok()) {
    LOG(WARNING) << "pruning cost of ratio " << ratio
                 << " not measured this round: " << loss.status();
  }
  return losses_[key] = loss.value_or(NAN);
}

std::optional<double> PruningCostTable::Find(double ratio) const {
  if (ratio <= 0) return 0.0;
  auto it = current_.find(ratio);
  if (it == current_.end()) return std::nullopt;
  return it->second;
}

std::vector<double> PruningCostTable::Missing(
    const std::vector<double>& ratios) const {
  std::vector<double> missing;
  for (double ratio : ratios) {
    if (!Find(ratio).has_value()) missing.push_back(ratio);
  }
  return missing;
}

std::vector<double> PruningCostTable::MissingNext(
    const std::vector<double>& ratios) const {
  std::vector<double> missing;
  for (double ratio : ratios) {
    if (ratio > 0 && next_.count(ratio) == 0) missing.push_back(ratio);
  }
  return missing;
}

void PruningCostTable::Add(const std::map<double, double>& costs) {
  for (const auto& [ratio, cost] : costs) current_[ratio] = cost;
}

void PruningCostTable::AddNext(const std::map<double, double>& costs) {
  for (const auto& [ratio, cost] : costs) next_[ratio] = cost;
}

void PruningCostTable::Advance() {
  current_ = std::move(next_);
  next_.clear();
}

}  // namespace fedge::coordinator
