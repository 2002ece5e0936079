// The server's step on the round's averaged change (Reddi et al. 2021,
// "Adaptive Federated Optimization"; papers.md section 9): FedAvg installs
// the devices' weighted mean as the new global value; a server optimizer
// treats the mean's change from the current value, delta = mean - current,
// as a pseudo-gradient and steps along it.
// - kNone: FedAvg, new = current + delta.
// - kMomentum: FedAvgM (Hsu et al. 2019), m = momentum * m + delta;
//   new = current + learning_rate * m.
// - kAdam: FedAdam, m = b1 m + (1 - b1) delta, v = b2 v + (1 - b2) delta^2;
//   new = current + learning_rate * m / (sqrt(v) + epsilon), no bias
//   correction (as in the paper).
//
// Why: FedAvg's devices all start from the same point and train a few local
// steps each, so their mean advances about as far as one device's
// trajectory; momentum lets consistent directions add up over rounds.
//
// Functional: ServerStep takes the optimizer's state and returns the next
// one, so the caller swaps the model and the state together (a checkpoint
// never holds one without the other). The state is named tensors:
// "server_m.<name>" and, for kAdam, "server_v.<name>".
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "model/model.h"

namespace fedge::strategies {

using model::NamedTensors;

enum class ServerOptimizerKind { kNone, kMomentum, kAdam };

// "none", "momentum", "adam". InvalidArgument otherwise.
absl::StatusOr<ServerOptimizerKind> ParseServerOptimizerKind(
    absl::string_view name);

struct ServerOptimizerOptions {
  ServerOptimizerKind kind = ServerOptimizerKind::kNone;
  double learning_rate = 1.0;  // > 0.
  double momentum = 0.5;       // kMomentum's factor, in [0, 1).
  double beta1 = 0.9;          // kAdam, in [0, 1).
  double beta2 = 0.99;         // kAdam, in [0, 1).
  double epsilon = 1e-3;       // kAdam's tau, > 0.

  // InvalidArgument naming the first bad field.
  absl::Status Validate() const;
};

// What the step is, for a binary's start-up line: "FedAvg", "FedAvgM
// (momentum 0.5, server lr 1)" or "FedAdam (...)".
std::string Describe(const ServerOptimizerOptions& options);

// The prefix of the state tensors of `name`'s first and second moments.
inline constexpr absl::string_view kServerMomentPrefix = "server_m.";
inline constexpr absl::string_view kServerVariancePrefix = "server_v.";

// Whether `name` is one of a server optimizer's state tensors.
bool IsServerOptimizerState(absl::string_view name);

struct ServerStepResult {
  NamedTensors next;   // Same names, shapes and dtypes as `current`.
  NamedTensors state;  // The optimizer's next state (empty for kNone).
};

// One server step. `averaged` must have `current`'s names and shapes;
// `state` is empty (the first step: moments start at zero) or what the
// previous step returned. Tensors are never changed in place.
// InvalidArgument naming the tensor for a mismatch or a non-finite result.
absl::StatusOr<ServerStepResult> ServerStep(
    const ServerOptimizerOptions& options, const NamedTensors& current,
    const NamedTensors& averaged, const NamedTensors& state);

// Checks a restored `state` against the model tensors `current` it belongs
// to: every moment a step would read is present with its tensor's shape and
// finite, and nothing else is. Missing moments are allowed only all at once
// (a checkpoint written without this optimizer: they start at zero).
absl::Status ValidateServerState(const ServerOptimizerOptions& options,
                                 const NamedTensors& current,
                                 const NamedTensors& state);

}  // namespace fedge::strategies
