// The round engine's command-line flags (--rounds, --bandit, --lr, ...),
// defined once for every program that runs an engine: fedge-coordinator and
// the simulator's virtual-clock driver, fedge-vclock. Each flag's help text
// is its documentation (--help).
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"

#include "coordinator/engine.h"
#include "task/spec.h"

namespace fedge::coordinator {

// The options the flags describe for a task of `objective` (what the
// "auto" defaults resolve to depends on it). InvalidArgument naming the flag
// for a value that does not parse or does not validate.
absl::StatusOr<EngineOptions> EngineOptionsFromFlags(task::Objective objective);

// --device_arms: "ID=RATIO:RANK,..." (empty: none). InvalidArgument naming
// a malformed item or a device named twice; the arms themselves are checked
// by EngineOptions::Validate.
absl::StatusOr<std::map<std::string, strategies::Arm>> ParseDeviceArms(
    absl::string_view spec);

// A line saying what differential privacy a run has (central: noise
// multiplier, clip, sampling, epsilon after all its rounds; local: the
// devices' clip and noise, and what a device joining every round spends),
// for binaries to print as they start; empty when both are off.
std::string PrivacySummary(const EngineOptions& options);

}  // namespace fedge::coordinator
