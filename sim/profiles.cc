#include "sim/profiles.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

#include "transport/link_profile.h"

namespace fedge::sim {

const std::vector<DeviceProfile>& BuiltinDeviceProfiles() {
  // Laptop = one x86-64 laptop core. Pi 5 = 2.5x Pi 4 (Raspberry Pi Ltd
  // states 2-3x the CPU performance). Jetson Orin Nano's Cortex-A78AE at
  // 1.5 GHz ~ 0.85x a Pi 5's A76 at 2.4 GHz (clock ratio, similar cores).
  // A laptop core ~ 2.5x a Pi 5 core. See docs/simulation.md.
  static const auto* profiles = new std::vector<DeviceProfile>{
      {"pi4", "Raspberry Pi 4 Model B, 4x Cortex-A72 1.8 GHz", 0.16, 4096},
      {"pi5", "Raspberry Pi 5, 4x Cortex-A76 2.4 GHz", 0.40, 8192},
      {"jetson", "Jetson Orin Nano CPU, 6x Cortex-A78AE 1.5 GHz", 0.34, 8192},
      {"laptop", "x86-64 laptop core", 1.0, 16384},
  };
  return *profiles;
}

absl::StatusOr<std::vector<DeviceProfile>> AssignDevices(absl::string_view spec,
                                                         int count) {
  std::vector<DeviceProfile> cycle;
  if (spec == "mix") {
    cycle = BuiltinDeviceProfiles();
  } else {
    for (absl::string_view name : absl::StrSplit(spec, ',')) {
      auto it = std::find_if(
          BuiltinDeviceProfiles().begin(), BuiltinDeviceProfiles().end(),
          [&](const DeviceProfile& p) { return p.name == name; });
      if (it == BuiltinDeviceProfiles().end()) {
        std::vector<std::string> names;
        for (const DeviceProfile& p : BuiltinDeviceProfiles()) {
          names.push_back(p.name);
        }
        return absl::InvalidArgumentError(
            absl::StrCat("unknown device profile \"", name, "\" (mix, ",
                         absl::StrJoin(names, ", "), ")"));
      }
      cycle.push_back(*it);
    }
  }
  std::vector<DeviceProfile> out;
  for (int i = 0; i < count; ++i) out.push_back(cycle[i % cycle.size()]);
  return out;
}

absl::StatusOr<std::vector<std::string>> AssignLinks(absl::string_view spec,
                                                     int count) {
  std::vector<std::string> cycle;
  if (spec == "mix") {
    cycle = {"ethernet", "wifi", "5g-sa"};
  } else {
    for (absl::string_view link : absl::StrSplit(spec, ',')) {
      if (absl::Status s = transport::ParseLinkProfile(link).status();
          !s.ok()) {
        return s;
      }
      cycle.emplace_back(link);
    }
  }
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) out.push_back(cycle[i % cycle.size()]);
  return out;
}

std::vector<double> CpuShares(const std::vector<DeviceProfile>& devices,
                              double usable_cores) {
  double total = 0;
  for (const DeviceProfile& d : devices) total += d.relative_speed;
  const double scale = total > usable_cores ? usable_cores / total : 1.0;
  std::vector<double> shares;
  for (const DeviceProfile& d : devices) {
    shares.push_back(d.relative_speed * scale);
  }
  return shares;
}

}  // namespace fedge::sim
