// How the coordinator measures what a pruning ratio costs the global model
// (EngineHooks::validation_loss) on its own data: the task's public split
// (task::TaskData::Public), which no device holds.
#pragma once

#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"

#include "model/dataset.h"
#include "model/model.h"

namespace fedge::coordinator {

// EngineHooks::validation_loss: a model's mean loss on `data`, which must
// outlive the hook. Empty (no measurement) when `data` is empty.
std::function<absl::StatusOr<double>(model::ModelImpl&)> ValidationLoss(
    const model::Dataset* data);

}  // namespace fedge::coordinator
