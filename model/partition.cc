#include "model/partition.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fedge::model {
namespace {

// std::shuffle's algorithm is unspecified by the standard; write
// Fisher-Yates out so partitions are the same with any standard library.
void Shuffle(std::vector<int64_t>& v, std::mt19937_64& rng) {
  for (size_t i = v.size(); i > 1; --i) {
    std::uniform_int_distribution<size_t> pick(0, i - 1);
    std::swap(v[i - 1], v[pick(rng)]);
  }
}

}  // namespace

std::vector<int64_t> Permutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> order(static_cast<size_t>(std::max<int64_t>(n, 0)));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed);
  Shuffle(order, rng);
  return order;
}

absl::StatusOr<PublicSplit> SplitPublic(int64_t n, double fraction,
                                        uint64_t seed) {
  if (!(fraction >= 0.0 && fraction <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("public fraction ", fraction, " is outside [0, 1]"));
  }
  if (n < 0) return absl::InvalidArgumentError("negative sample count");
  std::vector<int64_t> all(n);
  std::iota(all.begin(), all.end(), 0);
  std::mt19937_64 rng(seed);
  Shuffle(all, rng);
  const auto cut = static_cast<int64_t>(std::llround(fraction * n));
  PublicSplit split;
  split.public_indices.assign(all.begin(), all.begin() + cut);
  split.private_indices.assign(all.begin() + cut, all.end());
  std::sort(split.public_indices.begin(), split.public_indices.end());
  std::sort(split.private_indices.begin(), split.private_indices.end());
  return split;
}

absl::StatusOr<Partition> PartitionIid(absl::Span<const int64_t> indices,
                                       int num_clients, uint64_t seed) {
  if (num_clients < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_clients must be at least 1, got ", num_clients));
  }
  std::vector<int64_t> order(indices.begin(), indices.end());
  std::mt19937_64 rng(seed);
  Shuffle(order, rng);
  Partition parts(num_clients);
  for (size_t i = 0; i < order.size(); ++i) {
    parts[i % num_clients].push_back(order[i]);
  }
  return parts;
}

absl::StatusOr<Partition> PartitionDirichlet(absl::Span<const int64_t> indices,
                                             absl::Span<const int64_t> labels,
                                             int num_classes, int num_clients,
                                             double alpha, uint64_t seed,
                                             int64_t min_samples) {
  if (num_clients < 1 || num_classes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("need at least one client and one class, got ",
                     num_clients, " clients and ", num_classes, " classes"));
  }
  if (!(alpha > 0.0) || !std::isfinite(alpha)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Dirichlet alpha must be positive, got ", alpha));
  }
  if (min_samples < 0 ||
      min_samples * num_clients > static_cast<int64_t>(indices.size())) {
    return absl::FailedPreconditionError(
        absl::StrCat(indices.size(), " samples cannot give ", num_clients,
                     " clients at least ", min_samples, " each"));
  }
  std::vector<std::vector<int64_t>> by_class(num_classes);
  for (int64_t index : indices) {
    if (index < 0 || index >= static_cast<int64_t>(labels.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("sample index ", index, " has no label"));
    }
    const int64_t label = labels[index];
    if (label < 0 || label >= num_classes) {
      return absl::InvalidArgumentError(
          absl::StrCat("label ", label, " of sample ", index,
                       " is outside [0, ", num_classes, ")"));
    }
    by_class[label].push_back(index);
  }

  std::mt19937_64 rng(seed);
  std::gamma_distribution<double> gamma(alpha, 1.0);
  constexpr int kMaxAttempts = 100;
  for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
    Partition parts(num_clients);
    for (std::vector<int64_t> members : by_class) {
      Shuffle(members, rng);
      // Dirichlet(alpha) as normalised Gamma(alpha, 1) draws.
      std::vector<double> weights(num_clients);
      double total = 0.0;
      for (double& w : weights) total += (w = gamma(rng));
      if (total <= 0.0) {  // Every draw underflowed (tiny alpha).
        weights.assign(num_clients, 0.0);
        weights[std::uniform_int_distribution<int>(0, num_clients - 1)(rng)] =
            1;
        total = 1.0;
      }
      // Cut points from the cumulative proportions; the last part takes the
      // remainder, so every member is placed exactly once.
      double cumulative = 0.0;
      size_t start = 0;
      for (int c = 0; c < num_clients; ++c) {
        cumulative += weights[c] / total;
        const size_t end =
            c == num_clients - 1
                ? members.size()
                : std::min(
                      members.size(),
                      static_cast<size_t>(std::llround(
                          cumulative * static_cast<double>(members.size()))));
        for (size_t i = start; i < std::max(start, end); ++i) {
          parts[c].push_back(members[i]);
        }
        start = std::max(start, end);
      }
    }
    bool enough = true;
    for (const auto& part : parts) {
      enough = enough && static_cast<int64_t>(part.size()) >= min_samples;
    }
    if (enough) {
      for (auto& part : parts) Shuffle(part, rng);
      return parts;
    }
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "no Dirichlet(", alpha, ") draw in ", kMaxAttempts,
      " attempts gave every one of ", num_clients, " clients at least ",
      min_samples, " samples; raise alpha or lower min_samples"));
}

}  // namespace fedge::model
