// fedge-link: the user-space link emulator as a tool. It listens on a local
// port and forwards every connection to a target, shaping each direction
// to a link profile's bandwidth and delay, so any client (fedge-client,
// iperf3, a browser) can be run over an emulated Ethernet, WiFi, LTE or 5G
// link without root. Runs until SIGINT or SIGTERM.
//
//   fedge-link --target=127.0.0.1:7070 --link=5g-sa --listen_port=7071
//   fedge-client --coordinator=127.0.0.1:7071 ...
#include <csignal>
#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

#include "cli/cli.h"
#include "transport/link_profile.h"
#include "transport/shaping_proxy.h"

ABSL_FLAG(std::string, target, "",
          "host:port to forward to (the coordinator); required.");
ABSL_FLAG(std::string, link, "ethernet",
          "Link profile: ethernet, wifi, 5g-sa, lte, or NAME:UP/DOWN/RTT_MS "
          "(Mbit/s, Mbit/s, ms) to override one, e.g. wifi:300/300/6. "
          "Uplink is listener -> target.");
ABSL_FLAG(int, listen_port, 0,
          "Port to listen on at 127.0.0.1 (0: any free port; printed).");
ABSL_FLAG(bool, no_delay, false,
          "Shape bandwidth only, without the profile's latency (to compare "
          "with the kernel's tbf, which has no delay).");

namespace {

volatile std::sig_atomic_t g_stop = 0;
extern "C" void OnSignal(int) { g_stop = 1; }

using fedge::cli::Fail;

}  // namespace

int main(int argc, char** argv) {
  if (absl::Status s = fedge::cli::ParseFlags(
          argc, argv,
          "Emulates a network link in user space between a client and a "
          "server.\nUsage: fedge-link --target=HOST:PORT [--link=PROFILE] "
          "[--listen_port=N]");
      !s.ok()) {
    return Fail(s.message());
  }
  const std::string target = absl::GetFlag(FLAGS_target);
  const std::vector<std::string> parts = absl::StrSplit(target, ':');
  int target_port = 0;
  if (parts.size() != 2 || parts[0].empty() ||
      !absl::SimpleAtoi(parts[1], &target_port) || target_port < 1 ||
      target_port > 65535) {
    return Fail(absl::StrCat("--target: '", target, "' is not HOST:PORT"));
  }
  const int listen_port = absl::GetFlag(FLAGS_listen_port);
  if (listen_port < 0 || listen_port > 65535) {
    return Fail("--listen_port must be in [0, 65535]");
  }
  absl::StatusOr<fedge::transport::LinkProfile> link =
      fedge::transport::ParseLinkProfile(absl::GetFlag(FLAGS_link));
  if (!link.ok()) return Fail(std::string(link.status().message()));
  fedge::transport::ShapingOptions options =
      fedge::transport::ShapingOptions::FromProfile(*link);
  if (absl::GetFlag(FLAGS_no_delay))
    options.one_way_delay = absl::ZeroDuration();
  absl::StatusOr<std::unique_ptr<fedge::transport::ShapingProxy>> proxy =
      fedge::transport::ShapingProxy::Start(parts[0], target_port, options,
                                            listen_port);
  if (!proxy.ok()) return Fail(std::string(proxy.status().message()));
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::printf(
      "fedge-link: %s (up %.1f Mbit/s, down %.1f Mbit/s, RTT %s) listening "
      "on %s, forwarding to %s\n",
      link->name.c_str(), link->uplink_mbps, link->downlink_mbps,
      absl::GetFlag(FLAGS_no_delay) ? "0 (no delay)"
                                    : absl::FormatDuration(link->rtt).c_str(),
      (*proxy)->address().c_str(), target.c_str());
  std::fflush(stdout);
  while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::printf("fedge-link: %lld bytes up, %lld bytes down\n",
              static_cast<long long>((*proxy)->bytes_up()),
              static_cast<long long>((*proxy)->bytes_down()));
  return 0;
}
