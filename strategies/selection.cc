#include "strategies/selection.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

#include "strategies/bandit.h"

namespace fedge::strategies {
namespace {

// Fisher-Yates with platform-independent draws.
template <typename T>
void Shuffle(std::vector<T>& items, std::mt19937_64& rng) {
  for (size_t i = items.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(UniformUnit(rng) * i);
    std::swap(items[i - 1], items[j]);
  }
}

}  // namespace

absl::StatusOr<SelectionKind> ParseSelectionKind(absl::string_view name) {
  if (name == "all") return SelectionKind::kAll;
  if (name == "random") return SelectionKind::kRandomK;
  if (name == "deadline") return SelectionKind::kDeadlineAware;
  if (name == "poisson") return SelectionKind::kPoisson;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown client selection '", name,
                   "' (want all, random, deadline or poisson)"));
}

Selection SelectClients(const std::vector<Candidate>& candidates,
                        const SelectionOptions& options,
                        double deadline_seconds, std::mt19937_64& rng) {
  const int64_t n = static_cast<int64_t>(candidates.size());
  int64_t k = options.clients_per_round > 0
                  ? std::min<int64_t>(options.clients_per_round, n)
                  : n;
  std::vector<size_t> order(candidates.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  Selection selection;
  int64_t invite = k;
  switch (options.kind) {
    case SelectionKind::kAll:
      invite = n;
      break;
    case SelectionKind::kPoisson: {
      // One draw per candidate, in candidate order, whatever the others
      // drew: independent inclusions.
      std::vector<size_t> drawn;
      for (size_t i = 0; i < order.size(); ++i) {
        if (UniformUnit(rng) < options.sampling_rate) drawn.push_back(i);
      }
      order = std::move(drawn);
      invite = static_cast<int64_t>(order.size());
      k = invite;
      break;
    }
    case SelectionKind::kRandomK:
      Shuffle(order, rng);
      break;
    case SelectionKind::kDeadlineAware: {
      invite = std::min<int64_t>(
          n, static_cast<int64_t>(
                 std::ceil(k * std::max(1.0, options.overcommit) - 1e-9)));
      Shuffle(order, rng);
      // Fitting devices first, then unknown ones, then by expected time.
      auto tier = [&](size_t i) {
        const double t = candidates[i].expected_seconds;
        if (t < 0) return 1;
        return t <= deadline_seconds ? 0 : 2;
      };
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        const int ta = tier(a), tb = tier(b);
        if (ta != tb) return ta < tb;
        if (ta == 2) {
          return candidates[a].expected_seconds <
                 candidates[b].expected_seconds;
        }
        return false;
      });
      break;
    }
  }
  order.resize(static_cast<size_t>(invite));
  std::sort(order.begin(), order.end());
  for (size_t i : order) selection.invited.push_back(candidates[i].id);
  selection.target_updates =
      options.kind == SelectionKind::kAll ? invite : std::min(k, invite);
  return selection;
}

}  // namespace fedge::strategies
