// Server-side aggregation of client updates, streamed: each update is
// folded in as it arrives, so memory for the mean grows with the model, not
// with the number of clients.
//
// Works on named tensors in full-model coordinates: dense weights (plain
// FedAvg), or the full LoRA products scale * B A per Linear (FlexLoRA-style
// aggregation, papers.md section 9). A client trained on a pruned
// sub-model reports, with its values scattered back to full coordinates, a
// coverage tensor (1 where it held a value); a position is averaged over
// the clients that cover it and keeps the reference (the current global
// value) where none does.
//
// Internally every update is a delta from the reference, so norm clipping
// bounds each client's influence and robust statistics compare like with
// like. The mean's sum is kept in the reference's type (at least float32),
// since a float64 sum would be twice a float32 model; summing n changes
// rounds within n float32 roundings of their size, far below the changes
// (docs/architecture.md). Norms are computed in float64.
//
// - kMean: weighted mean (FedAvg). Streams.
// - kMedian: coordinate-wise median over covering clients, unweighted; the
//   lower middle value for an even count. Keeps every delta (clients x
//   model memory), as any exact median must.
// - kTrimmedMean: per coordinate, drops floor(trim_fraction * n) of the n
//   covering clients' deltas at each end and averages the rest,
//   unweighted. Keeps every delta.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include <ATen/core/Tensor.h>

#include "model/model.h"

namespace fedge::strategies {

using model::NamedTensors;

enum class AggregatorKind { kMean, kMedian, kTrimmedMean };

// "mean", "median", "trimmed_mean". InvalidArgument otherwise.
absl::StatusOr<AggregatorKind> ParseAggregatorKind(absl::string_view name);

struct AggregatorOptions {
  AggregatorKind kind = AggregatorKind::kMean;
  double trim_fraction = 0.1;  // kTrimmedMean, in [0, 0.5).
  // > 0: each client's delta (all tensors together) is scaled down to this
  // L2 norm if longer. 0: no clipping.
  double clip_norm = 0;
  // Differential privacy (strategies/privacy.h), kMean only. With
  // `fixed_denominator` > 0 the mean is the sum of the weighted, clipped
  // deltas, plus Gaussian noise of `noise_stddev` on every coordinate a
  // client covered, divided by `fixed_denominator` instead of the weights
  // that came, so it reveals neither who came nor how many. Noise needs a
  // fixed denominator.
  double noise_stddev = 0;
  double fixed_denominator = 0;
  // Seeds the noise (LibTorch's CPU generator); the caller draws it from
  // the operating system unless a run asks to be repeatable.
  uint64_t noise_seed = 0;
};

// Not thread-safe: the caller serialises Add() (the coordinator holds its
// round lock).
class UpdateAggregator {
 public:
  // `reference` holds the current global values (float tensors); held,
  // not copied: nothing may write into them while the aggregator lives.
  // InvalidArgument for bad options or an empty or non-finite reference.
  static absl::StatusOr<std::unique_ptr<UpdateAggregator>> Create(
      const NamedTensors& reference, const AggregatorOptions& options);

  // Folds in one client's values. `values` must have exactly the
  // reference's names and shapes, all finite; `coverage` may be empty
  // (every position held) or give, for some names, a same-shape 0/1 mask.
  // `weight` > 0 (e.g. the example count; ignored by median and trimmed
  // mean). Returns the L2 norm of the client's delta before clipping.
  // InvalidArgument naming the tensor for any mismatch; the aggregate is
  // unchanged then.
  absl::StatusOr<double> Add(const NamedTensors& values,
                             const NamedTensors& coverage, double weight);

  // Folds in what secure aggregation reveals of `clients` clients: the sum
  // of their weighted, masked changes, never one of them. `weighted_sum`
  // has every reference name, full shapes, finite values: the sum over the
  // clients of weight x (value - reference) x coverage. `coverage_sum`
  // gives, per name, the sum over the clients of weight x coverage: a
  // scalar (0-dim) where each covered the whole tensor, or the reference's
  // shape; a name without an entry counts as covered whole by weights
  // summing to `clients`. The coordinator computes it itself from the
  // plans it chose, which are public to it. Clipping is the clients' (a sum
  // cannot be clipped): FailedPrecondition with clip_norm > 0, and for the
  // median and trimmed mean, which need each update. InvalidArgument
  // naming the tensor for any mismatch, non-finite or negative value;
  // the aggregate is unchanged then.
  absl::Status AddSum(const NamedTensors& weighted_sum,
                      const NamedTensors& coverage_sum, int64_t clients);

  int64_t count() const { return count_; }

  // The reference plus the aggregated delta (noised, with noise_stddev;
  // each call draws the same noise). FailedPrecondition if nothing was
  // added.
  absl::StatusOr<NamedTensors> Finish() const;

 private:
  struct Slot {
    at::Tensor reference;  // As given (shared, never written).
    // kMean: sum of w * delta * coverage, in the reference's type (at
    // least float32), from the first update on (AddWeighted).
    at::Tensor weighted;
    at::Tensor coverage;     // kMean: sum of w * coverage (float64), if any
                             // partial.
    double full_weight = 0;  // kMean: sum of w of clients covering all.
    std::vector<at::Tensor> deltas;  // Robust kinds: per client.
    std::vector<at::Tensor> covers;  // Robust kinds: per client, or {}.
    // kMean: coverage += weight * `cover` (same shape).
    void AddCoverage(const at::Tensor& cover, double weight);
    // kMean: weighted += weight * `delta`, which the caller gives up: the
    // first call takes its memory as the sum, so a round opens without a
    // model-sized allocation and the sum costs none.
    void AddWeighted(at::Tensor delta, double weight);
  };

  // InvalidArgument naming the first of `tensors` the reference lacks
  // (`what`: the argument, for the message).
  absl::Status NamesKnown(const NamedTensors& tensors,
                          absl::string_view what) const;

  UpdateAggregator(const AggregatorOptions& options) : options_(options) {}

  const AggregatorOptions options_;
  std::map<std::string, Slot> slots_;
  std::vector<std::string> order_;  // The reference's names, in order.
  int64_t count_ = 0;
};

}  // namespace fedge::strategies
