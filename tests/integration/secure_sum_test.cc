// Secure aggregation end to end below the round engine: devices whose
// plans cover different parts of the model flatten their clipped changes
// (strategies::FlatLayout), encode them on the ring (secagg::RingCodec),
// mask them (secagg::Device); the coordinator unmasks only their sum
// (secagg::Coordinator), reads it back and folds it with the coverage sums
// of the plans (strategies::UpdateAggregator::AddSum). The mean must be
// the one the plain path gives for the same clipped changes, to within the
// ring's rounding, whoever dropped.
#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include <torch/types.h>

#include "client/secure_update.h"
#include "coordinator/global_model.h"
#include "secagg/protocol.h"
#include "strategies/aggregator.h"
#include "strategies/flat_layout.h"
#include "tests/testing/tiny_models.h"

namespace fedge {
namespace {

using strategies::NamedTensors;

NamedTensors Reference() {
  NamedTensors t;
  t.insert("a", torch::full({6, 8}, 0.25));
  t.insert("b", torch::zeros({16}));
  return t;
}

struct Change {
  NamedTensors values;    // Zeros where the device's plan held nothing.
  NamedTensors coverage;  // "a" only, for a pruned device.
};

// Odd devices are pruned: their plan keeps a random half of a's rows.
Change DeviceChange(int64_t device) {
  torch::manual_seed(static_cast<uint64_t>(device) + 1);
  Change c;
  at::Tensor a = torch::randn({6, 8}) * 0.3;
  if (device % 2 == 1) {
    const at::Tensor rows =
        (torch::randperm(6) < 3).to(torch::kFloat).unsqueeze(1).expand({6, 8});
    a = a * rows;
    c.coverage.insert("a", rows.contiguous());
  }
  c.values.insert("a", a);
  c.values.insert("b", torch::randn({16}) * 0.3);
  return c;
}

TEST(SecureSumTest, TheUnmaskedSumFoldsToThePlainMeanOfHeterogeneousPlans) {
  const int64_t n = 12;
  const double clip = 1.0;
  const NamedTensors reference = Reference();
  const auto layout = strategies::FlatLayout::Create(reference);
  ASSERT_TRUE(layout.ok());
  const secagg::RingCodec ring(n, clip);
  secagg::Parameters p;
  p.devices = n;
  p.neighbours = static_cast<int>(n - 1);  // SecAgg's full graph.
  p.threshold = 7;
  p.length = layout->length();
  p.round = 3;
  p.graph_seed = 17;
  ASSERT_TRUE(secagg::ValidateParameters(p).ok());
  // Devices 3 and 8 drop after sharing keys (their changes are not in the
  // sum); device 5 drops after masking (its change is, but it does not
  // help unmask).
  const std::set<int64_t> before = {3, 8}, after = {5};

  std::vector<secagg::Device> devices;
  for (int64_t i = 0; i < n; ++i) devices.emplace_back(p, i);
  secagg::Coordinator coordinator(p);
  for (secagg::Device& d : devices) {
    ASSERT_TRUE(coordinator.AddAdvertisement(*d.Advertise()).ok());
  }
  for (int64_t i = 0; i < n; ++i) {
    auto shares = devices[i].ShareKeys(coordinator.AdvertisementsFor(i));
    ASSERT_TRUE(shares.ok()) << shares.status();
    ASSERT_TRUE(coordinator.AddShares(i, *shares).ok());
  }
  auto plain = strategies::UpdateAggregator::Create(reference, {});
  NamedTensors cover;  // What the coordinator knows from the plans.
  cover.insert("a", torch::zeros({6, 8}, torch::kFloat64));
  cover.insert("b", torch::zeros({}, torch::kFloat64));
  for (int64_t i = 0; i < n; ++i) {
    if (before.count(i) > 0) continue;
    const Change c = DeviceChange(i);
    const auto flat = layout->Flatten(c.values, clip);
    ASSERT_TRUE(flat.ok()) << flat.status();
    auto masked =
        devices[i].MaskInput(ring.Encode(*flat), coordinator.SharesFor(i));
    ASSERT_TRUE(masked.ok()) << masked.status();
    ASSERT_TRUE(coordinator.AddMaskedInput(i, *masked).ok());
    // The plain path: the same clipped change, in the clear.
    const auto clipped = layout->Unflatten({flat->begin(), flat->end()});
    NamedTensors values;
    for (const auto& item : *clipped) {
      values.insert(item.key(),
                    (item.value() + reference[item.key()]).to(torch::kFloat32));
    }
    ASSERT_TRUE((*plain)->Add(values, c.coverage, 1.0).ok());
    const at::Tensor* rows = c.coverage.find("a");
    cover["a"].add_(rows != nullptr ? *rows : torch::ones({6, 8}));
    cover["b"].add_(1.0);
  }
  const std::set<int64_t> survivors = coordinator.Survivors();
  ASSERT_EQ(survivors.size(), static_cast<size_t>(n - 2));
  for (int64_t i : survivors) {
    if (after.count(i) > 0) continue;
    auto shares = devices[i].Unmask(survivors);
    ASSERT_TRUE(shares.ok()) << shares.status();
    ASSERT_TRUE(coordinator.AddUnmaskShares(*shares).ok());
  }
  const auto sum = coordinator.Sum();
  ASSERT_TRUE(sum.ok()) << sum.status();
  const auto read = layout->Unflatten(ring.Decode(*sum));
  ASSERT_TRUE(read.ok()) << read.status();
  auto secure = strategies::UpdateAggregator::Create(reference, {});
  ASSERT_TRUE((*secure)
                  ->AddSum(*read, cover, static_cast<int64_t>(survivors.size()))
                  .ok());
  const NamedTensors want = *(*plain)->Finish();
  const NamedTensors got = *(*secure)->Finish();
  // Each of the 10 encodings rounds by at most half a step; a mean over
  // at least one covering device divides that by its count.
  const double bound = 10 * 0.5 / ring.scale;
  for (const char* name : {"a", "b"}) {
    const double error =
        (got[name].to(torch::kFloat64) - want[name].to(torch::kFloat64))
            .abs()
            .max()
            .item<double>();
    EXPECT_LE(error, bound + 1e-7) << name;  // float32 results.
    EXPECT_GT((want[name] - reference[name]).abs().max().item<double>(), 0.01);
  }
}

// What a device computes for itself under secure aggregation
// (client::SecureChange) and what the coordinator folds from the sum
// (GlobalModel::AddSecureSum) commit the same global model as the plain
// path, for a pruned low-rank device beside an unpruned high-rank one, in
// a round after one that made the global change non-zero.
TEST(SecureSumTest, DeviceComputedChangesCommitWhatThePlainPathCommits) {
  using coordinator::GlobalModel;
  using coordinator::Mode;
  const auto make = [] {
    torch::manual_seed(0);
    return *GlobalModel::Create(testing::TinyVit(16), Mode::kLora, {});
  };
  const auto train = [](NamedTensors payload, uint64_t seed) {
    torch::manual_seed(seed);
    for (auto& item : payload) {
      item.value() = item.value() + 0.05 * torch::randn_like(item.value());
    }
    return payload;
  };
  std::unique_ptr<GlobalModel> plain = make(), secure = make();
  const std::string config = plain->base().ConfigJson();
  const double alpha = plain->lora().alpha;
  const auto layout = secure->UpdateLayout();
  ASSERT_TRUE(layout.ok()) << layout.status();
  for (int round = 0; round < 2; ++round) {
    const pruning::PruningPlan full = *plain->Plan(0.0);
    const pruning::PruningPlan half = *plain->Plan(0.5);
    const std::vector<pruning::PruningPlan> plans = {full, half};
    const std::vector<int64_t> ranks = {8, 2};
    auto plain_round = plain->BeginRound({});
    auto secure_round = secure->BeginRound({});
    ASSERT_TRUE(plain_round.ok() && secure_round.ok());
    std::vector<double> sum(static_cast<size_t>(layout->length()), 0.0);
    for (size_t d = 0; d < plans.size(); ++d) {
      const NamedTensors sent = *plain->Payload(plans[d], ranks[d], d + 1);
      const NamedTensors update = train(sent, 10 * round + d);
      ASSERT_TRUE(
          plain->AddUpdate(*plain_round, plans[d], update, sent, 1.0).ok());
      double norm = 0;
      const auto change = client::SecureChange(config, plans[d], alpha, update,
                                               sent, *layout, 0, &norm);
      ASSERT_TRUE(change.ok()) << change.status();
      EXPECT_GT(norm, 0);
      for (size_t k = 0; k < sum.size(); ++k) sum[k] += (*change)[k];
    }
    const auto read = layout->Unflatten(sum);
    ASSERT_TRUE(read.ok()) << read.status();
    ASSERT_TRUE(secure->AddSecureSum(*secure_round, *read, plans).ok());
    ASSERT_TRUE(plain->Commit(*plain_round, 0.5).ok());
    ASSERT_TRUE(secure->Commit(*secure_round, 0.5).ok());
    const NamedTensors want = plain->State(), got = secure->State();
    for (const auto& item : want) {
      if (item.key().rfind("scores.", 0) == 0) continue;  // Not reported.
      const at::Tensor* mine = got.find(item.key());
      ASSERT_NE(mine, nullptr) << item.key();
      EXPECT_TRUE(torch::allclose(mine->to(torch::kFloat64),
                                  item.value().to(torch::kFloat64), 1e-5, 1e-6))
          << item.key() << " in round " << round;
    }
    EXPECT_GT(
        (want["layers.0.self_attn.q_proj.weight"]).abs().sum().item<double>(),
        0);
  }
}

}  // namespace
}  // namespace fedge
