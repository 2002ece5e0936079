// The round engine's differential privacy (strategies/privacy.h): what
// each round's aggregate is told (the clip, the noise, the fixed
// denominator, a secret seed), and, once a round commits, the accountant's
// step and adaptive clipping's. docs/privacy.md.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

#include "strategies/aggregator.h"
#include "strategies/privacy.h"

namespace fedge::coordinator {

// What one round was given, kept until it closes.
struct PrivateRound {
  double expected_devices = 0;  // sampling rate * candidates.
  double clip_norm = 0;
  double count_stddev = 0;  // Adaptive clipping's; 0 when fixed.
  uint64_t seed = 0;        // This round's secret seed.
};

// A committed round's privacy, for its record.
struct PrivacyRecord {
  double epsilon = 0;    // Spent so far, at the options' delta.
  double clip_norm = 0;  // The clip the round used.
  double next_clip = 0;  // The clip of the next round.
};

// The state a checkpoint keeps.
struct PrivacyState {
  std::vector<double> rdp;  // Per order of strategies::RdpAccountant().
  double clip_norm = 0;     // The next round's clip; 0: the initial one.
};

// Not thread-safe: the engine holds its lock around every call.
class PrivateRounds {
 public:
  // `options` enabled and validated; `clip_norm` > 0 is the initial clip;
  // `seed` 0 draws every round's secret seed from the operating system,
  // anything else makes runs repeatable (tests, benchmarks: not private).
  // `distributed`: the devices clip and add the noise under secure
  // aggregation (SecureRound), so a round's aggregator only divides by the
  // expected devices; the clip must then stay fixed.
  PrivateRounds(const strategies::PrivacyOptions& options, double clip_norm,
                uint64_t seed, bool distributed = false);

  // A seed for the round's Poisson sampling, secret like the noise's.
  uint64_t SamplingSeed(int64_t salt) const;

  // The round opening over `candidates` devices: its aggregator options
  // (`base` with this round's clip, noise and denominator; distributed,
  // the denominator alone). InvalidArgument
  // when adaptive clipping's count noise would spend more than the noise
  // multiplier allows at this many devices (the message names the flags).
  absl::StatusOr<PrivateRound> Open(int64_t candidates, int64_t salt,
                                    strategies::AggregatorOptions& base) const;

  // A committed round: composes the accountant and, with adaptive
  // clipping, moves the clip by the noised share of `norms` (the accepted
  // devices' change norms before clipping) within it.
  PrivacyRecord Commit(const PrivateRound& round,
                       const std::vector<double>& norms);

  // Epsilon after this many more rounds.
  double EpsilonAfter(int64_t more_rounds) const;

  PrivacyState State() const;
  // InvalidArgument for an RDP vector of the wrong length or with negative
  // or NaN entries, or a negative or non-finite clip; nothing changes then.
  absl::Status Restore(const PrivacyState& state);

 private:
  const strategies::PrivacyOptions options_;
  const uint64_t seed_;
  const bool distributed_;
  strategies::RdpAccountant accountant_;
  double clip_norm_;
};

}  // namespace fedge::coordinator
