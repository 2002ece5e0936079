// A device's side of secure aggregation (docs/privacy.md): the change it
// contributes, computed on the device, since the coordinator sees only the
// masked sum. The device encodes it on the ring (secagg::RingCodec) and
// masks it (secagg::Device) in the round's exchange.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

#include "model/model.h"
#include "pruning/plan.h"
#include "strategies/flat_layout.h"

namespace fedge::client {

// The device's change to the global model in `layout` (the coordinator's
// names and full shapes, coordinator::GlobalModel::UpdateLayout), clipped
// to L2 norm `clip_norm`: per adapted Linear "<path>", its trained
// adapter's product minus the product it was sent (lora::AdapterChange;
// a frozen residual in `sent` is not part of it), named "<path>.weight"
// and scattered from its sub-model to the full model with `plan`, zeros
// where the plan removed units. Exactly what the coordinator folds in the
// clear (GlobalModel::PrepareUpdate). `norm`, if given, gets the norm
// before clipping. InvalidArgument for an update, plan or config that
// does not fit, naming what.
absl::StatusOr<std::vector<float>> SecureChange(
    const std::string& model_config_json, const pruning::PruningPlan& plan,
    double alpha, const model::NamedTensors& update,
    const model::NamedTensors& sent, const strategies::FlatLayout& layout,
    double clip_norm, double* norm = nullptr);

}  // namespace fedge::client
