#include "lora/aggregate.h"

#include "gtest/gtest.h"
#include <torch/types.h>

#include "lora/lora.h"

namespace fedge::lora {
namespace {

constexpr double kAlpha = 16.0;
const char kPath[] = "layers.0.self_attn.q_proj";

NamedTensors Adapter(const at::Tensor& a, const at::Tensor& b) {
  NamedTensors t;
  t.insert(std::string(kPath) + ".adapter.lora_A", a);
  t.insert(std::string(kPath) + ".adapter.lora_B", b);
  return t;
}

// Naive reference: sum_k w_k (alpha / r_k) sum_j B_k[:, j] A_k[j, :] / sum_k
// w_k.
at::Tensor MeanProduct(const std::vector<ClientAdapters>& clients) {
  at::Tensor sum;
  double total = 0;
  for (const ClientAdapters& c : clients) {
    const at::Tensor a =
        c.adapters[std::string(kPath) + ".adapter.lora_A"].to(torch::kFloat64);
    const at::Tensor b =
        c.adapters[std::string(kPath) + ".adapter.lora_B"].to(torch::kFloat64);
    at::Tensor product = torch::zeros({b.size(0), a.size(1)}, torch::kFloat64);
    for (int64_t j = 0; j < a.size(0); ++j) {
      product += torch::outer(b.select(1, j), a.select(0, j));
    }
    product *= kAlpha / a.size(0) * c.weight;
    sum = sum.defined() ? sum + product : product;
    total += c.weight;
  }
  return sum / total;
}

at::Tensor Product(const NamedTensors& adapter, int64_t rank) {
  return torch::matmul(adapter[std::string(kPath) + ".adapter.lora_B"],
                       adapter[std::string(kPath) + ".adapter.lora_A"])
             .to(torch::kFloat64) *
         (kAlpha / rank);
}

TEST(AggregateTest, EqualRankSharedAEqualsFedAvgOfProductsForBothMethods) {
  torch::manual_seed(0);
  const at::Tensor shared_a = torch::randn({4, 6});
  const std::vector<ClientAdapters> clients = {
      {Adapter(shared_a, torch::randn({5, 4})), 1.0},
      {Adapter(shared_a, torch::randn({5, 4})), 3.0},
      {Adapter(shared_a, torch::randn({5, 4})), 2.0},
  };
  const at::Tensor expected = MeanProduct(clients);

  for (RankMethod method : {RankMethod::kZeroPad, RankMethod::kSvd}) {
    absl::StatusOr<GlobalAdapter> global = Aggregate(clients, method, kAlpha);
    ASSERT_TRUE(global.ok()) << global.status();
    absl::StatusOr<RankedAdapter> mine = AdapterForRank(*global, 4);
    ASSERT_TRUE(mine.ok()) << mine.status();
    EXPECT_TRUE(
        torch::allclose(Product(mine->adapters, 4), expected, 1e-4, 1e-5))
        << "method " << static_cast<int>(method);
    EXPECT_LT(mine->max_truncation_error, 1e-5);
  }
}

TEST(AggregateTest, ZeroPadAveragesFactorsNotProducts) {
  torch::manual_seed(1);
  const std::vector<ClientAdapters> clients = {
      {Adapter(torch::randn({2, 6}), torch::randn({5, 2})), 1.0},
      {Adapter(torch::randn({2, 6}), torch::randn({5, 2})), 1.0},
  };
  GlobalAdapter global = *Aggregate(clients, RankMethod::kZeroPad, kAlpha);
  const RankedAdapter mine = *AdapterForRank(global, 2);
  // The cross terms make it differ from the mean product.
  EXPECT_FALSE(torch::allclose(Product(mine.adapters, 2), MeanProduct(clients),
                               1e-3, 1e-3));
}

TEST(AggregateTest, SvdOfMixedRanksReconstructsUpToTheReportedError) {
  torch::manual_seed(2);
  const std::vector<ClientAdapters> clients = {
      {Adapter(torch::randn({2, 12}), torch::randn({10, 2})), 100},
      {Adapter(torch::randn({4, 12}), torch::randn({10, 4})), 50},
      {Adapter(torch::randn({8, 12}), torch::randn({10, 8})), 25},
  };
  const at::Tensor mean = MeanProduct(clients);
  absl::StatusOr<GlobalAdapter> global =
      Aggregate(clients, RankMethod::kSvd, kAlpha);
  ASSERT_TRUE(global.ok()) << global.status();
  EXPECT_EQ(global->max_rank, 8);

  double previous = 2.0;
  for (int64_t rank : {2, 4, 8, 10}) {
    absl::StatusOr<RankedAdapter> mine = AdapterForRank(*global, rank);
    ASSERT_TRUE(mine.ok());
    const double actual =
        ((Product(mine->adapters, rank) - mean).norm() / mean.norm())
            .item<double>();
    EXPECT_NEAR(actual, mine->max_truncation_error, 1e-4) << "rank " << rank;
    EXPECT_LE(actual, previous + 1e-9);  // Higher rank, smaller error.
    previous = actual;
  }
  EXPECT_LT(previous, 1e-5);  // Rank 10 = full rank of a 10 x 12 update.
}

TEST(AggregateTest, ZeroPadKeepsEachClientsEffectiveUpdateAcrossRanks) {
  torch::manual_seed(3);
  // One client of rank 2: the global adapter at rank 8 (after padding) and
  // back at rank 2 must encode the same scale * B A.
  const std::vector<ClientAdapters> one = {
      {Adapter(torch::randn({2, 6}), torch::randn({5, 2})), 1.0}};
  const std::vector<ClientAdapters> with_big = {
      one[0], {Adapter(torch::zeros({8, 6}), torch::zeros({5, 8})), 1e-12}};
  GlobalAdapter global = *Aggregate(with_big, RankMethod::kZeroPad, kAlpha);
  EXPECT_EQ(global.max_rank, 8);
  for (int64_t rank : {2, 8}) {
    const RankedAdapter mine = *AdapterForRank(global, rank);
    EXPECT_TRUE(torch::allclose(Product(mine.adapters, rank), MeanProduct(one),
                                1e-4, 1e-5))
        << rank;
  }
}

TEST(AggregateTest, ResultDoesNotDependOnClientOrder) {
  torch::manual_seed(4);
  std::vector<ClientAdapters> clients = {
      {Adapter(torch::randn({2, 6}), torch::randn({5, 2})), 3},
      {Adapter(torch::randn({4, 6}), torch::randn({5, 4})), 1},
  };
  const GlobalAdapter forward = *Aggregate(clients, RankMethod::kSvd, kAlpha);
  std::swap(clients[0], clients[1]);
  const GlobalAdapter backward = *Aggregate(clients, RankMethod::kSvd, kAlpha);
  EXPECT_TRUE(torch::allclose(forward.deltas[kPath], backward.deltas[kPath],
                              1e-6, 1e-6));
}

TEST(AggregateTest, RejectsMismatchedOrBadClients) {
  const NamedTensors good = Adapter(torch::ones({2, 6}), torch::ones({5, 2}));
  NamedTensors other_shape = Adapter(torch::ones({2, 7}), torch::ones({5, 2}));
  NamedTensors nan = Adapter(torch::ones({2, 6}), torch::ones({5, 2}));
  nan[std::string(kPath) + ".adapter.lora_B"][0][0] = std::nanf("");
  NamedTensors half;
  half.insert(std::string(kPath) + ".adapter.lora_A", torch::ones({2, 6}));
  NamedTensors rank_mismatch =
      Adapter(torch::ones({2, 6}), torch::ones({5, 3}));

  const std::vector<std::vector<ClientAdapters>> bad = {
      {},          {{good, 1}, {other_shape, 1}}, {{good, 1}, {nan, 1}},
      {{half, 1}}, {{rank_mismatch, 1}},          {{good, 0}},
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    for (RankMethod method : {RankMethod::kZeroPad, RankMethod::kSvd}) {
      EXPECT_EQ(Aggregate(bad[i], method, kAlpha).status().code(),
                absl::StatusCode::kInvalidArgument)
          << "case " << i;
    }
  }
  EXPECT_FALSE(
      AdapterForRank(*Aggregate({{good, 1}}, RankMethod::kSvd, kAlpha), 0)
          .ok());
  EXPECT_FALSE(ParseRankMethod("flora").ok());
  EXPECT_EQ(*ParseRankMethod("svd"), RankMethod::kSvd);
}

TEST(AggregateTest, AdapterChangeIsTheProductsDifferenceWithoutTheResidual) {
  torch::manual_seed(3);
  const NamedTensors sent_adapter =
      Adapter(torch::randn({4, 6}), torch::randn({5, 4}));
  NamedTensors sent = sent_adapter;
  // A frozen residual travels with the adapter; it is not trained.
  sent.insert(std::string(kPath) + "." + kResidualA, torch::randn({2, 6}));
  sent.insert(std::string(kPath) + "." + kResidualB, torch::randn({5, 2}));
  const NamedTensors update =
      Adapter(torch::randn({4, 6}), torch::randn({5, 4}));
  const auto change = AdapterChange(update, sent, kAlpha);
  ASSERT_TRUE(change.ok()) << change.status();
  ASSERT_EQ(change->size(), 1u);
  EXPECT_TRUE(torch::allclose((*change)[kPath].to(torch::kFloat64),
                              Product(update, 4) - Product(sent_adapter, 4),
                              1e-5, 1e-5));
  const NamedTensors wider =
      Adapter(torch::randn({4, 7}), torch::randn({5, 4}));
  EXPECT_EQ(AdapterChange(wider, sent, kAlpha).status().code(),
            absl::StatusCode::kInvalidArgument);
  NamedTensors other;
  other.insert("layers.1.mlp.up_proj.adapter.lora_A", torch::randn({4, 6}));
  other.insert("layers.1.mlp.up_proj.adapter.lora_B", torch::randn({5, 4}));
  EXPECT_EQ(AdapterChange(other, sent, kAlpha).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(AggregateTest, ReviveDeadComponentsKeepsTheProductAndEnablesTraining) {
  // A rank-1 delta handed out at rank 4: three components are dead.
  GlobalAdapter global;
  global.alpha = kAlpha;
  global.deltas.insert(
      kPath, torch::outer(torch::arange(1.0, 7.0), torch::arange(1.0, 5.0)));
  RankedAdapter ranked = *AdapterForRank(global, 4);
  const at::Tensor before = Product(ranked.adapters, 4);
  EXPECT_EQ(ReviveDeadComponents(ranked.adapters, 7), 3);
  const at::Tensor a = ranked.adapters[std::string(kPath) + ".adapter.lora_A"];
  for (int64_t i = 0; i < 4; ++i) EXPECT_GT(a[i].abs().sum().item<double>(), 0);
  EXPECT_TRUE(torch::allclose(Product(ranked.adapters, 4), before, 1e-5, 1e-6));
  EXPECT_EQ(ReviveDeadComponents(ranked.adapters, 7), 0);
  // Deterministic in the seed.
  RankedAdapter again = *AdapterForRank(global, 4);
  ReviveDeadComponents(again.adapters, 7);
  EXPECT_TRUE(
      torch::equal(again.adapters[std::string(kPath) + ".adapter.lora_A"], a));
}

}  // namespace
}  // namespace fedge::lora
