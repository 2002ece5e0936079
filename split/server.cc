#include "split/server.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include <torch/types.h>

namespace fedge::split {

SplitServer::SplitServer(model::Model model, int64_t cut,
                         const model::TrainOptions& options)
    : model_(std::move(model)), cut_(cut), options_(options) {}

SplitServer::~SplitServer() = default;

absl::StatusOr<std::unique_ptr<SplitServer>> SplitServer::Create(
    model::Model model, int64_t cut, const model::TrainOptions& options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  if (absl::Status s = model->ValidateCut(cut); !s.ok()) return s;
  std::unique_ptr<SplitServer> server(
      new SplitServer(std::move(model), cut, options));
  for (const auto& item : server->model_->named_parameters(/*recurse=*/true)) {
    if (item.value().requires_grad() &&
        !server->model_->InHead(item.key(), cut)) {
      server->tail_.emplace_back(item.key(), item.value());
    }
  }
  if (server->tail_.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "split at block ", cut, ": the tail has no trainable parameters"));
  }
  server->model_->train(true);
  return server;
}

absl::Status SplitServer::CheckRequest(const StepRequest& r) const {
  if (r.step != applied_ + 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("split step ", r.step, " after ", applied_,
                     " applied steps; expected step ", applied_ + 1));
  }
  if (r.total_steps < r.step) {
    return absl::InvalidArgumentError(absl::StrCat(
        "split step ", r.step, " beyond total_steps ", r.total_steps));
  }
  if (absl::Status s = model_->ValidateHidden(r.activations); !s.ok()) {
    return s;
  }
  const at::Tensor& t = r.targets;
  const bool lm = model_->task() == model::Task::kLanguageModel;
  const std::vector<int64_t> expected =
      lm ? std::vector<int64_t>{r.activations.size(0), r.activations.size(1)}
         : std::vector<int64_t>{r.activations.size(0)};
  if (!t.defined() || t.scalar_type() != torch::kLong ||
      t.sizes().vec() != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("split targets must be int64 ",
                     c10::str(at::IntArrayRef(expected)), ", got ",
                     t.defined() ? absl::StrCat(c10::toString(t.scalar_type()),
                                                " ", c10::str(t.sizes()))
                                 : "none"));
  }
  if (t.min().item<int64_t>() < 0 ||
      t.max().item<int64_t>() >= model_->num_outputs()) {
    return absl::InvalidArgumentError(
        absl::StrCat("split targets outside [0, ", model_->num_outputs(), ")"));
  }
  return absl::OkStatus();
}

absl::Status SplitServer::Settle(int64_t applied_steps) {
  if (applied_steps == applied_) {
    if (pending_ > 0) {
      for (auto& [name, p] : tail_) p.mutable_grad().reset();
      pending_ = 0;
    }
    return absl::OkStatus();
  }
  if (pending_ > 0 && applied_steps == pending_) {
    optimizer_->Step(applied_);
    applied_ = pending_;
    pending_ = 0;
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "device reports ", applied_steps, " applied split steps; the server has ",
      applied_,
      pending_ > 0 ? absl::StrCat(" and step ", pending_, " pending")
                   : std::string()));
}

absl::StatusOr<StepReply> SplitServer::Step(const StepRequest& request) {
  if (absl::Status s = Settle(request.applied_steps); !s.ok()) return s;
  if (absl::Status s = CheckRequest(request); !s.ok()) return s;
  if (optimizer_ == nullptr) {
    std::vector<at::Tensor> params;
    for (const auto& [name, p] : tail_) params.push_back(p);
    absl::StatusOr<std::unique_ptr<model::Optimizer>> optimizer =
        model::Optimizer::Create(params, options_, request.total_steps);
    if (!optimizer.ok()) return optimizer.status();
    optimizer_ = *std::move(optimizer);
  }
  optimizer_->DropGrads();
  const at::Tensor hidden =
      request.activations.detach().clone().set_requires_grad(true);
  const at::Tensor loss = model::TaskLoss(
      model_->task(), model_->ForwardTail(hidden, cut_), request.targets);
  const double value = loss.item<double>();
  if (!std::isfinite(value)) {
    return absl::FailedPreconditionError(
        absl::StrCat("split step ", request.step, ": loss became ", value,
                     "; the step was not taken"));
  }
  loss.backward();
  if (options_.after_backward) options_.after_backward();
  pending_ = request.step;
  StepReply reply;
  reply.gradients = hidden.grad();
  reply.loss = value;
  return reply;
}

model::NamedTensors SplitServer::TailParameters() const {
  model::NamedTensors out;
  for (const auto& [name, p] : tail_) out.insert(name, p.detach().clone());
  return out;
}

}  // namespace fedge::split
