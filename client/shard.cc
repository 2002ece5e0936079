#include "client/shard.h"

#include "absl/strings/str_cat.h"

#include "model/partition.h"

namespace fedge::client {

absl::StatusOr<model::Partition> PartitionShards(const model::Dataset& train,
                                                 const ShardSpec& spec) {
  if (spec.count < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard count ", spec.count, ": need N >= 1"));
  }
  if (spec.partition != "iid" && spec.partition != "dirichlet") {
    return absl::InvalidArgumentError(absl::StrCat(
        "partition '", spec.partition, "' is not iid or dirichlet"));
  }
  absl::StatusOr<model::PublicSplit> split =
      model::SplitPublic(train.size(), spec.public_fraction, spec.seed);
  if (!split.ok()) return split.status();
  return spec.partition == "iid"
             ? model::PartitionIid(split->private_indices, spec.count,
                                   spec.seed)
             : model::PartitionDirichlet(split->private_indices,
                                         model::Labels(train), 10, spec.count,
                                         spec.alpha, spec.seed, 32);
}

absl::StatusOr<model::Dataset> LoadShard(const ShardSpec& spec) {
  if (spec.count < 1 || spec.index < 0 || spec.index >= spec.count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shard ", spec.index, "/", spec.count, ": need 0 <= I < N"));
  }
  if (spec.partition != "iid" && spec.partition != "dirichlet") {
    return absl::InvalidArgumentError(absl::StrCat(
        "partition '", spec.partition, "' is not iid or dirichlet"));
  }
  absl::StatusOr<model::Dataset> train =
      model::LoadFashionMnist(spec.data_dir, model::Split::kTrain);
  if (!train.ok()) return train.status();
  absl::StatusOr<model::Partition> parts = PartitionShards(*train, spec);
  if (!parts.ok()) return parts.status();
  return model::Subset(*train, (*parts)[spec.index]);
}

}  // namespace fedge::client
