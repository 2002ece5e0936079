#include "strategies/privacy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>

namespace fedge::strategies {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// log(exp(a) + exp(b)) without overflow.
double LogAdd(double a, double b) {
  if (a == -kInf) return b;
  if (b == -kInf) return a;
  const double hi = std::max(a, b);
  return hi + std::log1p(std::exp(std::min(a, b) - hi));
}

double LogBinomial(int n, int k) {
  return std::lgamma(n + 1.0) - std::lgamma(k + 1.0) - std::lgamma(n - k + 1.0);
}

}  // namespace

absl::Status ValidatePrivacyOptions(const PrivacyOptions& o) {
  const auto bad = [](const char* name, double value, const char* want) {
    return absl::InvalidArgumentError(
        absl::StrCat("privacy: ", name, " must be ", want, "; got ", value));
  };
  if (!(o.noise_multiplier >= 0) || !std::isfinite(o.noise_multiplier)) {
    return bad("noise_multiplier", o.noise_multiplier, ">= 0 (0: off)");
  }
  if (!(o.sampling_rate > 0 && o.sampling_rate <= 1)) {
    return bad("sampling_rate", o.sampling_rate, "in (0, 1]");
  }
  if (!(o.delta > 0 && o.delta < 1)) return bad("delta", o.delta, "in (0, 1)");
  if (!(o.epsilon_budget >= 0) || !std::isfinite(o.epsilon_budget)) {
    return bad("epsilon_budget", o.epsilon_budget, ">= 0 (0: none)");
  }
  if (!(o.target_quantile >= 0 && o.target_quantile < 1)) {
    return bad("target_quantile", o.target_quantile, "in [0, 1) (0: fixed)");
  }
  if (!(o.clip_learning_rate >= 0) || !std::isfinite(o.clip_learning_rate)) {
    return bad("clip_learning_rate", o.clip_learning_rate, ">= 0");
  }
  if (!(o.clipped_count_stddev >= 0) ||
      !std::isfinite(o.clipped_count_stddev)) {
    return bad("clipped_count_stddev", o.clipped_count_stddev,
               ">= 0 (0: expected devices / 20)");
  }
  return absl::OkStatus();
}

double SampledGaussianRdp(double q, double z, int order) {
  if (q <= 0) return 0;
  if (z <= 0) return kInf;
  const double a = order;
  if (q >= 1) return a / (2 * z * z);
  // log A = log sum_k C(a, k) (1 - q)^(a - k) q^k exp((k^2 - k) / (2 z^2)),
  // A being E[(mu / mu0)^a] for the mixture mu = (1 - q) mu0 + q mu1.
  double log_a = -kInf;
  for (int k = 0; k <= order; ++k) {
    const double term = LogBinomial(order, k) + k * std::log(q) +
                        (order - k) * std::log1p(-q) +
                        (static_cast<double>(k) * k - k) / (2 * z * z);
    log_a = LogAdd(log_a, term);
  }
  return std::max(0.0, log_a / (a - 1));
}

RdpAccountant::RdpAccountant() {
  for (int order = 2; order <= 64; ++order) orders_.push_back(order);
  for (int order : {80, 96, 128, 256, 512}) orders_.push_back(order);
  rdp_.assign(orders_.size(), 0.0);
}

RdpAccountant::RdpAccountant(std::vector<int> orders)
    : orders_(std::move(orders)), rdp_(orders_.size(), 0.0) {}

void RdpAccountant::Compose(double q, double z, int64_t rounds) {
  if (rounds <= 0) return;
  composed_ = true;
  for (size_t i = 0; i < orders_.size(); ++i) {
    rdp_[i] +=
        static_cast<double>(rounds) * SampledGaussianRdp(q, z, orders_[i]);
  }
}

absl::Status RdpAccountant::Restore(const std::vector<double>& rdp) {
  if (rdp.size() != orders_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("privacy accountant: ", rdp.size(), " RDP values for ",
                     orders_.size(), " orders"));
  }
  for (double value : rdp) {
    if (!(value >= 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("privacy accountant: RDP value ", value));
    }
  }
  rdp_ = rdp;
  composed_ = false;
  for (double value : rdp) composed_ = composed_ || value > 0;
  return absl::OkStatus();
}

PrivacySpent RdpAccountant::Spent(double delta) const {
  if (!composed_) return {0, orders_.empty() ? 0 : orders_.front()};
  PrivacySpent best{kInf, orders_.empty() ? 0 : orders_.front()};
  for (size_t i = 0; i < orders_.size(); ++i) {
    const double a = orders_[i];
    // Balle et al. 2020, Theorem 21.
    const double epsilon = rdp_[i] + std::log1p(-1 / a) -
                           (std::log(delta) + std::log(a)) / (a - 1);
    if (epsilon < best.epsilon) best = {epsilon, orders_[i]};
  }
  best.epsilon = std::max(0.0, best.epsilon);
  return best;
}

PrivacySpent SpentAfter(const PrivacyOptions& options, int64_t rounds) {
  RdpAccountant accountant;
  accountant.Compose(options.sampling_rate, options.noise_multiplier, rounds);
  return accountant.Spent(options.delta);
}

int64_t RoundsWithin(const PrivacyOptions& options, double budget,
                     int64_t limit) {
  // Epsilon grows with the rounds: bisect.
  int64_t lo = 0, hi = limit;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (SpentAfter(options, mid).epsilon <= budget) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

absl::StatusOr<double> NoiseMultiplierFor(const PrivacyOptions& options,
                                          int64_t rounds, double epsilon) {
  PrivacyOptions o = options;
  const auto spent = [&](double z) {
    o.noise_multiplier = z;
    return SpentAfter(o, rounds).epsilon;
  };
  double lo = 1e-3, hi = 1000;
  if (!(epsilon > 0) || spent(hi) > epsilon) {
    return absl::InvalidArgumentError(absl::StrCat(
        "no noise multiplier up to ", hi, " keeps ", rounds,
        " rounds at sampling rate ", options.sampling_rate, " within epsilon ",
        epsilon, " (delta ", options.delta, ")"));
  }
  // Epsilon falls as z grows: bisect on a log scale.
  while (hi / lo > 1.001) {
    const double mid = std::sqrt(lo * hi);
    if (spent(mid) <= epsilon) {
      hi = mid;
    } else {
      lo = mid;
    }
  }
  return hi;
}

absl::StatusOr<double> UpdateNoiseMultiplier(double z, double count_stddev) {
  if (!(z > 0) || !(count_stddev > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("noise multiplier (", z, ") and clipped-count stddev (",
                     count_stddev, ") must be > 0"));
  }
  const double left = 1 / (z * z) - 1 / (4 * count_stddev * count_stddev);
  if (!(left > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the clipped count's noise (stddev ", count_stddev,
        ") spends more than noise multiplier ", z,
        " allows: raise the stddev above z / 2 = ", z / 2, " or lower z"));
  }
  return 1 / std::sqrt(left);
}

absl::StatusOr<model::NamedTensors> ApplyLocalPrivacy(
    const model::NamedTensors& trained, const model::NamedTensors& sent,
    double clip, double noise_multiplier, uint64_t seed) {
  torch::NoGradGuard no_grad;
  if (!(clip > 0) || !std::isfinite(clip) || !(noise_multiplier >= 0) ||
      !std::isfinite(noise_multiplier)) {
    return absl::InvalidArgumentError(
        absl::StrCat("local privacy needs clip > 0 and a noise multiplier "
                     ">= 0; got ",
                     clip, " and ", noise_multiplier));
  }
  if (trained.size() != sent.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("local privacy: ", trained.size(), " trained tensors, ",
                     sent.size(), " sent"));
  }
  // The change, in float64, computed once: its norm first, then clipped,
  // noised and added back to what was sent.
  model::NamedTensors deltas;
  double squared = 0;
  for (const auto& item : trained) {
    const at::Tensor* start = sent.find(item.key());
    if (start == nullptr || start->sizes() != item.value().sizes() ||
        !item.value().is_floating_point()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "local privacy: '", item.key(), "' was not sent with its shape"));
    }
    at::Tensor delta =
        item.value().to(torch::kFloat64) - start->to(torch::kFloat64);
    const at::Tensor flat = delta.reshape({-1});
    squared += torch::dot(flat, flat).item<double>();
    deltas.insert(item.key(), std::move(delta));
  }
  const double norm = std::sqrt(squared);
  const double scale = norm > clip ? clip / norm : 1.0;
  if (seed == 0) seed = SystemSeed();
  at::Generator noise = at::make_generator<at::CPUGeneratorImpl>(seed);
  model::NamedTensors out;
  for (const auto& item : trained) {
    const at::Tensor& start = sent[item.key()];
    at::Tensor value =
        deltas[item.key()]
            .mul_(scale)
            .add_(torch::randn(start.sizes(), noise, torch::kFloat64),
                  noise_multiplier * clip)
            .add_(start.to(torch::kFloat64));
    out.insert(item.key(), value.to(item.value().scalar_type()));
  }
  return out;
}

PrivacySpent LocalSpent(double noise_multiplier, int64_t rounds, double delta) {
  return SpentAfter({noise_multiplier / 2, 1.0, delta}, rounds);
}

uint64_t SystemSeed() {
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

double NextClipNorm(double clip, double unclipped_fraction, double target,
                    double rate) {
  return clip * std::exp(-rate * (unclipped_fraction - target));
}

}  // namespace fedge::strategies
