// What each device's bandit is told before it chooses and paid after its
// round. FedSpine's reward (strategies/reward.h) has parts the coordinator
// knows in advance: the pruning cost of the arm's plan (measured,
// coordinator/pruning_costs.h) and the time the device's time model
// predicts past the round's pace. Those are told to the bandit
// (strategies::KnownReward), which learns only the rest. The static
// capability rule (BanditKind::kStatic) is here too: it picks from the
// same predictions.
//
// Pure functions of the engine's state; the engine's lock guards what they
// read.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <vector>

#include "coordinator/device_registry.h"
#include "coordinator/engine_types.h"
#include "strategies/bandit.h"

namespace fedge::coordinator {

// The combined ratios (global x device) the bandits may ask about in a
// round at `global_ratio` when the most-played device has played `plays`
// times (the prune-and-tune ramp caps the device's ratio), every device's
// own fixed arm (EngineOptions::device_arms) included; ascending, once each.
std::vector<double> CandidateCombinedRatios(const EngineOptions& options,
                                            double global_ratio, int64_t plays);

// The round's pace (strategies::RoundPace) over `participants`' time
// models, each over the arms it may play now; 0 before any prediction.
double RoundPace(const EngineOptions& options,
                 const std::vector<const Device*>& participants,
                 double global_ratio);

// BanditKind::kStatic: the 75th percentile of `participants`' predicted
// times for the least pruned arm at the highest rank; 0 before any
// prediction.
double CapabilityBudget(const EngineOptions& options,
                        const std::vector<const Device*>& participants,
                        double global_ratio);

// BanditKind::kStatic: the arm the capability rule gives `device` within
// `budget_s`, or nullopt for other bandits, without a budget, or while the
// device has no time model.
std::optional<strategies::Arm> CapabilityArm(const EngineOptions& options,
                                             const Device& device,
                                             double global_ratio,
                                             double budget_s);

// Which arms keep a round at `global_ratio` on its pace `pace_s` for
// `device`: its predicted time for the arm is not past the pace. Empty
// (every arm) when the reward has no time term, the round no pace or the
// device no time model. Borrows `device`: call it while it lives
// (Bandit::Choose).
strategies::WithinPace OnPace(const EngineOptions& options,
                              const Device& device, double global_ratio,
                              double pace_s);

// Whether KnownReward includes the time term for `device` in a round at
// `pace_s`: the reward has a time term, the round a pace and the device a
// time model (one observed task).
bool TimeKnown(const EngineOptions& options, const Device& device,
               double pace_s);

// What `client`'s bandit learns from its paid reward: the reward less what
// it was told before it chose (`known_reward`). When the time term was not
// known then (`time_known` false: the device's first task, or the round's
// first), the time term is left out as well: how long the device took is
// its speed, which its time model has learnt from this task and tells the
// bandit from now on, not something its arm earned. Learnt instead, a
// first task's overrun stayed in the arm's cells long after the time model
// explained it, and a device kept the small arm it learned while slow
// after it became fast (issue 22, docs/simulation.md).
double LearnedReward(const EngineOptions& options, const ClientRecord& client,
                     double known_reward, bool time_known);

// What is known of each arm's reward for `device` in a round at
// `global_ratio` and `pace_s`: minus the weighted charged pruning cost
// (`charged_cost(combined ratio)`, when `costs_known`) and minus the
// weighted time term (once the device has a time model and the round a
// pace). Empty when neither is known. The result borrows `device` and
// `charged_cost`: call it while they live (Bandit::Choose).
strategies::KnownReward KnownReward(
    const EngineOptions& options, const Device& device, double global_ratio,
    double pace_s, bool costs_known,
    const std::function<double(double)>& charged_cost);

// What a round knows when it pays its devices.
struct RoundPay {
  double global_ratio = 0;
  double pace_s = 0;
  double median_elapsed_s = 0;
  // Per task rank (0 in dense mode), the median norm of the round's
  // accepted updates of that rank. A device's update importance is its norm
  // over its rank's median: a rank-r adapter's step scales with
  // alpha / r, so across ranks the norm measures the rank, not the
  // update (issue 22: it steered fast devices to the lowest rank).
  std::map<int64_t, double> median_update_norm;
};

// Fills `client.terms` and `client.reward` for an accepted or straggling
// device (`straggler`) whose task charged `pruning_cost`.
void PayClient(const EngineOptions& options, const RoundPay& round,
               bool straggler, double pruning_cost, ClientRecord& client);

}  // namespace fedge::coordinator
