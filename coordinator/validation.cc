#include "coordinator/validation.h"

#include <vector>

#include "model/trainer.h"

namespace fedge::coordinator {

std::function<absl::StatusOr<double>(model::ModelImpl&)> ValidationLoss(
    const model::Dataset* data) {
  if (data->size() == 0) return nullptr;
  return [data](model::ModelImpl& m) -> absl::StatusOr<double> {
    absl::StatusOr<model::EvalResult> r = model::Evaluate(m, *data);
    if (!r.ok()) return r.status();
    return r->loss;
  };
}

}  // namespace fedge::coordinator
