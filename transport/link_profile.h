// Named link profiles for emulation: uplink and downlink bandwidth and
// round-trip time. Values are assumptions derived from the ratios measured
// in "Federated Learning over 5G, WiFi, and Ethernet" (arXiv 2504.04678);
// see ../shared/papers.md section 10 and docs/links.md.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fedge::transport {

struct LinkProfile {
  std::string name;
  double uplink_mbps = 0;    // Client -> coordinator, Mbit/s (10^6 bits).
  double downlink_mbps = 0;  // Coordinator -> client.
  absl::Duration rtt;

  double uplink_bytes_per_s() const { return uplink_mbps * 1e6 / 8; }
  double downlink_bytes_per_s() const { return downlink_mbps * 1e6 / 8; }
  absl::Status Validate() const;
};

// ethernet, wifi, 5g-sa, lte.
const std::vector<LinkProfile>& BuiltinLinkProfiles();

// A built-in profile by name, or "name:UP/DOWN/RTT_MS" to override one
// (e.g. "wifi:300/300/6"). InvalidArgument naming the known profiles.
absl::StatusOr<LinkProfile> ParseLinkProfile(absl::string_view spec);

// Ideal time for `bytes` one way: bytes / bandwidth + one RTT.
absl::Duration IdealTransferTime(const LinkProfile& link, int64_t bytes,
                                 bool uplink);

}  // namespace fedge::transport
