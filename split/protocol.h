// The exchange between a device's half of a split model and the
// coordinator's, independent of how it travels (gRPC in production, a
// direct call in tests and benchmarks).
//
// One split step: the device runs its head on a batch and sends the hidden
// states at the cut with the targets; the server runs the tail and the
// loss, back-propagates, keeps its gradients pending and returns the
// gradient at the cut; the device back-propagates and applies its step.
// The server applies its pending step only when the device says it applied
// the matching one (`applied_steps` on the next request or on Settle), so a
// device that drops out mid-batch never leaves the two halves a step apart.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include <ATen/core/Tensor.h>

namespace fedge::split {

struct StepRequest {
  int64_t step = 0;           // 1-based; the server expects applied + 1.
  int64_t applied_steps = 0;  // Steps the device has applied so far.
  int64_t total_steps = 0;    // Length of the learning-rate schedule.
  at::Tensor activations;     // [B, T, hidden] float32, at the cut.
  at::Tensor targets;         // The task's targets for the batch.
};

struct StepReply {
  at::Tensor gradients;  // d loss / d activations, the activations' shape.
  double loss = 0;
};

// The device's view of the server half. Implementations encode and send;
// an error means the exchange failed and the step was not taken.
class SplitLink {
 public:
  virtual ~SplitLink() = default;
  virtual absl::StatusOr<StepReply> Step(const StepRequest& request) = 0;
  // The device is done: it applied `applied_steps` steps in all. The
  // server settles its pending step accordingly.
  virtual absl::Status Finish(int64_t applied_steps) = 0;
};

}  // namespace fedge::split
