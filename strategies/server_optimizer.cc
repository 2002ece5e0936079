#include "strategies/server_optimizer.h"

#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include <torch/torch.h>

namespace fedge::strategies {

absl::StatusOr<ServerOptimizerKind> ParseServerOptimizerKind(
    absl::string_view name) {
  if (name == "none") return ServerOptimizerKind::kNone;
  if (name == "momentum") return ServerOptimizerKind::kMomentum;
  if (name == "adam") return ServerOptimizerKind::kAdam;
  return absl::InvalidArgumentError(absl::StrCat(
      "server optimizer '", name, "' is not one of none, momentum, adam"));
}

absl::Status ServerOptimizerOptions::Validate() const {
  if (!(std::isfinite(learning_rate) && learning_rate > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "server optimizer learning rate must be > 0, got ", learning_rate));
  }
  if (!(momentum >= 0 && momentum < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "server optimizer momentum must be in [0, 1), got ", momentum));
  }
  if (!(beta1 >= 0 && beta1 < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("server optimizer beta1 must be in [0, 1), got ", beta1));
  }
  if (!(beta2 >= 0 && beta2 < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("server optimizer beta2 must be in [0, 1), got ", beta2));
  }
  if (!(std::isfinite(epsilon) && epsilon > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("server optimizer epsilon must be > 0, got ", epsilon));
  }
  return absl::OkStatus();
}

std::string Describe(const ServerOptimizerOptions& options) {
  switch (options.kind) {
    case ServerOptimizerKind::kNone:
      return "FedAvg";
    case ServerOptimizerKind::kMomentum:
      return absl::StrCat("FedAvgM (momentum ", options.momentum,
                          ", server lr ", options.learning_rate, ")");
    case ServerOptimizerKind::kAdam:
      return absl::StrCat("FedAdam (server lr ", options.learning_rate,
                          ", beta1 ", options.beta1, ", beta2 ", options.beta2,
                          ", tau ", options.epsilon, ")");
  }
  return "unknown";
}

bool IsServerOptimizerState(absl::string_view name) {
  return absl::StartsWith(name, kServerMomentPrefix) ||
         absl::StartsWith(name, kServerVariancePrefix);
}

namespace {

// The moment prefixes `kind` keeps.
std::vector<absl::string_view> Prefixes(ServerOptimizerKind kind) {
  switch (kind) {
    case ServerOptimizerKind::kNone:
      return {};
    case ServerOptimizerKind::kMomentum:
      return {kServerMomentPrefix};
    case ServerOptimizerKind::kAdam:
      return {kServerMomentPrefix, kServerVariancePrefix};
  }
  return {};
}

}  // namespace

absl::Status ValidateServerState(const ServerOptimizerOptions& options,
                                 const NamedTensors& current,
                                 const NamedTensors& state) {
  if (state.is_empty()) return absl::OkStatus();
  const std::vector<absl::string_view> prefixes = Prefixes(options.kind);
  size_t expected = 0;
  for (absl::string_view prefix : prefixes) {
    for (const auto& item : current) {
      ++expected;
      const std::string name = absl::StrCat(prefix, item.key());
      const at::Tensor* t = state.find(name);
      if (t == nullptr || t->sizes() != item.value().sizes() ||
          !torch::isfinite(*t).all().item<bool>()) {
        return absl::InvalidArgumentError(
            absl::StrCat("server optimizer state '", name,
                         "' is missing, mis-shaped or not finite"));
      }
    }
  }
  if (state.size() != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("server optimizer state has ", state.size(), " tensors; ",
                     expected, " expected for this optimizer and model"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ServerStepResult> ServerStep(
    const ServerOptimizerOptions& options, const NamedTensors& current,
    const NamedTensors& averaged, const NamedTensors& state) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  if (absl::Status s = ValidateServerState(options, current, state); !s.ok()) {
    return s;
  }
  if (averaged.size() != current.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("server step: ", averaged.size(), " averaged tensors for ",
                     current.size(), " in the model"));
  }
  torch::NoGradGuard no_grad;
  ServerStepResult result;
  for (const auto& item : current) {
    const std::string& name = item.key();
    const at::Tensor* mean = averaged.find(name);
    if (mean == nullptr || mean->sizes() != item.value().sizes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("server step: averaged tensor '", name,
                       "' is missing or mis-shaped"));
    }
    if (options.kind == ServerOptimizerKind::kNone) {
      result.next.insert(name, *mean);
      continue;
    }
    const at::Tensor delta =
        mean->to(torch::kFloat32) - item.value().to(torch::kFloat32);
    const std::string m_name = absl::StrCat(kServerMomentPrefix, name);
    const at::Tensor* m_old = state.find(m_name);
    at::Tensor step;
    if (options.kind == ServerOptimizerKind::kMomentum) {
      at::Tensor m =
          m_old == nullptr ? delta : options.momentum * *m_old + delta;
      step = options.learning_rate * m;
      result.state.insert(m_name, std::move(m));
    } else {
      const std::string v_name = absl::StrCat(kServerVariancePrefix, name);
      const at::Tensor* v_old = state.find(v_name);
      at::Tensor m = (1 - options.beta1) * delta;
      at::Tensor v = (1 - options.beta2) * delta * delta;
      if (m_old != nullptr) m += options.beta1 * *m_old;
      if (v_old != nullptr) v += options.beta2 * *v_old;
      step = options.learning_rate * m / (v.sqrt() + options.epsilon);
      result.state.insert(m_name, std::move(m));
      result.state.insert(v_name, std::move(v));
    }
    at::Tensor next = (item.value().to(torch::kFloat32) + step)
                          .to(item.value().scalar_type());
    if (!torch::isfinite(next).all().item<bool>()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "server step: '", name, "' is not finite after the step"));
    }
    result.next.insert(name, std::move(next));
  }
  return result;
}

}  // namespace fedge::strategies
