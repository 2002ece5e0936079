#include "coordinator/split_session.h"

#include "absl/strings/str_cat.h"

namespace fedge::coordinator {

SplitSession::SplitSession(const GlobalModel* global, pruning::PruningPlan plan,
                           int64_t rank, int64_t cut, NamedTensors sent,
                           model::TrainOptions train)
    : global_(*global),
      plan_(std::move(plan)),
      rank_(rank),
      cut_(cut),
      sent_(std::move(sent)),
      train_(std::move(train)) {}

absl::StatusOr<split::StepReply> SplitSession::Step(
    const split::StepRequest& request) {
  absl::MutexLock lock(&mu_);
  // A device that starts over (its link broke, it fetched the task again)
  // starts from its payload: so does the coordinator's half.
  if (request.step == 1 && request.applied_steps == 0) server_.reset();
  if (server_ == nullptr) {
    absl::StatusOr<model::Model> sub = global_.DeviceModel(plan_, rank_, sent_);
    if (!sub.ok()) return sub.status();
    absl::StatusOr<std::unique_ptr<split::SplitServer>> server =
        split::SplitServer::Create(*std::move(sub), cut_, train_);
    if (!server.ok()) return server.status();
    server_ = *std::move(server);
  }
  return server_->Step(request);
}

absl::Status SplitSession::SettleLocked(int64_t applied_steps) {
  if (server_ == nullptr) {
    return applied_steps == 0
               ? absl::OkStatus()
               : absl::FailedPreconditionError(absl::StrCat(
                     "the device reports ", applied_steps,
                     " split steps but ran none with the coordinator"));
  }
  return server_->Settle(applied_steps);
}

absl::Status SplitSession::Settle(int64_t applied_steps) {
  absl::MutexLock lock(&mu_);
  return SettleLocked(applied_steps);
}

absl::Status SplitSession::MergeTail(int64_t applied_steps,
                                     NamedTensors& update) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = SettleLocked(applied_steps); !s.ok()) return s;
  if (server_ == nullptr) return absl::OkStatus();
  for (const auto& item : server_->TailParameters()) {
    if (update.contains(item.key())) update[item.key()] = item.value();
  }
  return absl::OkStatus();
}

}  // namespace fedge::coordinator
