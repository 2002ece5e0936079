// Rank-heterogeneous aggregation of LoRA adapters: clients train adapters of
// different ranks; the coordinator combines them into one global adapter and
// hands each client back an adapter of its own rank.
//
// Two methods (../shared/papers.md section 5):
// - kZeroPad (HetLoRA-style): each client's A and B are zero-padded to the
//   largest rank and averaged factor by factor. Cheap, but the average of
//   factors is not the average of products (cross terms), and padding
//   dilutes high-rank clients.
// - kSvd (FlexLoRA-style, fedge's default): the full updates
//   scale_k * B_k A_k are averaged, which is exact, and each client gets the
//   truncated SVD of the average at its rank; the truncation error is
//   reported.
//
// Adapters of different ranks have different scales (alpha / r); factors
// are rescaled so that every effective update scale * B A is preserved.
// Averages are weighted (normally by example count) and accumulate in
// float64.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

#include "lora/lora.h"

namespace fedge::lora {

enum class RankMethod { kZeroPad, kSvd };

// Parses "zeropad" / "svd". InvalidArgument otherwise.
absl::StatusOr<RankMethod> ParseRankMethod(absl::string_view name);

struct ClientAdapters {
  // As ExtractAdapters gives them: "<path>.adapter.lora_A" [r, in] and
  // "<path>.adapter.lora_B" [out, r]; one rank per client.
  NamedTensors adapters;
  double weight = 1.0;  // > 0, e.g. the client's example count.
};

// The aggregated global adapter.
struct GlobalAdapter {
  RankMethod method = RankMethod::kSvd;
  double alpha = 16.0;
  int64_t max_rank = 0;  // Largest client rank seen.
  // kZeroPad: the averaged factors at max_rank, named as adapters are.
  NamedTensors factors;
  // kSvd: per Linear path, the averaged full update scale * B A [out, in].
  NamedTensors deltas;
};

// Aggregates `clients` (at least one). InvalidArgument, naming the client
// and tensor, if they disagree on target Linears or shapes, hold an A
// without its B, have a rank of 0, non-finite values or a weight <= 0.
absl::StatusOr<GlobalAdapter> Aggregate(
    absl::Span<const ClientAdapters> clients, RankMethod method, double alpha);

struct RankedAdapter {
  NamedTensors adapters;  // At the requested rank, ready for LoadAdapters.
  // Per Linear path: ||full - rank-r update||_F / ||full||_F (0 if full is 0).
  std::map<std::string, double> truncation_error;
  double max_truncation_error = 0;
};

// The global adapter at `rank` (truncated for kZeroPad; truncated SVD for
// kSvd; a rank above max_rank is zero-padded). InvalidArgument if rank < 1.
absl::StatusOr<RankedAdapter> AdapterForRank(const GlobalAdapter& global,
                                             int64_t rank);

// Gives rank components that carry nothing (a zero row of A, with its
// column of B zero, as the SVD of a delta of lower rank leaves them) a fresh
// A row initialised like a new adapter's, Kaiming-uniform from `seed`; B
// stays zero, so scale * B A is unchanged. Without this a component with
// A = 0 and B = 0 gets no gradient and never trains (e.g. every component
// in round 0, when the global delta is zero). A component is dead when both
// |A_i| and |B_:,i| are at most 1e-3 of the largest row of A and column of
// B (the SVD splits singular values evenly, so this is 1e-6 of the
// strongest component: round-off).
// Returns how many were revived.
int64_t ReviveDeadComponents(NamedTensors& adapters, uint64_t seed);

// Per Linear path, the full update scale * B A that `adapters` encode.
// InvalidArgument for a malformed set.
absl::StatusOr<NamedTensors> AdapterDeltas(const NamedTensors& adapters,
                                           double alpha);

// Per Linear path, what a device's training changed: AdapterDeltas of its
// trained `update` minus AdapterDeltas of the adapters it was `sent` (the
// frozen residual sent with them, IsResidual, is not part of the change).
// The coordinator folds it into its global change (coordinator::
// GlobalModel); under secure aggregation the device computes it itself.
// InvalidArgument for a malformed set, or a path `sent` lacks or holds at
// another shape.
absl::StatusOr<NamedTensors> AdapterChange(const NamedTensors& update,
                                           const NamedTensors& sent,
                                           double alpha);

}  // namespace fedge::lora
