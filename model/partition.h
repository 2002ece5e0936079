// Splitting a dataset's sample indices among clients. Every function is
// deterministic given its seed (std::mt19937_64 and libstdc++'s
// distributions, the same on amd64 and arm64) and uses every given sample
// exactly once.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace fedge::model {

// One list of sample indices per client.
using Partition = std::vector<std::vector<int64_t>>;

struct PublicSplit {
  std::vector<int64_t> public_indices;   // Kept by the coordinator.
  std::vector<int64_t> private_indices;  // Shared out among the clients.
};

// Holds out round(fraction * n) of the samples 0..n-1, chosen uniformly at
// random, as the coordinator's public split (pretraining and evaluation).
// Both lists come back sorted. InvalidArgument if fraction is outside [0, 1].
absl::StatusOr<PublicSplit> SplitPublic(int64_t n, double fraction,
                                        uint64_t seed);

// A uniformly random permutation of 0..n-1 (empty for n <= 0).
std::vector<int64_t> Permutation(int64_t n, uint64_t seed);

// Shuffles `indices` and deals them into `num_clients` parts whose sizes
// differ by at most one. InvalidArgument if num_clients < 1.
absl::StatusOr<Partition> PartitionIid(absl::Span<const int64_t> indices,
                                       int num_clients, uint64_t seed);

// Label-skewed non-IID split: for each class, the class's samples are shared
// among the clients in proportions drawn from Dirichlet(alpha). Small alpha
// gives each client few classes; large alpha approaches IID. `labels` is
// indexed by sample id (labels[indices[i]] is sample i's class, in
// [0, num_classes)). Draws are repeated (up to 100 times) until every client
// has at least `min_samples` samples. InvalidArgument for bad arguments or
// labels; FailedPrecondition if min_samples cannot be met.
absl::StatusOr<Partition> PartitionDirichlet(absl::Span<const int64_t> indices,
                                             absl::Span<const int64_t> labels,
                                             int num_classes, int num_clients,
                                             double alpha, uint64_t seed,
                                             int64_t min_samples = 1);

}  // namespace fedge::model
