// The round engine's command-line flags (--rounds, --bandit, --lr, ...),
// defined once for every program that runs an engine: fedge-coordinator and
// the simulator's virtual-clock driver, fedge-vclock. Each flag's help text
// is its documentation (--help).
#pragma once

#include <string>

#include "absl/status/statusor.h"

#include "coordinator/engine.h"

namespace fedge::coordinator {

// The options the flags describe. InvalidArgument naming the flag for a
// value that does not parse or does not validate.
absl::StatusOr<EngineOptions> EngineOptionsFromFlags();

// A line saying what differential privacy a run has (central: noise
// multiplier, clip, sampling, epsilon after all its rounds; local: the
// devices' clip and noise, and what a device joining every round spends),
// for binaries to print as they start; empty when both are off.
std::string PrivacySummary(const EngineOptions& options);

}  // namespace fedge::coordinator
