// The coordinator's half of one device's split round: the sub-model's
// blocks [cut, n), final norm and head, their trainable parameters (LoRA
// adapters) and an optimizer of their own.
//
// Not thread-safe: the coordinator serialises calls per session.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "model/model.h"
#include "model/trainer.h"
#include "split/protocol.h"

namespace fedge::split {

class SplitServer {
 public:
  // `model` is the device's sub-model with its adapters attached; only
  // parameters after the cut (ModelImpl::InHead false) that require grad
  // are trained here, with `options`' learning rate, schedule, clipping
  // (`after_backward` runs after each tail backward). InvalidArgument for a bad
  // cut or options; FailedPrecondition if the tail has nothing to train.
  static absl::StatusOr<std::unique_ptr<SplitServer>> Create(
      model::Model model, int64_t cut, const model::TrainOptions& options);
  ~SplitServer();

  // Settles the pending step with request.applied_steps, then runs the tail
  // forward and backward on the batch and keeps its gradients pending.
  // InvalidArgument for activations or targets of the wrong shape, dtype or
  // range, non-finite activations, or a step other than applied + 1;
  // FailedPrecondition if the loss is not finite or the session is
  // finished (the step is then not pending).
  absl::StatusOr<StepReply> Step(const StepRequest& request);

  // The device applied `applied_steps` steps: applies the pending step if
  // that includes it, drops it if not. FailedPrecondition if the count is
  // neither the applied count nor the pending step.
  absl::Status Settle(int64_t applied_steps);

  int64_t applied_steps() const { return applied_; }
  bool has_pending() const { return pending_ > 0; }
  // Copies of the trained tail parameters, by name.
  model::NamedTensors TailParameters() const;

 private:
  SplitServer(model::Model model, int64_t cut,
              const model::TrainOptions& options);
  absl::Status CheckRequest(const StepRequest& request) const;

  model::Model model_;
  int64_t cut_;
  model::TrainOptions options_;
  std::vector<std::pair<std::string, at::Tensor>> tail_;
  std::unique_ptr<model::Optimizer> optimizer_;  // Made at the first step.
  int64_t applied_ = 0;
  int64_t pending_ = 0;  // Step whose gradients sit in .grad; 0: none.
};

}  // namespace fedge::split
