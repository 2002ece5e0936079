#include "coordinator/rewards.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <utility>

namespace fedge::coordinator {

std::vector<double> CandidateCombinedRatios(const EngineOptions& options,
                                            double global_ratio,
                                            int64_t plays) {
  const double cap = strategies::RatioCap(options.bandit, plays);
  std::vector<double> device_ratios =
      strategies::CandidateRatios(options.bandit, cap);
  for (const auto& [id, arm] : options.device_arms) {
    for (double ratio :
         strategies::CandidateRatios(BanditFor(options, id), cap)) {
      device_ratios.push_back(ratio);
    }
  }
  std::sort(device_ratios.begin(), device_ratios.end());
  device_ratios.erase(std::unique(device_ratios.begin(), device_ratios.end()),
                      device_ratios.end());
  std::vector<double> combined;
  for (double ratio : device_ratios) {
    combined.push_back(strategies::CombinedRatio(global_ratio, ratio));
  }
  return combined;
}

double RoundPace(const EngineOptions& options,
                 const std::vector<const Device*>& participants,
                 double global_ratio) {
  std::vector<double> fastest;
  for (const Device* device : participants) {
    const std::vector<int64_t> ranks =
        options.bandit.kind == strategies::BanditKind::kFixed
            ? std::vector<int64_t>{BanditFor(options, device->facts.device_id)
                                       .fixed_arm.rank}
            : options.bandit.space.ranks;
    double best = std::numeric_limits<double>::infinity();
    for (double ratio :
         CandidateCombinedRatios(options, global_ratio, device->plays)) {
      for (int64_t rank : ranks) {
        if (std::optional<double> t = device->times.Predict(ratio, rank)) {
          best = std::min(best, *t);
        }
      }
    }
    if (std::isfinite(best)) fastest.push_back(best);
  }
  return strategies::RoundPace(fastest);
}

double CapabilityBudget(const EngineOptions& options,
                        const std::vector<const Device*>& participants,
                        double global_ratio) {
  const strategies::ArmSpace& space = options.bandit.space;
  const double densest_ratio =
      strategies::CombinedRatio(global_ratio, space.min_ratio);
  std::vector<double> densest;
  for (const Device* device : participants) {
    if (std::optional<double> t =
            device->times.Predict(densest_ratio, space.ranks.back())) {
      densest.push_back(*t);
    }
  }
  return strategies::Quantile(densest, 0.75);
}

std::optional<strategies::Arm> CapabilityArm(const EngineOptions& options,
                                             const Device& device,
                                             double global_ratio,
                                             double budget_s) {
  if (options.bandit.kind != strategies::BanditKind::kStatic ||
      !(budget_s > 0) || device.times.state().observations == 0) {
    return std::nullopt;
  }
  // The grid's arms under the device's prune-and-tune cap.
  const double cap = strategies::RatioCap(options.bandit, device.plays);
  std::vector<strategies::Arm> arms;
  for (const strategies::Arm& arm :
       strategies::GridArms(options.bandit.space)) {
    if (arm.prune_ratio <= cap + 1e-9) arms.push_back(arm);
  }
  return strategies::CapabilityArm(
      arms,
      [&](const strategies::Arm& arm) {
        return *device.times.Predict(
            strategies::CombinedRatio(global_ratio, arm.prune_ratio), arm.rank);
      },
      budget_s);
}

bool TimeKnown(const EngineOptions& options, const Device& device,
               double pace_s) {
  return pace_s > 0 && device.times.state().observations > 0 &&
         options.reward.time > 0;
}

double LearnedReward(const EngineOptions& options, const ClientRecord& client,
                     double known_reward, bool time_known) {
  double learned = client.reward - known_reward;
  if (!time_known) learned += options.reward.time * client.terms.time_over_pace;
  return learned;
}

namespace {

// How far past `pace_s` `device`'s predicted time for an arm ends
// (strategies::TimeOverPace); empty when the reward has no time term, the
// round no pace or the device no time model. Borrows `device`.
std::function<double(const strategies::Arm&)> TimePastPace(
    const EngineOptions& options, const Device& device, double global_ratio,
    double pace_s) {
  if (!TimeKnown(options, device, pace_s)) return {};
  return [&device, global_ratio, pace_s](const strategies::Arm& arm) {
    return strategies::TimeOverPace(
        *device.times.Predict(
            strategies::CombinedRatio(global_ratio, arm.prune_ratio), arm.rank),
        pace_s);
  };
}

}  // namespace

strategies::WithinPace OnPace(const EngineOptions& options,
                              const Device& device, double global_ratio,
                              double pace_s) {
  auto past = TimePastPace(options, device, global_ratio, pace_s);
  if (!past) return {};
  return [past = std::move(past)](const strategies::Arm& arm) {
    return past(arm) <= 0;
  };
}

strategies::KnownReward KnownReward(
    const EngineOptions& options, const Device& device, double global_ratio,
    double pace_s, bool costs_known,
    const std::function<double(double)>& charged_cost) {
  auto past = TimePastPace(options, device, global_ratio, pace_s);
  if (!costs_known && !past) return {};
  return [&options, &charged_cost, global_ratio, costs_known,
          past = std::move(past)](const strategies::Arm& arm) {
    double known = 0;
    if (costs_known) {
      known -=
          options.reward.pruning_cost * charged_cost(strategies::CombinedRatio(
                                            global_ratio, arm.prune_ratio));
    }
    if (past) known -= options.reward.time * past(arm);
    return known;
  };
}

void PayClient(const EngineOptions& options, const RoundPay& round,
               bool straggler, double pruning_cost, ClientRecord& client) {
  strategies::RewardInputs in;
  in.loss_before = client.loss_before;
  in.loss_after = client.loss_after;
  in.prune_ratio = client.arm.prune_ratio;
  in.target_ratio =
      strategies::RatioToTarget(round.global_ratio, options.schedule.target);
  in.update_norm = client.update_norm;
  if (auto it = round.median_update_norm.find(client.rank);
      it != round.median_update_norm.end()) {
    in.median_update_norm = it->second;
  }
  in.seconds = client.elapsed_s;
  in.pace_seconds = round.pace_s;
  in.median_seconds = round.median_elapsed_s;
  in.straggler = straggler;
  in.pruning_cost = pruning_cost;
  client.terms = strategies::MakeRewardTerms(in);
  client.reward = strategies::Reward(client.terms, options.reward);
}

}  // namespace fedge::coordinator
