// Device and link profiles of a simulated federation, and how a federation
// of N devices is drawn from them.
//
// A device profile is a board's compute speed relative to a laptop core
// and its memory. The simulator emulates the speed for real by capping
// each client process's CPU (sim/cpu_limit.h) and the memory through the
// client's --memory_budget_mb. Speeds are assumptions, documented with
// their reasoning in docs/simulation.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fedge::sim {

struct DeviceProfile {
  std::string name;       // pi4, pi5, jetson, laptop.
  std::string board;      // What it stands for.
  double relative_speed;  // Single-core training speed, laptop = 1.
  int64_t memory_mb;      // RAM of the board.
};

// pi4, pi5, jetson, laptop.
const std::vector<DeviceProfile>& BuiltinDeviceProfiles();

// The help of the --devices and --links flags of the simulator's programs.
inline constexpr char kDevicesHelp[] =
    "Device profiles: mix (pi4, pi5, jetson, laptop in turn) or a comma list "
    "of them used in turn.";
inline constexpr char kLinksHelp[] =
    "Link profiles: mix (ethernet, wifi, 5g-sa in turn) or a comma list of "
    "ethernet, wifi, 5g-sa, lte or NAME:UP/DOWN/RTT_MS.";

// One profile per device for `count` devices. `spec` is "mix" (the
// built-ins in turn: pi4, pi5, jetson, laptop, pi4, ...) or a comma list
// of names used in turn. InvalidArgument naming an unknown profile.
absl::StatusOr<std::vector<DeviceProfile>> AssignDevices(absl::string_view spec,
                                                         int count);

// One link profile name per device: "mix" (ethernet, wifi, 5g-sa in turn,
// so two of each device profile see different links) or a comma list of
// transport link specs used in turn. InvalidArgument for an unknown link.
absl::StatusOr<std::vector<std::string>> AssignLinks(absl::string_view spec,
                                                     int count);

// CPU share (cores) for each device: its relative speed times one scale
// chosen so the shares sum to at most `usable_cores`, keeping the ratios
// between devices exact on a host too small for them all at full speed.
std::vector<double> CpuShares(const std::vector<DeviceProfile>& devices,
                              double usable_cores);

}  // namespace fedge::sim
