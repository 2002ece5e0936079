#include "coordinator/private_rounds.h"

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"

#include "coordinator/task_builder.h"

namespace fedge::coordinator {

PrivateRounds::PrivateRounds(const strategies::PrivacyOptions& options,
                             double clip_norm, uint64_t seed, bool distributed)
    : options_(options),
      seed_(seed),
      distributed_(distributed),
      clip_norm_(clip_norm) {}

uint64_t PrivateRounds::SamplingSeed(int64_t salt) const {
  return seed_ == 0 ? strategies::SystemSeed()
                    : DeviceSeed(seed_, "sampling", salt);
}

absl::StatusOr<PrivateRound> PrivateRounds::Open(
    int64_t candidates, int64_t salt,
    strategies::AggregatorOptions& base) const {
  PrivateRound round;
  round.expected_devices =
      options_.sampling_rate * static_cast<double>(candidates);
  round.clip_norm = clip_norm_;
  round.seed =
      seed_ == 0 ? strategies::SystemSeed() : DeviceSeed(seed_, "noise", salt);
  double z = options_.noise_multiplier;
  if (options_.target_quantile > 0) {
    round.count_stddev = options_.clipped_count_stddev > 0
                             ? options_.clipped_count_stddev
                             : round.expected_devices / 20;
    absl::StatusOr<double> z_sum =
        strategies::UpdateNoiseMultiplier(z, round.count_stddev);
    if (!z_sum.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "adaptive clipping at ", round.expected_devices,
          " expected devices a round: ", z_sum.status().message(),
          " (--dp_clipped_count_stddev, --dp_noise_multiplier; or fix the "
          "clip with --dp_target_quantile=0)"));
    }
    z = *z_sum;
  }
  base.fixed_denominator = round.expected_devices;
  if (distributed_) return round;
  base.clip_norm = round.clip_norm;
  base.noise_stddev = z * round.clip_norm;
  base.noise_seed = round.seed;
  return round;
}

PrivacyRecord PrivateRounds::Commit(const PrivateRound& round,
                                    const std::vector<double>& norms) {
  accountant_.Compose(options_.sampling_rate, options_.noise_multiplier, 1);
  PrivacyRecord record;
  record.epsilon = accountant_.Spent(options_.delta).epsilon;
  record.clip_norm = round.clip_norm;
  if (options_.target_quantile > 0 && round.expected_devices > 0) {
    double unclipped = 0;
    for (double norm : norms) unclipped += norm <= round.clip_norm ? 1 : 0;
    std::mt19937_64 rng(round.seed ^ 0x9e3779b97f4a7c15ULL);
    std::normal_distribution<double> noise(0, round.count_stddev);
    const double fraction = (unclipped + noise(rng)) / round.expected_devices;
    clip_norm_ = strategies::NextClipNorm(round.clip_norm, fraction,
                                          options_.target_quantile,
                                          options_.clip_learning_rate);
  }
  record.next_clip = clip_norm_;
  return record;
}

double PrivateRounds::EpsilonAfter(int64_t more_rounds) const {
  strategies::RdpAccountant next = accountant_;
  next.Compose(options_.sampling_rate, options_.noise_multiplier, more_rounds);
  return next.Spent(options_.delta).epsilon;
}

PrivacyState PrivateRounds::State() const {
  return {accountant_.rdp(), clip_norm_};
}

absl::Status PrivateRounds::Restore(const PrivacyState& state) {
  if (!(state.clip_norm >= 0) || !std::isfinite(state.clip_norm)) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint: privacy clip norm ", state.clip_norm));
  }
  strategies::RdpAccountant restored;
  if (absl::Status s = restored.Restore(state.rdp); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint: ", s.message()));
  }
  accountant_ = restored;
  if (state.clip_norm > 0) clip_norm_ = state.clip_norm;
  return absl::OkStatus();
}

}  // namespace fedge::coordinator
