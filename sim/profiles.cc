#include "sim/profiles.h"

#include <algorithm>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
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

namespace {

// The items of a comma list with ITEM*N expanded.
absl::StatusOr<std::vector<std::string>> Expand(absl::string_view spec) {
  std::vector<std::string> items;
  for (absl::string_view item : absl::StrSplit(spec, ',')) {
    int64_t times = 1;
    if (const size_t star = item.rfind('*'); star != absl::string_view::npos) {
      if (!absl::SimpleAtoi(item.substr(star + 1), &times) || times < 1 ||
          times > 1000000) {
        return absl::InvalidArgumentError(
            absl::StrCat("\"", item, "\": want ITEM*N with N >= 1"));
      }
      item = item.substr(0, star);
    }
    for (int64_t i = 0; i < times; ++i) items.emplace_back(item);
  }
  return items;
}

absl::StatusOr<DeviceProfile> DeviceFromSpec(absl::string_view item) {
  for (const DeviceProfile& p : BuiltinDeviceProfiles()) {
    if (p.name == item) return p;
  }
  if (absl::StartsWith(item, "cpu:")) {
    const std::vector<absl::string_view> parts = absl::StrSplit(item, ':');
    DeviceProfile p{std::string(item), "a board of the given speed", 0, 8192};
    if (parts.size() <= 3 && absl::SimpleAtod(parts[1], &p.relative_speed) &&
        p.relative_speed > 0 && p.relative_speed <= 100 &&
        (parts.size() == 2 ||
         (absl::SimpleAtoi(parts[2], &p.memory_mb) && p.memory_mb >= 64))) {
      return p;
    }
    return absl::InvalidArgumentError(
        absl::StrCat("device profile \"", item,
                     "\": want cpu:SPEED[:MEMORY_MB], speed in (0, 100], "
                     "memory >= 64"));
  }
  std::vector<std::string> names;
  for (const DeviceProfile& p : BuiltinDeviceProfiles()) {
    names.push_back(p.name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device profile \"", item, "\" (mix, ",
                   absl::StrJoin(names, ", "), ", cpu:SPEED[:MEMORY_MB])"));
}

}  // namespace

absl::StatusOr<std::vector<DeviceProfile>> AssignDevices(absl::string_view spec,
                                                         int count) {
  std::vector<DeviceProfile> cycle;
  if (spec == "mix") {
    cycle = BuiltinDeviceProfiles();
  } else {
    absl::StatusOr<std::vector<std::string>> items = Expand(spec);
    if (!items.ok()) return items.status();
    for (const std::string& item : *items) {
      absl::StatusOr<DeviceProfile> p = DeviceFromSpec(item);
      if (!p.ok()) return p.status();
      cycle.push_back(*std::move(p));
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
    absl::StatusOr<std::vector<std::string>> items = Expand(spec);
    if (!items.ok()) return items.status();
    for (const std::string& link : *items) {
      if (absl::Status s = transport::ParseLinkProfile(link).status();
          !s.ok()) {
        return s;
      }
      cycle.push_back(link);
    }
  }
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) out.push_back(cycle[i % cycle.size()]);
  return out;
}

absl::StatusOr<SpeedSwap> ParseSpeedSwap(absl::string_view spec, int count) {
  SpeedSwap swap;
  if (spec.empty()) return swap;
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("--swap_speeds=\"", spec, "\": ", why,
                     " (want ROUND:A-B[,C-D...], devices 0..", count - 1, ")"));
  };
  const std::vector<absl::string_view> parts =
      absl::StrSplit(spec, absl::MaxSplits(':', 1));
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &swap.round) ||
      swap.round < 1) {
    return bad("no round >= 1 before ':'");
  }
  std::set<int64_t> seen;
  for (absl::string_view pair : absl::StrSplit(parts[1], ',')) {
    const std::vector<absl::string_view> ab = absl::StrSplit(pair, '-');
    int64_t a = -1, b = -1;
    if (ab.size() != 2 || !absl::SimpleAtoi(ab[0], &a) ||
        !absl::SimpleAtoi(ab[1], &b) || a < 0 || b < 0 || a >= count ||
        b >= count) {
      return bad(absl::StrCat("\"", pair, "\" is not a pair of devices"));
    }
    if (!seen.insert(a).second || !seen.insert(b).second) {
      return bad(absl::StrCat("a device appears twice in \"", pair, "\""));
    }
    swap.pairs.emplace_back(a, b);
  }
  return swap;
}

std::string ProfileInRound(const std::vector<DeviceProfile>& devices,
                           const SpeedSwap& swap, int64_t index,
                           int64_t round) {
  const std::string& name = devices[index].name;
  if (swap.round == 0 || round < swap.round) return name;
  for (const auto& [a, b] : swap.pairs) {
    if (a == index || b == index) {
      return absl::StrCat(name, " at ", devices[a == index ? b : a].name,
                          "'s speed");
    }
  }
  return name;
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
