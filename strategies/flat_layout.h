// The flat vector that secure aggregation masks (secagg/protocol.h): a
// client's change to every tensor of the aggregator's reference, in the
// reference's full shapes and order, one value per position, row-major.
//
// Under secure aggregation a client contributes its change scattered to
// the full shape (zeros where its plan removed units, pruning::
// ScatterTensors), clipped to an L2 norm, so that every client's vector
// has the same length whatever its plan and rank; the coordinator reads
// only the sum (Unflatten, then UpdateAggregator::AddSum with the coverage
// sums it computes from the plans it chose). LoRA changes go as the full
// products scale x B A, exactly what fedge's FlexLoRA-style mean needs, so
// secure aggregation leaves the aggregate as it is (docs/privacy.md).
//
// Immutable after Create; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

#include "model/model.h"

namespace fedge::strategies {

using model::NamedTensors;

class FlatLayout {
 public:
  // The names and shapes of `reference` (its values are not kept), in its
  // order. InvalidArgument for an empty reference.
  static absl::StatusOr<FlatLayout> Create(const NamedTensors& reference);
  // Names and shapes, in order: what the coordinator tells its devices.
  using Shapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;
  // InvalidArgument for no entries, an empty or repeated name, or a
  // negative dimension.
  static absl::StatusOr<FlatLayout> FromShapes(const Shapes& shapes);
  Shapes shapes() const;

  int64_t length() const { return length_; }

  // `tensors` (exactly the layout's names and shapes, finite floats) in
  // one vector, scaled down to L2 norm `clip_norm` if longer (0: not
  // clipped); `norm`, if given, gets the norm before clipping.
  // InvalidArgument naming the tensor for a missing, extra, misshapen or
  // non-finite one.
  absl::StatusOr<std::vector<float>> Flatten(const NamedTensors& tensors,
                                             double clip_norm,
                                             double* norm = nullptr) const;

  // The inverse, as float64 tensors (a sum of many clients' vectors).
  // InvalidArgument for a vector of the wrong length or a non-finite value.
  absl::StatusOr<NamedTensors> Unflatten(const std::vector<double>& flat) const;

 private:
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    int64_t offset = 0, size = 0;
  };
  std::vector<Entry> entries_;
  int64_t length_ = 0;
};

}  // namespace fedge::strategies
