// A device's private data in a simulated or test federation: shard I of N
// of Fashion-MNIST's training images that the coordinator's public split
// (the base model's pretraining data) left over, IID or label-skewed
// (per-class Dirichlet; every device gets at least 32 samples, or a tenth
// of the average share in federations of more than ~170 devices).
#pragma once

#include <string>

#include "absl/status/statusor.h"

#include "model/dataset.h"
#include "model/partition.h"

namespace fedge::client {

struct ShardSpec {
  std::string data_dir;
  int index = 0;                        // I in [0, count).
  int count = 1;                        // N.
  std::string partition = "dirichlet";  // "iid" or "dirichlet".
  double alpha = 0.5;                   // Dirichlet concentration.
  double public_fraction = 0.1;  // As fedge-pretrain's --public_fraction.
  uint64_t seed = 1;             // As fedge-pretrain's --seed.
};

// InvalidArgument naming the bad field; NotFound if the data is missing.
absl::StatusOr<model::Dataset> LoadShard(const ShardSpec& spec);

// Every device's indices into `train` (the whole Fashion-MNIST training
// split) for a federation of spec.count shards; LoadShard's shard I is
// Subset(train, result[I]). spec.index and spec.data_dir are not used.
absl::StatusOr<model::Partition> PartitionShards(const model::Dataset& train,
                                                 const ShardSpec& spec);

}  // namespace fedge::client
