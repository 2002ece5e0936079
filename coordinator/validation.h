// How the coordinator measures what a pruning ratio costs the global model
// (EngineHooks::validation_loss) on its own data: the task's public split
// (task::TaskData::Public), which no device holds.
#pragma once

#include "coordinator/pruning_costs.h"
#include "model/dataset.h"

namespace fedge::coordinator {

// EngineHooks::validation_loss: a model's mean loss per scored target on
// `data`, which must outlive the hook, evaluated `batch_size` examples at
// a time with `stop` asked before each batch. Empty (no measurement) when
// `data` is empty.
ValidationLossFn ValidationLoss(const model::Dataset* data,
                                int64_t batch_size = 64);

}  // namespace fedge::coordinator
