#include "client/shard.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

#include "model/partition.h"

namespace fedge::client {
namespace {

absl::Status CheckPartition(const ShardSpec& spec) {
  if (spec.partition != "iid" && spec.partition != "dirichlet") {
    return absl::InvalidArgumentError(absl::StrCat(
        "partition '", spec.partition, "' is not iid or dirichlet"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<model::Partition> PartitionShards(const model::Dataset& train,
                                                 const ShardSpec& spec) {
  if (spec.count < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard count ", spec.count, ": need N >= 1"));
  }
  if (absl::Status s = CheckPartition(spec); !s.ok()) return s;
  absl::StatusOr<model::PublicSplit> split =
      model::SplitPublic(train.size(), spec.public_fraction, spec.seed);
  if (!split.ok()) return split.status();
  if (spec.partition == "iid") {
    return model::PartitionIid(split->private_indices, spec.count, spec.seed);
  }
  // At least 32 samples per device; in federations too large for that to
  // be likely under label skew (more than ~170 devices), a tenth of the
  // average share.
  const int64_t average =
      static_cast<int64_t>(split->private_indices.size()) / spec.count;
  const int64_t min_samples =
      std::max<int64_t>(1, std::min<int64_t>(32, average / 10));
  return model::PartitionDirichlet(split->private_indices, model::Labels(train),
                                   10, spec.count, spec.alpha, spec.seed,
                                   min_samples);
}

absl::StatusOr<model::Dataset> LoadShard(const ShardSpec& spec) {
  if (spec.count < 1 || spec.index < 0 || spec.index >= spec.count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shard ", spec.index, "/", spec.count, ": need 0 <= I < N"));
  }
  if (absl::Status s = CheckPartition(spec); !s.ok()) return s;
  absl::StatusOr<model::Dataset> train =
      model::LoadFashionMnist(spec.data_dir, model::Split::kTrain);
  if (!train.ok()) return train.status();
  absl::StatusOr<model::Partition> parts = PartitionShards(*train, spec);
  if (!parts.ok()) return parts.status();
  return model::Subset(*train, (*parts)[spec.index]);
}

}  // namespace fedge::client
