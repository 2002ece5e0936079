#include "coordinator/validation.h"

#include <vector>

#include "model/partition.h"
#include "model/trainer.h"

namespace fedge::coordinator {

absl::StatusOr<model::Dataset> PublicValidationSet(const model::Dataset& train,
                                                   double public_fraction,
                                                   uint64_t seed, int64_t n) {
  absl::StatusOr<model::PublicSplit> split =
      model::SplitPublic(train.size(), public_fraction, seed);
  if (!split.ok()) return split.status();
  std::vector<int64_t> held_out = std::move(split->public_indices);
  if (static_cast<int64_t>(held_out.size()) > n) {
    held_out.resize(static_cast<size_t>(std::max<int64_t>(n, 0)));
  }
  return model::Subset(train, held_out);
}

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
