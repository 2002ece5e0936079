// Secure aggregation's cost at the protocol level (secagg/protocol.h): one
// SecAgg+ round of --devices devices summing --length words each, run in
// this process with every message passed through the Coordinator object,
// against the plain round's work (the coordinator adding the same vectors
// in the clear). Prints `metric` lines: per-device CPU seconds by phase,
// the coordinator's CPU seconds, bytes each device sends and receives in
// all four phases, and the ratios to the plain round (plain upload taken
// as fedge's int8 codec: one byte a word). No network: the bytes are
// counted, not sent, and round time on a link is not modelled here.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <set>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"

#include "secagg/protocol.h"

ABSL_FLAG(int64_t, devices, 100, "Devices in the round.");
ABSL_FLAG(int, neighbours, 0,
          "Neighbours per device (0: secagg::NeighboursFor the round to "
          "survive 30% dropping after masking with probability 0.99).");
ABSL_FLAG(uint64_t, seed, 7, "Seeds the inputs and who drops.");
ABSL_FLAG(int64_t, length, 57344,
          "Words per vector (57,344: the default ViT's rank-8 LoRA update).");
ABSL_FLAG(double, drop_after_masking, 0.0,
          "Share of devices that drop after sending their masked input.");

namespace {

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "fedge-bench-secagg: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  namespace sa = fedge::secagg;
  sa::Parameters p;
  p.devices = absl::GetFlag(FLAGS_devices);
  p.length = absl::GetFlag(FLAGS_length);
  p.neighbours = absl::GetFlag(FLAGS_neighbours);
  if (p.neighbours == 0) {
    p.neighbours = sa::NeighboursFor(p.devices, 0.3, 0.01);
  }
  p.threshold = p.neighbours / 2 + 1;
  p.round = 1;
  p.graph_seed = 1;
  if (absl::Status s = sa::ValidateParameters(p); !s.ok()) return Fail(s);
  const int64_t n = p.devices;
  std::vector<sa::Device> devices;
  for (int64_t i = 0; i < n; ++i) devices.emplace_back(p, i);
  sa::Coordinator coordinator(p);
  double device_s[4] = {0, 0, 0, 0};
  double coordinator_s = 0;
  double up_bytes = 0, down_bytes = 0;
  using Clock = std::chrono::steady_clock;

  for (int64_t i = 0; i < n; ++i) {
    auto t = Clock::now();
    absl::StatusOr<sa::Advertisement> a = devices[i].Advertise();
    device_s[0] += Seconds(t);
    if (!a.ok()) return Fail(a.status());
    up_bytes += 3 * 32;
    t = Clock::now();
    if (absl::Status s = coordinator.AddAdvertisement(*a); !s.ok()) {
      return Fail(s);
    }
    coordinator_s += Seconds(t);
  }
  for (int64_t i = 0; i < n; ++i) {
    const auto relayed = coordinator.AdvertisementsFor(i);
    down_bytes += 3 * 32.0 * relayed.size();
    auto t = Clock::now();
    auto shares = devices[i].ShareKeys(relayed);
    device_s[1] += Seconds(t);
    if (!shares.ok()) return Fail(shares.status());
    for (const auto& s : *shares) up_bytes += s.sealed.size() + 16;
    t = Clock::now();
    if (absl::Status s = coordinator.AddShares(i, *shares); !s.ok()) {
      return Fail(s);
    }
    coordinator_s += Seconds(t);
  }
  std::mt19937 rng(static_cast<uint32_t>(absl::GetFlag(FLAGS_seed)));
  std::vector<uint32_t> plain_sum(p.length, 0);
  double plain_s = 0;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<uint32_t> x(p.length);
    for (auto& w : x) w = rng() & 0xffff;
    const auto inbox = coordinator.SharesFor(i);
    for (const auto& s : inbox) down_bytes += s.sealed.size() + 16;
    auto t = Clock::now();
    auto y = devices[i].MaskInput(x, inbox);
    device_s[2] += Seconds(t);
    if (!y.ok()) return Fail(y.status());
    up_bytes += 4.0 * p.length;
    t = Clock::now();
    for (int64_t k = 0; k < p.length; ++k) plain_sum[k] += x[k];
    plain_s += Seconds(t);
    t = Clock::now();
    if (absl::Status s = coordinator.AddMaskedInput(i, *std::move(y));
        !s.ok()) {
      return Fail(s);
    }
    coordinator_s += Seconds(t);
  }
  std::set<int64_t> dropped;
  const int64_t drops = static_cast<int64_t>(
      std::floor(absl::GetFlag(FLAGS_drop_after_masking) * n));
  for (int64_t i = 0; static_cast<int64_t>(dropped.size()) < drops; ++i) {
    dropped.insert(static_cast<int64_t>(rng() % n));
  }
  const std::set<int64_t> survivors = coordinator.Survivors();
  for (int64_t i = 0; i < n; ++i) {
    if (dropped.count(i) > 0) continue;
    down_bytes += 8.0 * survivors.size();
    auto t = Clock::now();
    auto shares = devices[i].Unmask(survivors);
    device_s[3] += Seconds(t);
    if (!shares.ok()) return Fail(shares.status());
    up_bytes +=
        (1 + 32 + 8) * (shares->seed_shares.size() + shares->key_shares.size());
    t = Clock::now();
    if (absl::Status s = coordinator.AddUnmaskShares(*shares); !s.ok()) {
      return Fail(s);
    }
    coordinator_s += Seconds(t);
  }
  auto t = Clock::now();
  absl::StatusOr<std::vector<uint32_t>> sum = coordinator.Sum();
  coordinator_s += Seconds(t);
  if (!sum.ok()) return Fail(sum.status());
  int64_t wrong = 0;
  for (int64_t k = 0; k < p.length; ++k) wrong += (*sum)[k] != plain_sum[k];

  const double per_device_s =
      (device_s[0] + device_s[1] + device_s[2] + device_s[3]) / n;
  std::printf("metric secagg_devices %lld\n", static_cast<long long>(n));
  std::printf("metric secagg_neighbours %d\nmetric secagg_threshold %d\n",
              p.neighbours, p.threshold);
  std::printf("metric secagg_length %lld\n", static_cast<long long>(p.length));
  std::printf("metric secagg_dropped_after_masking %zu\n", dropped.size());
  std::printf("metric secagg_wrong_words %lld\n",
              static_cast<long long>(wrong));
  std::printf(
      "metric secagg_device_s_advertise %.6f\nmetric secagg_device_s_share "
      "%.6f\nmetric secagg_device_s_mask %.6f\nmetric secagg_device_s_unmask "
      "%.6f\nmetric secagg_device_s %.6f\n",
      device_s[0] / n, device_s[1] / n, device_s[2] / n, device_s[3] / n,
      per_device_s);
  std::printf(
      "metric secagg_coordinator_s %.4f\nmetric plain_coordinator_s "
      "%.4f\n",
      coordinator_s, plain_s);
  std::printf(
      "metric secagg_device_bytes_up %.0f\nmetric "
      "secagg_device_bytes_down %.0f\n",
      up_bytes / n, down_bytes / n);
  std::printf("metric secagg_bytes_up_over_int8 %.3f\n",
              up_bytes / n / static_cast<double>(p.length));
  std::printf("metric secagg_coordinator_over_plain %.1f\n",
              coordinator_s / plain_s);
  return wrong == 0 ? 0 : 1;
}
