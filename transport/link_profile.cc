#include "transport/link_profile.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace fedge::transport {

absl::Status LinkProfile::Validate() const {
  if (!(uplink_mbps > 0) || !(downlink_mbps > 0) ||
      !std::isfinite(uplink_mbps) || !std::isfinite(downlink_mbps)) {
    return absl::InvalidArgumentError(
        absl::StrCat("link ", name, ": bandwidths must be positive"));
  }
  if (rtt < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("link ", name, ": negative RTT"));
  }
  return absl::OkStatus();
}

const std::vector<LinkProfile>& BuiltinLinkProfiles() {
  // Uplinks from the 5G paper's ratios over a Pi 4's ~940 Mbit/s Ethernet
  // goodput (5G uplink 33.3x slower than Ethernet, 17.8x slower than WiFi);
  // downlinks and RTTs are typical testbed values, not measured there.
  static const auto* profiles = new std::vector<LinkProfile>{
      {"ethernet", 940, 940, absl::Microseconds(500)},
      {"wifi", 500, 500, absl::Milliseconds(4)},
      {"5g-sa", 28, 100, absl::Milliseconds(15)},
      {"lte", 10, 30, absl::Milliseconds(40)},
  };
  return *profiles;
}

absl::StatusOr<LinkProfile> ParseLinkProfile(absl::string_view spec) {
  std::vector<absl::string_view> parts =
      absl::StrSplit(spec, absl::MaxSplits(':', 1));
  LinkProfile profile;
  bool found = false;
  for (const LinkProfile& p : BuiltinLinkProfiles()) {
    if (p.name == parts[0]) {
      profile = p;
      found = true;
    }
  }
  if (!found) {
    std::vector<std::string> names;
    for (const LinkProfile& p : BuiltinLinkProfiles()) names.push_back(p.name);
    return absl::InvalidArgumentError(
        absl::StrCat("unknown link profile \"", parts[0], "\" (",
                     absl::StrJoin(names, ", "), ")"));
  }
  if (parts.size() == 2) {
    std::vector<absl::string_view> v = absl::StrSplit(parts[1], '/');
    double rtt_ms = 0;
    if (v.size() != 3 || !absl::SimpleAtod(v[0], &profile.uplink_mbps) ||
        !absl::SimpleAtod(v[1], &profile.downlink_mbps) ||
        !absl::SimpleAtod(v[2], &rtt_ms)) {
      return absl::InvalidArgumentError(
          absl::StrCat("link override \"", spec,
                       "\" must be name:UP_MBPS/DOWN_MBPS/RTT_MS"));
    }
    profile.rtt = absl::Microseconds(std::llround(rtt_ms * 1000));
  }
  if (absl::Status s = profile.Validate(); !s.ok()) return s;
  return profile;
}

absl::Duration IdealTransferTime(const LinkProfile& link, int64_t bytes,
                                 bool uplink) {
  const double rate =
      uplink ? link.uplink_bytes_per_s() : link.downlink_bytes_per_s();
  return absl::Seconds(static_cast<double>(bytes) / rate) + link.rtt;
}

}  // namespace fedge::transport
