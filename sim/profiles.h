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
#include <utility>
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
    "used in turn of pi4, pi5, jetson, laptop or cpu:SPEED[:MEMORY_MB] (a "
    "board SPEED times a laptop core, 8192 MB unless given); ITEM*N repeats "
    "an item N times, e.g. cpu:0.1*2,cpu:0.5*6,laptop*8.";
inline constexpr char kLinksHelp[] =
    "Link profiles: mix (ethernet, wifi, 5g-sa in turn) or a comma list "
    "used in turn of ethernet, wifi, 5g-sa, lte or NAME:UP/DOWN/RTT_MS; "
    "ITEM*N repeats an item N times.";

// One profile per device for `count` devices. `spec` is "mix" (the
// built-ins in turn: pi4, pi5, jetson, laptop, pi4, ...) or a comma list
// used in turn of built-in names and cpu:SPEED[:MEMORY_MB] (speed in
// (0, 100], memory >= 64), each item optionally repeated with *N
// (kDevicesHelp). InvalidArgument naming an unknown or malformed item.
absl::StatusOr<std::vector<DeviceProfile>> AssignDevices(absl::string_view spec,
                                                         int count);

// One link profile name per device: "mix" (ethernet, wifi, 5g-sa in turn,
// so two of each device profile see different links) or a comma list of
// transport link specs used in turn, each optionally repeated with *N.
// InvalidArgument for an unknown link.
absl::StatusOr<std::vector<std::string>> AssignLinks(absl::string_view spec,
                                                     int count);

// Devices that trade compute speeds at a round, to test how strategies
// re-adapt (--swap_speeds=ROUND:A-B,C-D: from round ROUND on, device A has
// B's speed and B has A's).
struct SpeedSwap {
  int64_t round = 0;  // 0: none.
  std::vector<std::pair<int64_t, int64_t>> pairs;
};
inline constexpr char kSwapSpeedsHelp[] =
    "Virtual clock only. ROUND:A-B[,C-D...]: from round ROUND on, device A "
    "computes at B's speed and B at A's (devices numbered from 0), to test "
    "how a strategy re-adapts. Empty: none.";

// "" is no swap. InvalidArgument unless ROUND >= 1 and every index is a
// device in [0, count) that appears once.
absl::StatusOr<SpeedSwap> ParseSpeedSwap(absl::string_view spec, int count);

// How device `index` computes in `round`, for records and progress lines:
// its profile's name, or "NAME at PARTNER's speed" once `swap` has traded
// its speed. `index` must be a device of `devices`.
std::string ProfileInRound(const std::vector<DeviceProfile>& devices,
                           const SpeedSwap& swap, int64_t index, int64_t round);

// CPU share (cores) for each device: its relative speed times one scale
// chosen so the shares sum to at most `usable_cores`, keeping the ratios
// between devices exact on a host too small for them all at full speed.
std::vector<double> CpuShares(const std::vector<DeviceProfile>& devices,
                              double usable_cores);

}  // namespace fedge::sim
