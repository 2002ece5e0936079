// Online configuration bandits: each round, per device, pick an arm (a
// structured pruning ratio and a LoRA rank) from the rewards observed so
// far, with no prior knowledge of the device's speed or link.
//
// FedSpine's bandit (papers.md 1.6 and 9): ratio continuous in
// [min_ratio, max_ratio], explored per rank by a tree of cells that split
// in two after enough plays (so good regions get refined and bad ones stay
// coarse); rank from a discrete set; a discount forgets old rewards, since
// device speed and link quality drift. Baselines over a discrete grid of
// (ratio, rank): UCB1, discounted UCB, sliding-window UCB, Gaussian
// Thompson sampling, EXP3; plus fixed-arm, uniform random and an offline
// oracle that is told each arm's expected reward.
//
// Everything is deterministic given the arms and rewards fed in and the
// random generator passed to Choose(): a bandit's state is rebuilt exactly
// by replaying its Update() calls, which is how checkpoints restore it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fedge::strategies {

struct Arm {
  double prune_ratio = 0;  // Fraction of block units removed, [0, 1).
  int64_t rank = 8;        // LoRA rank, >= 1.
  friend bool operator==(const Arm& a, const Arm& b) {
    return a.prune_ratio == b.prune_ratio && a.rank == b.rank;
  }
};

std::string ArmToString(const Arm& arm);  // "p=0.250,r=8"

struct ArmSpace {
  double min_ratio = 0.0;
  double max_ratio = 0.6;
  int ratio_steps = 4;  // Grid bandits: this many ratios, ends included.
  std::vector<int64_t> ranks = {2, 4, 8, 16};
};

// InvalidArgument unless 0 <= min_ratio <= max_ratio < 1, ratio_steps >= 1
// (and == 1 only when min == max), ranks non-empty, ascending, all >= 1.
absl::Status ValidateArmSpace(const ArmSpace& space);

// The grid: ratio_steps evenly spaced ratios x ranks, ratio-major.
std::vector<Arm> GridArms(const ArmSpace& space);

enum class BanditKind {
  kFedSpine,
  kUcb1,
  kDiscountedUcb,
  kSlidingWindowUcb,
  kThompson,
  kExp3,
  kFixed,
  kRandom,
  kOracle,
  // Not learnt: the static capability rule (CapabilityArm in
  // time_model.h), which the coordinator applies from each device's time
  // model; its Bandit plays the least pruned arm at the highest rank until
  // the device has one.
  kStatic,
};

// "fedspine", "ucb1", "discounted_ucb", "sliding_window_ucb", "thompson",
// "exp3", "fixed", "random", "oracle", "static". InvalidArgument
// otherwise.
absl::StatusOr<BanditKind> ParseBanditKind(absl::string_view name);
std::string BanditKindName(BanditKind kind);

struct BanditOptions {
  BanditKind kind = BanditKind::kFedSpine;
  ArmSpace space;
  // Weight c of the UCB exploration bonus: the grid UCBs add
  // c * sqrt(2 ln n / n_arm); FedSpine adds c * s * sqrt(2 ln n / n_cell),
  // s the spread of the device's own rewards, so its bonus is worth what
  // its arms are seen to differ by rather than the whole reward range.
  double exploration = 0.2;
  // Per-update discount of past rewards: FedSpine and discounted UCB.
  // 0.97 remembers about 33 plays (rounds of one device): drift in speed
  // or link is followed within tens of rounds, at the price of continued
  // exploration.
  double discount = 0.97;
  int window = 100;  // Sliding-window UCB: the last `window` plays.
  // Rewards are clipped to this range; EXP3 rescales it to [0, 1] and it
  // sets Thompson's prior spread.
  double reward_min = -2.0;
  double reward_max = 1.0;
  double exp3_gamma = 0.1;  // EXP3's uniform exploration share.
  // FedSpine: a cell of depth d splits after split_after * 2^d plays, to at
  // most max_depth; cells get a bonus of lipschitz * width for what their
  // interior may hold beyond the points played.
  int split_after = 4;
  int max_depth = 2;  // [0, 20]
  double lipschitz = 0.2;
  // Prune-and-tune pace (every kind): after n rewards a
  // device's arms prune at most min_ratio + (max_ratio - min_ratio) *
  // min(1, n / ramp_plays), so each device starts on the dense model and
  // its sub-model shrinks as it is tuned, instead of exploring heavy
  // pruning before the adapters have learnt anything. Grid arms above the
  // cap are not played; the fixed arm prunes up to the cap. 0: the whole
  // space from the first play.
  int ramp_plays = 0;
  // FedSpine, told which arms keep the round on pace: of the cells on pace
  // whose index is within one play's exploration bonus of the best
  // (c * s * sqrt(2 ln n)), play the highest rank's least pruned instead
  // of the best. Arms that close are not told apart by the plays a device
  // gets, and on pace more capacity costs the round nothing while the
  // global model gains from it (issue 22: a device the round does not
  // wait for learned nothing from 20 plays that told rank 4 from rank 32,
  // and played each about a third of the time). false: the best index.
  bool capacity_ties = true;
  Arm fixed_arm;  // kFixed.
  // kOracle: the expected reward of an arm, known in hindsight (e.g. from
  // the simulator's profiles). Required for kOracle.
  std::function<double(const Arm&)> oracle;
};

// The part of an arm's reward that is known before the arm is played, as
// a function of the arm: for example the measured cost of a pruning ratio
// to the global model, the same for every device, which one play would
// only estimate with noise. Empty: nothing is known.
using KnownReward = std::function<double(const Arm&)>;

// Whether playing an arm keeps the round on its pace: the device's predicted
// time for it does not pass the time the round takes anyway (RoundPace in
// time_model.h). An arm that does lengthens the round for every device, so
// trying it to learn its reward costs the whole federation. Empty: every
// arm does.
using WithinPace = std::function<bool(const Arm&)>;

// Not thread-safe; the coordinator keeps one per device.
class Bandit {
 public:
  virtual ~Bandit() = default;
  // The arm to play next; all randomness comes from `rng`.
  Arm Choose(std::mt19937_64& rng) { return Choose(rng, KnownReward()); }
  // The same, adding known(arm) to what has been learnt of each arm:
  // FedSpine, the UCBs and Thompson sampling use it; EXP3, fixed, random
  // and the oracle ignore it. An arm not yet played counts as reward_max
  // plus its known reward instead of being tried first (FedSpine: a cell
  // not yet played counts as one play of the device's mean reward), so an
  // arm that what is known rules out is never tried. FedSpine plays,
  // inside the cell it picks, the least pruned of the points whose known
  // reward is within kKnownTie of the cell's best (on a ratio grid a
  // quarter of its finest cell's width), instead of any point
  // (CandidateRatios lists them all).
  // The caller must then Update() with the reward less known(arm), so the
  // same part is not counted twice.
  Arm Choose(std::mt19937_64& rng, const KnownReward& known) {
    return Choose(rng, known, WithinPace());
  }
  // The same, told which arms keep the round on pace. FedSpine explores
  // only those: a cell none of whose points is on pace gets no exploration
  // bonus (neither the UCB term nor the width term) and, until played,
  // counts as the device's mean, so it is played only if what is known
  // and learnt favours it outright, never to find out. The other kinds
  // ignore it (textbook baselines).
  virtual Arm Choose(std::mt19937_64& rng, const KnownReward& known,
                     const WithinPace& within_pace) = 0;
  // Feeds back the reward observed for `arm`. Grid bandits credit the
  // nearest grid arm; a non-finite reward is ignored.
  virtual void Update(const Arm& arm, double reward) = 0;
};

// Known rewards this close count as equal when FedSpine picks a point.
inline constexpr double kKnownTie = 0.01;

// InvalidArgument for options that do not validate (bad space, discount
// outside (0, 1], window < 1, ramp_plays < 0, reward_min >= reward_max, gamma
// outside (0, 1], a fixed arm outside the space, kOracle without an oracle).
absl::StatusOr<std::unique_ptr<Bandit>> CreateBandit(
    const BanditOptions& options);

// The largest pruning ratio the prune-and-tune pace allows a device after
// `plays` rewards (BanditOptions::ramp_plays); every kind keeps to it.
double RatioCap(const BanditOptions& options, int64_t plays);

// Every pruning ratio up to `cap` that the bandit of `options` plays, and
// asks a known reward about, when it is given one: FedSpine's point grid,
// the grid bandits' ratios, the fixed arm's (up to the cap). (Without a
// known reward FedSpine plays any ratio.) A coordinator measures what it
// knows of these before a round opens, so no device's task waits for a
// measurement, and only up to the cap, so the pace's early rounds measure
// little.
std::vector<double> CandidateRatios(const BanditOptions& options, double cap);

// Uniform double in [0, 1) from 53 random bits (the same on every
// platform, unlike std::uniform_real_distribution).
double UniformUnit(std::mt19937_64& rng);

}  // namespace fedge::strategies
