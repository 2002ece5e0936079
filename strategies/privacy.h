// User-level differential privacy for federated averaging (DP-FedAvg,
// McMahan et al. 2018): each round, every sampled device's change is
// clipped to an L2 norm, the clipped changes are summed, Gaussian noise of
// standard deviation noise_multiplier * clip is added to the sum, and the
// sum is divided by the expected number of devices, not the number that
// came. Devices join a round by Poisson sampling (each independently with
// probability sampling_rate), which is what the accountant assumes.
//
// The accountant is Rényi DP of the sampled Gaussian mechanism (Mironov,
// Talwar and Zhang 2019) at integer orders, composed over rounds, turned
// into (epsilon, delta) with the conversion of Balle et al. 2020 (the one
// Google's dp_accounting uses). Integer orders only: the bound is valid
// and at most slightly looser than with fractional orders.
//
// Adaptive clipping (Andrew et al. 2021): the clip moves geometrically
// towards the target quantile of the devices' change norms, steered by a
// noised count of the devices that were not clipped; that count's noise
// takes a share of the privacy, so the sum gets the remaining noise
// multiplier (UpdateNoiseMultiplier).
//
// docs/privacy.md says what the guarantee covers and what it does not.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "model/model.h"

namespace fedge::strategies {

struct PrivacyOptions {
  // z > 0 turns differential privacy on; 0 is off.
  double noise_multiplier = 0;
  // q in (0, 1]: each device joins a round with this probability.
  double sampling_rate = 1.0;
  // The delta epsilon is reported at; keep it below 1 / devices.
  double delta = 1e-5;
  // > 0: a run whose rounds would take epsilon past this is refused.
  double epsilon_budget = 0;
  // Adaptive clipping: the quantile of change norms the clip tracks, in
  // (0, 1); 0 keeps the clip fixed.
  double target_quantile = 0;
  // Adaptive clipping: the clip is multiplied by exp(-rate * (unclipped
  // fraction - target_quantile)) each round.
  double clip_learning_rate = 0.2;
  // Adaptive clipping: the standard deviation of the noise on the count of
  // unclipped devices; 0 means expected devices / 20 (Andrew et al.).
  double clipped_count_stddev = 0;

  bool enabled() const { return noise_multiplier > 0; }
};

// InvalidArgument naming the field for values out of range (z < 0, q
// outside (0, 1], delta outside (0, 1), a negative budget, a quantile
// outside [0, 1), a rate < 0, a count stddev < 0).
absl::Status ValidatePrivacyOptions(const PrivacyOptions& options);

// Rényi DP at integer `order` >= 2 of one round of the Poisson-sampled
// Gaussian mechanism with sampling rate `q` and noise multiplier `z`
// (sensitivity 1). 0 for q = 0; +inf for z = 0 with q > 0.
double SampledGaussianRdp(double q, double z, int order);

struct PrivacySpent {
  double epsilon = 0;
  int order = 0;  // The order that gave it.
};

// Not thread-safe.
class RdpAccountant {
 public:
  // Orders 2..64, then 80, 96, 128, 256, 512.
  RdpAccountant();
  explicit RdpAccountant(std::vector<int> orders);

  // Adds `rounds` rounds of the sampled Gaussian mechanism.
  void Compose(double q, double z, int64_t rounds);

  // The smallest epsilon over the orders at `delta` in (0, 1); 0 before
  // any round; +inf where every order's RDP is.
  PrivacySpent Spent(double delta) const;

  // Replaces the composed RDP with `rdp` (an earlier rdp()).
  // InvalidArgument for a length other than orders()'s, or an entry that
  // is negative or NaN.
  absl::Status Restore(const std::vector<double>& rdp);

  const std::vector<int>& orders() const { return orders_; }
  const std::vector<double>& rdp() const { return rdp_; }

 private:
  std::vector<int> orders_;
  std::vector<double> rdp_;
  bool composed_ = false;
};

// Epsilon after `rounds` rounds at `options`' q, z and delta.
PrivacySpent SpentAfter(const PrivacyOptions& options, int64_t rounds);

// The smallest noise multiplier (to 0.1%) whose `rounds` rounds at
// `options`' sampling rate and delta spend at most `epsilon` (> 0):
// calibrating the noise to a target epsilon, as DP-FedAvg deployments do.
// InvalidArgument when even a multiplier of 1000 spends more.
absl::StatusOr<double> NoiseMultiplierFor(const PrivacyOptions& options,
                                          int64_t rounds, double epsilon);

// The most rounds whose epsilon stays within `budget` (searched up to
// `limit`).
int64_t RoundsWithin(const PrivacyOptions& options, double budget,
                     int64_t limit);

// Adaptive clipping releases two Gaussian sums each round: the clipped
// changes with multiplier z_sum, and the unclipped count with standard
// deviation count_stddev (sensitivity 1/2 once centred), which together
// are one Gaussian mechanism with multiplier z when z_sum =
// (z^-2 - (2 count_stddev)^-2)^(-1/2). InvalidArgument when the count's
// noise alone spends more than z allows.
absl::StatusOr<double> UpdateNoiseMultiplier(double z, double count_stddev);

// The next round's clip: clip * exp(-rate * (unclipped_fraction - target)),
// `unclipped_fraction` being the noised count over the expected devices.
double NextClipNorm(double clip, double unclipped_fraction, double target,
                    double rate);

// 64 bits from the operating system (getrandom, through
// std::random_device on Linux): the seed of noise or sampling that must
// stay secret.
uint64_t SystemSeed();

// Local differential privacy, on the device, for a coordinator it does
// not trust: `trained` minus `sent` (all tensors together) clipped to L2
// norm `clip`, Gaussian noise of noise_multiplier * clip added to every
// value, and the result added back to `sent`. `seed` 0 draws the noise's
// seed from the operating system (a device must: the coordinator knows
// every seed it hands out). InvalidArgument for names or shapes that
// differ, non-float tensors, clip <= 0 or a multiplier < 0.
absl::StatusOr<model::NamedTensors> ApplyLocalPrivacy(
    const model::NamedTensors& trained, const model::NamedTensors& sent,
    double clip, double noise_multiplier, uint64_t seed = 0);

// What `rounds` of a device's locally privatised uploads spend: each is a
// Gaussian mechanism whose output can move by 2 clips when the device's
// data is replaced, so multiplier z counts as z / 2; no sampling
// amplification (the device knows it was asked).
PrivacySpent LocalSpent(double noise_multiplier, int64_t rounds, double delta);

}  // namespace fedge::strategies
