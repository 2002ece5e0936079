#include "strategies/schedule.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include <torch/types.h>

namespace fedge::strategies {

absl::Status SparsitySchedule::Validate() const {
  if (!(target >= 0 && target < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sparsity target must be in [0, 1); got ", target));
  }
  if (start_round < 0 || (target > 0 && end_round <= start_round)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sparsity schedule needs 0 <= start_round (", start_round,
                     ") < end_round (", end_round, ")"));
  }
  return absl::OkStatus();
}

double SparsitySchedule::Ratio(int64_t round) const {
  if (target <= 0 || round <= start_round) return 0;
  if (round >= end_round) return target;
  const double progress = static_cast<double>(round - start_round) /
                          static_cast<double>(end_round - start_round);
  return target * (1.0 - std::pow(1.0 - progress, 3));
}

double CombinedRatio(double global_ratio, double device_ratio) {
  return 1.0 - (1.0 - global_ratio) * (1.0 - device_ratio);
}

double RatioToTarget(double global_ratio, double target) {
  if (!(target > global_ratio) || !(global_ratio < 1)) return 0;
  return 1.0 - (1.0 - target) / (1.0 - global_ratio);
}

absl::StatusOr<std::function<void()>> FedProxHook(model::ModelImpl& model,
                                                  double mu) {
  if (!(mu >= 0) || !std::isfinite(mu)) {
    return absl::InvalidArgumentError(
        absl::StrCat("FedProx mu must be >= 0; got ", mu));
  }
  std::vector<at::Tensor> params, start;
  for (const at::Tensor& p : model.parameters()) {
    if (!p.requires_grad()) continue;
    params.push_back(p);
    start.push_back(p.detach().clone());
  }
  if (params.empty()) {
    return absl::FailedPreconditionError(
        "FedProx: the model has no trainable parameters");
  }
  return std::function<void()>([params, start, mu] {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) {
      at::Tensor grad = params[i].mutable_grad();
      if (!grad.defined()) continue;
      grad.add_(params[i].detach() - start[i], mu);
    }
  });
}

}  // namespace fedge::strategies
