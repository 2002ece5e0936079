#include "strategies/bandit.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include <glog/logging.h>

namespace fedge::strategies {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Index of the largest score; ties broken uniformly by `rng`.
size_t ArgMaxRandomTies(const std::vector<double>& scores,
                        std::mt19937_64& rng) {
  double best = -kInf;
  std::vector<size_t> ties;
  for (size_t i = 0; i < scores.size(); ++i) {
    if (scores[i] > best) {
      best = scores[i];
      ties.assign(1, i);
    } else if (scores[i] == best) {
      ties.push_back(i);
    }
  }
  if (ties.empty()) return 0;  // All NaN: cannot happen with clipped rewards.
  return ties[static_cast<size_t>(UniformUnit(rng) * ties.size())];
}

double StandardNormal(std::mt19937_64& rng) {
  // Box-Muller from platform-independent uniforms.
  const double u1 = 1.0 - UniformUnit(rng);  // (0, 1]
  const double u2 = UniformUnit(rng);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

double Finite(double x) { return std::isfinite(x) ? x : 0.0; }

// The ratios FedSpine plays when given a known reward: a grid four times
// finer than its finest cell, ends included, so that cell ends are points.
std::vector<double> FedSpineGrid(const BanditOptions& options) {
  const ArmSpace& space = options.space;
  const int64_t steps = int64_t{4} << options.max_depth;
  std::vector<double> grid;
  for (int64_t j = 0; j <= steps; ++j) {
    grid.push_back(space.min_ratio + (space.max_ratio - space.min_ratio) *
                                         static_cast<double>(j) /
                                         static_cast<double>(steps));
    if (!(space.max_ratio > space.min_ratio)) break;
  }
  return grid;
}

// Shared by the discrete-grid bandits: the arms, the clipping of rewards
// and the prune-and-tune pace.
class GridBandit : public Bandit {
 public:
  explicit GridBandit(const BanditOptions& options)
      : options_(options), arms_(GridArms(options.space)) {}

  void Update(const Arm& arm, double reward) final {
    if (!std::isfinite(reward)) return;
    Observe(Nearest(arm),
            std::clamp(reward, options_.reward_min, options_.reward_max));
    ++plays_;
  }

 protected:
  virtual void Observe(size_t arm, double reward) = 0;

  // Whether arm i is within the pace's cap now; the least pruned arms
  // always are.
  bool Open(size_t i) const {
    return arms_[i].prune_ratio <= RatioCap(options_, plays_) + 1e-9;
  }

  // `scores` with the arms above the cap set to -infinity.
  std::vector<double> OnlyOpen(std::vector<double> scores) const {
    for (size_t i = 0; i < scores.size(); ++i) {
      if (!Open(i)) scores[i] = -kInf;
    }
    return scores;
  }

  // `scores` plus each open arm's known reward (a non-finite one counts
  // as 0).
  std::vector<double> PlusKnown(std::vector<double> scores,
                                const KnownReward& known) const {
    if (!known) return scores;
    for (size_t i = 0; i < scores.size(); ++i) {
      if (Open(i)) scores[i] += Finite(known(arms_[i]));
    }
    return scores;
  }

  size_t Nearest(const Arm& arm) const {
    size_t best = 0;
    double best_distance = kInf;
    for (size_t i = 0; i < arms_.size(); ++i) {
      // Rank mismatches dominate ratio differences.
      const double d =
          std::abs(arms_[i].prune_ratio - arm.prune_ratio) +
          10.0 * std::abs(std::log2(static_cast<double>(arms_[i].rank)) -
                          std::log2(static_cast<double>(arm.rank)));
      if (d < best_distance) {
        best_distance = d;
        best = i;
      }
    }
    return best;
  }

  const BanditOptions options_;
  const std::vector<Arm> arms_;
  int64_t plays_ = 0;  // Rewards observed.
};

// UCB1, discounted UCB and sliding-window UCB differ only in how the
// per-arm counts and sums are kept.
class Ucb : public GridBandit {
 public:
  explicit Ucb(const BanditOptions& options)
      : GridBandit(options),
        counts_(arms_.size(), 0.0),
        sums_(arms_.size(), 0.0) {}

  Arm Choose(std::mt19937_64& rng, const KnownReward& known,
             const WithinPace&) override {
    double total = 0;
    for (double n : counts_) total += n;
    std::vector<double> index(arms_.size());
    for (size_t i = 0; i < arms_.size(); ++i) {
      if (counts_[i] <= 1e-12) {
        // Play every arm once first, unless what is known of it already
        // rules it out: nothing learnt can exceed reward_max.
        index[i] = known ? options_.reward_max : kInf;
        continue;
      }
      index[i] = sums_[i] / counts_[i] +
                 options_.exploration *
                     std::sqrt(2.0 * std::log(std::max(total, 1.0) + 1.0) /
                               counts_[i]);
    }
    return arms_[ArgMaxRandomTies(PlusKnown(OnlyOpen(std::move(index)), known),
                                  rng)];
  }

 protected:
  void Observe(size_t arm, double reward) override {
    switch (options_.kind) {
      case BanditKind::kDiscountedUcb:
        for (size_t i = 0; i < arms_.size(); ++i) {
          counts_[i] *= options_.discount;
          sums_[i] *= options_.discount;
        }
        break;
      case BanditKind::kSlidingWindowUcb:
        window_.emplace_back(arm, reward);
        if (static_cast<int>(window_.size()) > options_.window) {
          const auto [old_arm, old_reward] = window_.front();
          window_.pop_front();
          counts_[old_arm] -= 1;
          sums_[old_arm] -= old_reward;
        }
        break;
      default:
        break;
    }
    counts_[arm] += 1;
    sums_[arm] += reward;
  }

 private:
  std::vector<double> counts_;
  std::vector<double> sums_;
  std::deque<std::pair<size_t, double>> window_;
};

// Gaussian Thompson sampling with a conjugate normal prior centred in the
// reward range and a known noise scale of a quarter of the range.
class Thompson : public GridBandit {
 public:
  explicit Thompson(const BanditOptions& options)
      : GridBandit(options),
        counts_(arms_.size(), 0.0),
        sums_(arms_.size(), 0.0) {}

  Arm Choose(std::mt19937_64& rng, const KnownReward& known,
             const WithinPace&) override {
    const double range = options_.reward_max - options_.reward_min;
    const double prior_mean = options_.reward_min + 0.5 * range;
    const double prior_var = 0.25 * range * range;
    const double noise_var = range * range / 16.0;
    std::vector<double> samples(arms_.size());
    for (size_t i = 0; i < arms_.size(); ++i) {
      const double precision = 1.0 / prior_var + counts_[i] / noise_var;
      const double mean =
          (prior_mean / prior_var + sums_[i] / noise_var) / precision;
      samples[i] = mean + StandardNormal(rng) / std::sqrt(precision);
    }
    return arms_[ArgMaxRandomTies(
        PlusKnown(OnlyOpen(std::move(samples)), known), rng)];
  }

 protected:
  void Observe(size_t arm, double reward) override {
    counts_[arm] += 1;
    sums_[arm] += reward;
  }

 private:
  std::vector<double> counts_;
  std::vector<double> sums_;
};

// EXP3 (Auer et al. 2002) with rewards rescaled to [0, 1]; weights kept in
// log space.
class Exp3 : public GridBandit {
 public:
  explicit Exp3(const BanditOptions& options)
      : GridBandit(options), log_weights_(arms_.size(), 0.0) {}

  Arm Choose(std::mt19937_64& rng, const KnownReward&,
             const WithinPace&) override {
    const std::vector<double> p = Probabilities();
    double u = UniformUnit(rng);
    size_t last_open = 0;
    for (size_t i = 0; i < p.size(); ++i) {
      if (p[i] <= 0) continue;
      if (u < p[i]) return arms_[i];
      u -= p[i];
      last_open = i;
    }
    return arms_[last_open];
  }

 protected:
  void Observe(size_t arm, double reward) override {
    // The probability the arm had when chosen: weights only change here.
    const double p = Probabilities()[arm];
    if (!(p > 0)) return;  // Credited to a closed grid arm: no estimate.
    const double x = (reward - options_.reward_min) /
                     (options_.reward_max - options_.reward_min);
    log_weights_[arm] +=
        options_.exp3_gamma * (x / p) / static_cast<double>(arms_.size());
  }

 private:
  // Over the open arms only; closed arms get 0. Update() sees the same cap
  // as the Choose() before it, so replaying rewards rebuilds the weights.
  std::vector<double> Probabilities() const {
    double top = -kInf;
    double open = 0;
    for (size_t i = 0; i < arms_.size(); ++i) {
      if (!Open(i)) continue;
      top = std::max(top, log_weights_[i]);
      open += 1;
    }
    double total = 0;
    std::vector<double> p(log_weights_.size(), 0.0);
    for (size_t i = 0; i < p.size(); ++i) {
      if (!Open(i)) continue;
      p[i] = std::exp(log_weights_[i] - top);
      total += p[i];
    }
    for (size_t i = 0; i < p.size(); ++i) {
      if (!Open(i)) continue;
      p[i] = (1.0 - options_.exp3_gamma) * p[i] / total +
             options_.exp3_gamma / open;
    }
    return p;
  }

  std::vector<double> log_weights_;
};

// Plays its arm, pruned no more than the prune-and-tune pace allows, so a
// fixed arm and a bandit reach the same ratio on the same schedule.
class FixedArm : public Bandit {
 public:
  explicit FixedArm(const BanditOptions& options) : options_(options) {}
  Arm Choose(std::mt19937_64&, const KnownReward&, const WithinPace&) override {
    Arm arm = options_.fixed_arm;
    arm.prune_ratio = std::min(arm.prune_ratio, RatioCap(options_, plays_));
    return arm;
  }
  void Update(const Arm&, double reward) override {
    if (std::isfinite(reward)) ++plays_;
  }

 private:
  const BanditOptions options_;
  int64_t plays_ = 0;
};

class RandomArm : public GridBandit {
 public:
  using GridBandit::GridBandit;
  Arm Choose(std::mt19937_64& rng, const KnownReward&,
             const WithinPace&) override {
    std::vector<size_t> open;
    for (size_t i = 0; i < arms_.size(); ++i) {
      if (Open(i)) open.push_back(i);
    }
    return arms_[open[static_cast<size_t>(UniformUnit(rng) * open.size())]];
  }

 protected:
  void Observe(size_t, double) override {}
};

class Oracle : public GridBandit {
 public:
  using GridBandit::GridBandit;
  Arm Choose(std::mt19937_64& rng, const KnownReward&,
             const WithinPace&) override {
    std::vector<double> expected(arms_.size());
    for (size_t i = 0; i < arms_.size(); ++i) {
      expected[i] = options_.oracle(arms_[i]);
    }
    return arms_[ArgMaxRandomTies(OnlyOpen(std::move(expected)), rng)];
  }

 protected:
  void Observe(size_t, double) override {}
};

// FedSpine: per rank, a binary tree of cells over the ratio interval. Each
// leaf keeps discounted play counts and reward sums; its index is the
// discounted mean, a UCB bonus, and a bonus for its width. A leaf splits
// into halves that inherit half its statistics each once it has been
// played split_after * 2^depth times, so the tree refines where it plays.
class FedSpine : public Bandit {
 public:
  explicit FedSpine(const BanditOptions& options) : options_(options) {
    for (int64_t rank : options.space.ranks) {
      cells_.push_back(
          Cell{rank, options.space.min_ratio, options.space.max_ratio, 0});
    }
  }

  Arm Choose(std::mt19937_64& rng, const KnownReward& known,
             const WithinPace& within_pace) override {
    const double cap = RatioCap(options_, plays_);
    double total = 0;
    for (const Cell& cell : cells_) total += cell.count;
    std::vector<double> index(cells_.size());
    // The index less the width bonus, and whether the cell is on pace:
    // what capacity ties compare.
    std::vector<double> tied(cells_.size(), -kInf);
    std::vector<bool> on_pace(cells_.size(), false);
    // With a known reward: the cell's points that are within kKnownTie of
    // its best known reward, ascending.
    std::vector<std::vector<double>> best_points(cells_.size());
    for (size_t i = 0; i < cells_.size(); ++i) {
      const Cell& cell = cells_[i];
      if (cell.lo > cap + 1e-9) {  // Beyond the pace: not yet.
        index[i] = -kInf;
        continue;
      }
      // The cell's points, which what is known and the pace are asked about.
      const std::vector<double> ratios =
          known || within_pace ? Points(cell, cap) : std::vector<double>();
      double best_known = 0;
      if (known) {
        std::vector<double> values;
        for (double ratio : ratios) {
          values.push_back(Finite(known(Arm{ratio, cell.rank})));
        }
        best_known = *std::max_element(values.begin(), values.end());
        for (size_t j = 0; j < ratios.size(); ++j) {
          if (values[j] >= best_known - kKnownTie) {
            best_points[i].push_back(ratios[j]);
          }
        }
      }
      // A cell never played counts as one play of the device's mean: it is
      // tried when the bonus of one play outweighs what is known against it,
      // not before everything else.
      const bool unplayed = cell.plays == 0 && cell.count <= 1e-12;
      const double n = unplayed ? 1.0 : std::max(cell.count, 1e-6);
      const double mean = unplayed ? PriorMean() : cell.sum / n;
      // Exploring a cell that would lengthen the round costs every device.
      bool explorable = !within_pace;
      if (within_pace) {
        for (double ratio : ratios) {
          if (within_pace(Arm{ratio, cell.rank})) {
            explorable = true;
            break;
          }
        }
      }
      on_pace[i] = within_pace && explorable;
      const double bonus = explorable ? Bonus(total, n) : 0.0;
      tied[i] = mean + bonus + best_known;
      index[i] =
          tied[i] + (explorable ? options_.lipschitz * (cell.hi - cell.lo) : 0);
    }
    std::optional<size_t> capacity;
    if (options_.capacity_ties && within_pace) {
      capacity = MostCapacityNearBest(tied, on_pace, total);
    }
    const size_t chosen = capacity ? *capacity : ArgMaxRandomTies(index, rng);
    const Cell& cell = cells_[chosen];
    if (known) {
      // The least pruned of the best known points (on pace, if any is):
      // pruning costs accuracy that a known reward may not hold (no
      // validation data, or a cost within the tie).
      for (double ratio : best_points[chosen]) {
        if (!within_pace || within_pace(Arm{ratio, cell.rank})) {
          return Arm{ratio, cell.rank};
        }
      }
      return Arm{best_points[chosen].front(), cell.rank};
    }
    // Any point of the cell under the cap may be played; a uniform one
    // explores it.
    const double hi = std::min(cell.hi, std::max(cap, cell.lo));
    return Arm{cell.lo + UniformUnit(rng) * (hi - cell.lo), cell.rank};
  }

  void Update(const Arm& arm, double reward) override {
    if (!std::isfinite(reward)) return;
    reward = std::clamp(reward, options_.reward_min, options_.reward_max);
    for (Cell& cell : cells_) {
      cell.count *= options_.discount;
      cell.sum *= options_.discount;
    }
    all_count_ = options_.discount * all_count_ + 1;
    all_sum_ = options_.discount * all_sum_ + reward;
    all_squares_ = options_.discount * all_squares_ + reward * reward;
    ++plays_;
    const size_t i = Find(arm);
    Cell& cell = cells_[i];
    cell.count += 1;
    cell.sum += reward;
    cell.plays += 1;
    if (cell.depth < options_.max_depth &&
        cell.plays >= options_.split_after * (int64_t{1} << cell.depth)) {
      const double mid = 0.5 * (cell.lo + cell.hi);
      Cell right{cell.rank, mid, cell.hi, cell.depth + 1};
      right.count = 0.5 * cell.count;
      right.sum = 0.5 * cell.sum;
      right.plays = 0;
      cell.hi = mid;
      cell.depth += 1;
      cell.count *= 0.5;
      cell.sum *= 0.5;
      cell.plays = 0;
      cells_.push_back(right);
    }
  }

 private:
  struct Cell {
    int64_t rank;
    double lo, hi;
    int depth;
    double count = 0;   // Discounted.
    double sum = 0;     // Discounted.
    int64_t plays = 0;  // Since the cell was made.
  };

  // BanditOptions::capacity_ties: of the cells on pace whose index less
  // the width bonus (`tied`) is within one play's exploration bonus of the
  // best, the highest rank's least pruned; none when no cell on pace is.
  // The width bonus is left out: it favours cells that have not split,
  // whatever their rewards, and is larger than the tie.
  std::optional<size_t> MostCapacityNearBest(const std::vector<double>& tied,
                                             const std::vector<bool>& on_pace,
                                             double total) const {
    const size_t best = static_cast<size_t>(
        std::max_element(tied.begin(), tied.end()) - tied.begin());
    const double tie = Bonus(total, 1.0);
    std::optional<size_t> chosen;
    for (size_t i = 0; i < cells_.size(); ++i) {
      if (!on_pace[i] || !(tied[i] >= tied[best] - tie)) continue;
      if (!chosen || cells_[i].rank > cells_[*chosen].rank ||
          (cells_[i].rank == cells_[*chosen].rank &&
           cells_[i].lo < cells_[*chosen].lo)) {
        chosen = i;
      }
    }
    return chosen;
  }

  // The UCB bonus of a cell played `n` (discounted) times of `total`:
  // c * s * sqrt(2 ln n_total / n).
  double Bonus(double total, double n) const {
    return options_.exploration * Spread() *
           std::sqrt(2.0 * std::log(std::max(total, 1.0) + 1.0) / n);
  }

  // The discounted mean of the device's rewards over every cell; 0 before
  // the first.
  double PriorMean() const {
    return all_count_ > 0 ? all_sum_ / all_count_ : 0.0;
  }

  // The discounted standard deviation of the device's rewards, which
  // scales the exploration bonus (as UCB-V and UCB1-Tuned do): the bonus
  // is worth what arms are seen to differ by, not the whole reward range.
  // Until two plays: a quarter of the range. Never below 1% of it.
  double Spread() const {
    const double range = options_.reward_max - options_.reward_min;
    if (plays_ < 2) return 0.25 * range;
    const double mean = PriorMean();
    const double variance =
        std::max(0.0, all_squares_ / all_count_ - mean * mean);
    return std::max(std::sqrt(variance), 0.01 * range);
  }

  // The points of FedSpineGrid in `cell` under `cap` (its low end always);
  // the last cell also holds max_ratio.
  std::vector<double> Points(const Cell& cell, double cap) const {
    const std::vector<double> grid = FedSpineGrid(options_);
    const bool last = cell.hi >= options_.space.max_ratio;
    std::vector<double> points;
    for (double ratio : grid) {
      if (ratio < cell.lo - 1e-9) continue;
      if (!points.empty() &&
          (ratio > cap + 1e-9 || (!last && ratio > cell.hi - 1e-9))) {
        break;
      }
      points.push_back(ratio);
    }
    return points;
  }

  // The leaf holding `arm`: its rank (nearest if absent) and ratio.
  size_t Find(const Arm& arm) const {
    int64_t rank = options_.space.ranks.front();
    for (int64_t r : options_.space.ranks) {
      if (std::abs(std::log2(static_cast<double>(r)) -
                   std::log2(static_cast<double>(arm.rank))) <
          std::abs(std::log2(static_cast<double>(rank)) -
                   std::log2(static_cast<double>(arm.rank)))) {
        rank = r;
      }
    }
    const double ratio = std::clamp(arm.prune_ratio, options_.space.min_ratio,
                                    options_.space.max_ratio);
    // The leaves of a rank partition [min_ratio, max_ratio) and the last
    // one also holds max_ratio.
    for (size_t i = 0; i < cells_.size(); ++i) {
      const Cell& cell = cells_[i];
      if (cell.rank != rank) continue;
      const bool last = cell.hi >= options_.space.max_ratio;
      if (ratio >= cell.lo && (ratio < cell.hi || last)) return i;
    }
    LOG(FATAL) << "FedSpine cells do not cover ratio " << ratio;
  }

  const BanditOptions options_;
  std::vector<Cell> cells_;  // The leaves.
  int64_t plays_ = 0;        // Rewards observed (the pace).
  // Discounted count, sum and sum of squares of every reward observed.
  double all_count_ = 0, all_sum_ = 0, all_squares_ = 0;
};

}  // namespace

std::string ArmToString(const Arm& arm) {
  return absl::StrFormat("p=%.3f,r=%d", arm.prune_ratio, arm.rank);
}

absl::Status ValidateArmSpace(const ArmSpace& space) {
  if (!(space.min_ratio >= 0 && space.min_ratio <= space.max_ratio &&
        space.max_ratio < 1)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("arm space: need 0 <= min_ratio (%g) <= max_ratio "
                        "(%g) < 1",
                        space.min_ratio, space.max_ratio));
  }
  if (space.ratio_steps < 1 ||
      (space.ratio_steps == 1 && space.min_ratio != space.max_ratio)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "arm space: ratio_steps must be >= 1, and 1 only when min_ratio == "
        "max_ratio; got ",
        space.ratio_steps));
  }
  if (space.ranks.empty()) {
    return absl::InvalidArgumentError("arm space: no ranks");
  }
  for (size_t i = 0; i < space.ranks.size(); ++i) {
    if (space.ranks[i] < 1 || (i > 0 && space.ranks[i] <= space.ranks[i - 1])) {
      return absl::InvalidArgumentError(
          absl::StrCat("arm space: ranks must be >= 1 and ascending; got ",
                       absl::StrJoin(space.ranks, ",")));
    }
  }
  return absl::OkStatus();
}

double RatioCap(const BanditOptions& options, int64_t plays) {
  const ArmSpace& space = options.space;
  if (options.ramp_plays <= 0) return space.max_ratio;
  const double progress =
      std::min(1.0, static_cast<double>(plays) / options.ramp_plays);
  return space.min_ratio + (space.max_ratio - space.min_ratio) * progress;
}

std::vector<double> CandidateRatios(const BanditOptions& options, double cap) {
  if (options.kind == BanditKind::kFixed) {
    return {std::min(options.fixed_arm.prune_ratio, cap)};
  }
  std::vector<double> all;
  if (options.kind == BanditKind::kFedSpine) {
    all = FedSpineGrid(options);
  } else {
    for (const Arm& arm : GridArms(options.space)) {
      if (all.empty() || all.back() != arm.prune_ratio) {
        all.push_back(arm.prune_ratio);
      }
    }
  }
  std::vector<double> ratios;
  for (double ratio : all) {
    if (ratios.empty() || ratio <= cap + 1e-9) ratios.push_back(ratio);
  }
  return ratios;
}

std::vector<Arm> GridArms(const ArmSpace& space) {
  std::vector<Arm> arms;
  for (int i = 0; i < space.ratio_steps; ++i) {
    const double ratio =
        space.ratio_steps == 1
            ? space.min_ratio
            : space.min_ratio + (space.max_ratio - space.min_ratio) * i /
                                    (space.ratio_steps - 1);
    for (int64_t rank : space.ranks) arms.push_back(Arm{ratio, rank});
  }
  return arms;
}

absl::StatusOr<BanditKind> ParseBanditKind(absl::string_view name) {
  for (BanditKind kind :
       {BanditKind::kFedSpine, BanditKind::kUcb1, BanditKind::kDiscountedUcb,
        BanditKind::kSlidingWindowUcb, BanditKind::kThompson, BanditKind::kExp3,
        BanditKind::kFixed, BanditKind::kRandom, BanditKind::kOracle,
        BanditKind::kStatic}) {
    if (name == BanditKindName(kind)) return kind;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown bandit '", name,
      "' (want fedspine, ucb1, discounted_ucb, sliding_window_ucb, "
      "thompson, exp3, fixed, random, oracle or static)"));
}

std::string BanditKindName(BanditKind kind) {
  switch (kind) {
    case BanditKind::kFedSpine:
      return "fedspine";
    case BanditKind::kUcb1:
      return "ucb1";
    case BanditKind::kDiscountedUcb:
      return "discounted_ucb";
    case BanditKind::kSlidingWindowUcb:
      return "sliding_window_ucb";
    case BanditKind::kThompson:
      return "thompson";
    case BanditKind::kExp3:
      return "exp3";
    case BanditKind::kFixed:
      return "fixed";
    case BanditKind::kRandom:
      return "random";
    case BanditKind::kOracle:
      return "oracle";
    case BanditKind::kStatic:
      return "static";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<Bandit>> CreateBandit(
    const BanditOptions& options) {
  if (absl::Status s = ValidateArmSpace(options.space); !s.ok()) return s;
  if (!(options.discount > 0 && options.discount <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bandit discount must be in (0, 1]; got ", options.discount));
  }
  if (options.ramp_plays < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bandit ramp_plays must be >= 0; got ", options.ramp_plays));
  }
  if (options.window < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("bandit window must be >= 1; got ", options.window));
  }
  if (!(options.reward_min < options.reward_max)) {
    return absl::InvalidArgumentError("bandit reward_min must be < reward_max");
  }
  if (!(options.exp3_gamma > 0 && options.exp3_gamma <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bandit exp3_gamma must be in (0, 1]; got ", options.exp3_gamma));
  }
  if (options.exploration < 0 || options.lipschitz < 0 ||
      options.split_after < 1 || options.max_depth < 0 ||
      options.max_depth > 20) {
    return absl::InvalidArgumentError(
        "bandit exploration and lipschitz must be >= 0, split_after >= 1, "
        "max_depth in [0, 20]");
  }
  switch (options.kind) {
    case BanditKind::kFedSpine:
      return std::make_unique<FedSpine>(options);
    case BanditKind::kUcb1:
    case BanditKind::kDiscountedUcb:
    case BanditKind::kSlidingWindowUcb:
      return std::make_unique<Ucb>(options);
    case BanditKind::kThompson:
      return std::make_unique<Thompson>(options);
    case BanditKind::kExp3:
      return std::make_unique<Exp3>(options);
    case BanditKind::kFixed: {
      const Arm& arm = options.fixed_arm;
      if (!(arm.prune_ratio >= 0 && arm.prune_ratio < 1) || arm.rank < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("fixed arm ", ArmToString(arm),
                         " needs a ratio in [0, 1) and a rank >= 1"));
      }
      return std::make_unique<FixedArm>(options);
    }
    case BanditKind::kRandom:
      return std::make_unique<RandomArm>(options);
    case BanditKind::kStatic: {
      BanditOptions densest = options;
      densest.fixed_arm =
          Arm{options.space.min_ratio, options.space.ranks.back()};
      return std::make_unique<FixedArm>(densest);
    }
    case BanditKind::kOracle:
      if (!options.oracle) {
        return absl::InvalidArgumentError(
            "the oracle bandit needs the expected reward of every arm");
      }
      return std::make_unique<Oracle>(options);
  }
  return absl::InvalidArgumentError("unknown bandit kind");
}

double UniformUnit(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

}  // namespace fedge::strategies
