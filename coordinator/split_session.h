// The coordinator's half of one device's split round (split::SplitServer):
// the tail of the device's sub-model, built at the first step from the
// payload the device got, then stepped, settled, and read back into the
// device's update. Heavy (a forward and backward per step), so it runs
// outside the engine's lock.
//
// Thread-safe: one device's calls are serialised by the session's own lock.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

#include "coordinator/global_model.h"
#include "model/trainer.h"
#include "pruning/plan.h"
#include "split/protocol.h"
#include "split/server.h"

namespace fedge::coordinator {

class SplitSession {
 public:
  // The device's task: its `plan`, `rank`, the `cut` (>= 1) and the
  // payload it was `sent`. `global` must outlive the session.
  SplitSession(const GlobalModel* global, pruning::PruningPlan plan,
               int64_t rank, int64_t cut, NamedTensors sent,
               model::TrainOptions train);

  // One step of the tail. A first step (step 1, none applied) starts the
  // tail afresh from the payload: the device restarted its round. The
  // errors of building the tail (GlobalModel::DeviceModel,
  // SplitServer::Create) and of SplitServer::Step.
  absl::StatusOr<split::StepReply> Step(const split::StepRequest& request);

  // Settles the pending step at the device's `applied_steps`.
  // FailedPrecondition for steps reported when none ran; the server's
  // errors.
  absl::Status Settle(int64_t applied_steps);

  // Settle, then replaces in `update` every tensor the tail trained. No
  // step ran and none reported: `update` is left as it is.
  absl::Status MergeTail(int64_t applied_steps, NamedTensors& update);

 private:
  absl::Status SettleLocked(int64_t applied_steps)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const GlobalModel& global_;
  const pruning::PruningPlan plan_;
  const int64_t rank_;
  const int64_t cut_;
  const NamedTensors sent_;
  const model::TrainOptions train_;
  absl::Mutex mu_;
  std::unique_ptr<split::SplitServer> server_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedge::coordinator
