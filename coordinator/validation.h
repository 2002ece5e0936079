// The coordinator's own held-out data, with which it measures what a
// pruning ratio costs the global model (EngineHooks::validation_loss).
#pragma once

#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"

#include "model/dataset.h"
#include "model/model.h"

namespace fedge::coordinator {

// The first `n` images of the public split of `train`
// (model::SplitPublic(train.size(), public_fraction, seed)): the split the
// base was pretrained on and that no device holds, when devices shard the
// same training set with the same fraction and seed (fedge-client's
// --public_fraction and --data_seed). Fewer if the split is smaller; empty
// for n <= 0. InvalidArgument for a fraction outside [0, 1].
absl::StatusOr<model::Dataset> PublicValidationSet(const model::Dataset& train,
                                                   double public_fraction,
                                                   uint64_t seed, int64_t n);

// EngineHooks::validation_loss: a model's mean loss on `data`, which must
// outlive the hook. Empty (no measurement) when `data` is empty.
std::function<absl::StatusOr<double>(model::ModelImpl&)> ValidationLoss(
    const model::Dataset* data);

}  // namespace fedge::coordinator
