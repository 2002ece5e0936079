// A user-space TCP proxy that emulates a link between a client and the
// coordinator without root: a token bucket per direction (bandwidth) plus a
// fixed one-way delay (half the RTT), so transfer times through it are real
// times of the bytes sent. Put it between a client and the coordinator by
// pointing the client at the proxy's port.
//
// Each direction has a reader that timestamps what it reads and a writer
// that releases it after the delay, paced by the bucket, so the delay is
// paid once per burst, not once per read. CutAll() drops every connection
// (a link failure for fault tests).
//
// Thread-safe. Threads: one acceptor, two per direction per connection.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

#include "transport/link_profile.h"

namespace fedge::transport {

struct ShapingOptions {
  double uplink_bytes_per_s = 0;    // Client -> target; 0 = unlimited.
  double downlink_bytes_per_s = 0;  // Target -> client; 0 = unlimited.
  absl::Duration one_way_delay;     // Added to every byte, each direction.
  int64_t burst_bytes = 16 * 1024;  // Token bucket depth.

  // Rates and half the RTT of `link`; a bucket of 2 ms of its faster rate.
  static ShapingOptions FromProfile(const LinkProfile& link);
};

// What an emulated link achieved against what its profile claims.
struct LinkCheck {
  std::string link;                           // The profile's name.
  int64_t bytes_up = 0, bytes_down = 0;       // Sent each way.
  double uplink_mbps = 0, downlink_mbps = 0;  // Claimed.
  // Rates achieved, from the measured times less the profile's RTT.
  double achieved_uplink_mbps = 0, achieved_downlink_mbps = 0;
  // |measured - ideal| / ideal of the worse direction, the ideal being
  // IdealTransferTime (bytes / rate + RTT).
  double max_error = 0;
};

// Sends a payload through a ShapingProxy with `link`'s profile over
// loopback, up and then down, raw TCP (the emulator alone, no gRPC), each
// way sized to take about `seconds` at the claimed rate (64 KiB to 64 MB).
// InvalidArgument for a profile without both rates; Unavailable if
// loopback sockets fail. Runs for about 2 x `seconds`.
absl::StatusOr<LinkCheck> MeasureLink(const LinkProfile& link,
                                      double seconds = 0.5);

class ShapingProxy {
 public:
  // Listens on 127.0.0.1:listen_port (0: an ephemeral port) and forwards
  // every accepted connection to target_host:target_port. Unavailable if it
  // cannot listen; InvalidArgument for negative rates or delay.
  static absl::StatusOr<std::unique_ptr<ShapingProxy>> Start(
      const std::string& target_host, int target_port,
      const ShapingOptions& options, int listen_port = 0);
  ~ShapingProxy();  // Stops accepting, closes connections, joins threads.
  ShapingProxy(const ShapingProxy&) = delete;
  ShapingProxy& operator=(const ShapingProxy&) = delete;

  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  // Closes every open connection at once; new connections are accepted.
  void CutAll() ABSL_LOCKS_EXCLUDED(mu_);

  int64_t bytes_up() const { return bytes_up_.load(); }
  int64_t bytes_down() const { return bytes_down_.load(); }

 private:
  struct Connection;
  ShapingProxy(std::string host, int target_port, ShapingOptions options,
               int listen_fd, int port);
  void AcceptLoop();

  const std::string target_host_;
  const int target_port_;
  const ShapingOptions options_;
  const int listen_fd_;
  const int port_;
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> bytes_up_{0};
  std::atomic<int64_t> bytes_down_{0};
  absl::Mutex mu_;
  std::vector<std::unique_ptr<Connection>> connections_ ABSL_GUARDED_BY(mu_);
  std::thread acceptor_;
};

}  // namespace fedge::transport
