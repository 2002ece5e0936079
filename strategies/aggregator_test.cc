#include "strategies/aggregator.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include <torch/types.h>

namespace fedge::strategies {
namespace {

NamedTensors Named(at::Tensor a, at::Tensor b) {
  NamedTensors t;
  t.insert("a", std::move(a));
  t.insert("b", std::move(b));
  return t;
}

struct Client {
  NamedTensors values;
  NamedTensors coverage;
  double weight;
};

// Clients with random values and random partial coverage of "a".
std::vector<Client> MakeClients(int n, bool partial, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<Client> clients;
  for (int k = 0; k < n; ++k) {
    Client c{Named(torch::randn({3, 4}), torch::randn({5})), NamedTensors(),
             1.0 + k};
    if (partial && k % 2 == 1) {
      at::Tensor mask = (torch::rand({3, 4}) > 0.4).to(torch::kFloat);
      c.values["a"] = c.values["a"] * mask;  // Scattered: zeros elsewhere.
      c.coverage.insert("a", mask);
    }
    clients.push_back(std::move(c));
  }
  return clients;
}

NamedTensors Reference() {
  return Named(torch::full({3, 4}, 0.5), torch::zeros({5}));
}

// Per element: the statistic over the clients that cover it.
at::Tensor NaiveElementwise(
    const std::vector<Client>& clients, const std::string& name,
    const at::Tensor& ref,
    const std::function<double(std::vector<double>, std::vector<double>)>&
        stat) {
  at::Tensor out = ref.clone().to(torch::kFloat64).flatten();
  for (int64_t i = 0; i < out.numel(); ++i) {
    std::vector<double> deltas, weights;
    for (const Client& c : clients) {
      const at::Tensor* cov = c.coverage.find(name);
      if (cov && cov->flatten()[i].item<float>() == 0) continue;
      deltas.push_back(c.values[name].flatten()[i].item<double>() -
                       ref.flatten()[i].item<double>());
      weights.push_back(c.weight);
    }
    if (!deltas.empty()) out[i] += stat(deltas, weights);
  }
  return out.view(ref.sizes());
}

double WeightedMean(std::vector<double> d, std::vector<double> w) {
  double s = 0, sw = 0;
  for (size_t i = 0; i < d.size(); ++i) s += w[i] * d[i], sw += w[i];
  return s / sw;
}

double LowerMedian(std::vector<double> d, std::vector<double>) {
  std::sort(d.begin(), d.end());
  return d[(d.size() - 1) / 2];
}

double Trimmed(std::vector<double> d, std::vector<double>) {
  std::sort(d.begin(), d.end());
  const size_t k = static_cast<size_t>(std::floor(0.2 * d.size()));
  double s = 0;
  for (size_t i = k; i < d.size() - k; ++i) s += d[i];
  return s / static_cast<double>(d.size() - 2 * k);
}

void ExpectMatches(AggregatorKind kind,
                   double (*stat)(std::vector<double>, std::vector<double>),
                   bool partial) {
  const std::vector<Client> clients = MakeClients(7, partial, 42);
  AggregatorOptions options;
  options.kind = kind;
  options.trim_fraction = 0.2;
  auto agg = UpdateAggregator::Create(Reference(), options);
  ASSERT_TRUE(agg.ok()) << agg.status();
  for (const Client& c : clients) {
    ASSERT_TRUE((*agg)->Add(c.values, c.coverage, c.weight).ok());
  }
  auto result = (*agg)->Finish();
  ASSERT_TRUE(result.ok()) << result.status();
  for (const std::string name : {"a", "b"}) {
    const at::Tensor expected =
        NaiveElementwise(clients, name, Reference()[name], stat);
    EXPECT_TRUE(torch::allclose((*result)[name].to(torch::kFloat64), expected,
                                1e-5, 1e-6))
        << name << "\n"
        << (*result)[name] << "\n"
        << expected;
  }
}

TEST(AggregatorTest, MeanMatchesNaiveWeightedMean) {
  ExpectMatches(AggregatorKind::kMean, WeightedMean, false);
}
TEST(AggregatorTest, MeanWithPartialCoverage) {
  ExpectMatches(AggregatorKind::kMean, WeightedMean, true);
}
TEST(AggregatorTest, MedianMatchesNaive) {
  ExpectMatches(AggregatorKind::kMedian, LowerMedian, true);
}
TEST(AggregatorTest, TrimmedMeanMatchesNaive) {
  ExpectMatches(AggregatorKind::kTrimmedMean, Trimmed, true);
}

TEST(AggregatorTest, AFloat32SumRoundsWithinTheRecursiveSummationBound) {
  // A dense round's shape of numbers: weights near 0.05, 16 clients'
  // changes of about 1e-3, weighted by example counts. The sum is kept in
  // float32; the mean must stay within one unit in the last place of the
  // float32 result plus recursive summation's bound, 16 roundings of the
  // weighted changes' size (Higham, Accuracy and Stability, 4.2), of the
  // exact float64 mean.
  torch::manual_seed(5);
  const int64_t n = 100000, clients = 16;
  const at::Tensor reference = torch::randn({n}) * 0.05;
  NamedTensors ref;
  ref.insert("w", reference);
  auto agg = UpdateAggregator::Create(ref, AggregatorOptions());
  ASSERT_TRUE(agg.ok()) << agg.status();
  at::Tensor sum = torch::zeros({n}, torch::kFloat64);
  at::Tensor sum_abs = torch::zeros({n}, torch::kFloat64);
  double weights = 0;
  for (int64_t k = 0; k < clients; ++k) {
    const double weight = 100 + 200 * k;
    NamedTensors values;
    values.insert("w", reference + torch::randn({n}) * 1e-3);
    ASSERT_TRUE((*agg)->Add(values, NamedTensors(), weight).ok());
    const at::Tensor delta =
        values["w"].to(torch::kFloat64) - reference.to(torch::kFloat64);
    sum += weight * delta;
    sum_abs += weight * delta.abs();
    weights += weight;
  }
  const at::Tensor want = sum / weights + reference.to(torch::kFloat64);
  const at::Tensor got = (*(*agg)->Finish())["w"];
  ASSERT_EQ(got.scalar_type(), torch::kFloat32);
  const double eps = std::numeric_limits<float>::epsilon();
  const at::Tensor ulp = want.abs() * eps;
  const at::Tensor bound = ulp + clients * eps * sum_abs / weights;
  EXPECT_TRUE(
      ((got.to(torch::kFloat64) - want).abs() <= bound).all().item<bool>());
  // Not trivially: the bound is far below the changes themselves.
  EXPECT_LT(bound.max().item<double>(), 1e-6);
}

TEST(AggregatorTest, UncoveredPositionsKeepTheReference) {
  auto agg = UpdateAggregator::Create(Reference(), {});
  ASSERT_TRUE(agg.ok());
  NamedTensors coverage;
  at::Tensor mask = torch::zeros({3, 4});
  mask[0][0] = 1;
  coverage.insert("a", mask);
  ASSERT_TRUE(
      (*agg)
          ->Add(Named(torch::full({3, 4}, 2.0) * mask, torch::ones({5})),
                coverage, 1.0)
          .ok());
  const NamedTensors out = *(*agg)->Finish();
  EXPECT_FLOAT_EQ(out["a"][0][0].item<float>(), 2.0f);
  EXPECT_FLOAT_EQ(out["a"][2][3].item<float>(), 0.5f);
  EXPECT_TRUE(torch::equal(out["b"], torch::ones({5})));
}

TEST(AggregatorTest, ClippingBoundsEachClientsDelta) {
  AggregatorOptions options;
  options.clip_norm = 1.0;
  auto agg = UpdateAggregator::Create(Reference(), options);
  // Delta of norm 10 in "b" only.
  NamedTensors values = Named(torch::full({3, 4}, 0.5), torch::zeros({5}));
  values["b"][0] = 10.0;
  auto norm = (*agg)->Add(values, NamedTensors(), 1.0);
  ASSERT_TRUE(norm.ok());
  EXPECT_NEAR(*norm, 10.0, 1e-9);
  const NamedTensors out = *(*agg)->Finish();
  EXPECT_NEAR(out["b"][0].item<float>(), 1.0, 1e-6);
}

// Differential privacy's mean: clipped sums over a fixed denominator, not
// over the weights that came.
TEST(AggregatorTest, AFixedDenominatorDividesTheClippedSum) {
  AggregatorOptions options;
  options.clip_norm = 1.0;
  options.fixed_denominator = 4.0;
  auto agg = UpdateAggregator::Create(Reference(), options);
  ASSERT_TRUE(agg.ok()) << agg.status();
  // The reference is 0.5 in "a" and 0 in "b".
  NamedTensors far = Named(torch::full({3, 4}, 0.5), torch::zeros({5}));
  far["b"][0] = 10.0;  // Delta of norm 10: clipped to 1.
  NamedTensors near = Named(torch::full({3, 4}, 0.5), torch::zeros({5}));
  near["b"][1] = 0.5;  // Delta of norm 0.5: kept.
  ASSERT_TRUE((*agg)->Add(far, NamedTensors(), 1.0).ok());
  ASSERT_TRUE((*agg)->Add(near, NamedTensors(), 1.0).ok());
  const NamedTensors out = *(*agg)->Finish();
  EXPECT_NEAR(out["b"][0].item<float>(), 1.0 / 4, 1e-6);
  EXPECT_NEAR(out["b"][1].item<float>(), 0.5 / 4, 1e-6);
  EXPECT_NEAR(out["a"][0][0].item<float>(), 0.5, 1e-6);
}

TEST(AggregatorTest, NoiseHasItsStddevWhereCoveredAndNowhereElse) {
  NamedTensors reference;
  reference.insert("w", torch::zeros({200, 500}));
  NamedTensors values;
  values.insert("w", torch::zeros({200, 500}));
  NamedTensors coverage;
  at::Tensor mask = torch::zeros({200, 500});
  mask.slice(0, 0, 100) = 1;  // The first half of the rows is covered.
  coverage.insert("w", mask);
  AggregatorOptions options;
  options.fixed_denominator = 2.0;
  options.noise_stddev = 3.0;
  options.noise_seed = 7;
  auto agg = UpdateAggregator::Create(reference, options);
  ASSERT_TRUE(agg.ok()) << agg.status();
  ASSERT_TRUE((*agg)->Add(values, coverage, 1.0).ok());
  const at::Tensor out = (*(*agg)->Finish())["w"];
  const at::Tensor covered = out.slice(0, 0, 100);
  // 50,000 draws of N(0, 1.5^2): the sample stddev is within 2%.
  EXPECT_NEAR(covered.std().item<double>(), 1.5, 0.03);
  EXPECT_NEAR(covered.mean().item<double>(), 0.0, 0.03);
  EXPECT_EQ(out.slice(0, 100, 200).abs().max().item<float>(), 0.0f);
  // The same seed draws the same noise; another seed other noise.
  EXPECT_TRUE(torch::equal((*(*agg)->Finish())["w"], out));
  options.noise_seed = 8;
  auto other = UpdateAggregator::Create(reference, options);
  ASSERT_TRUE((*other)->Add(values, coverage, 1.0).ok());
  EXPECT_FALSE(torch::equal((*(*other)->Finish())["w"], out));
}

TEST(AggregatorTest, ATransposedUpdateFoldsLikeAContiguousOne) {
  // A value with a transposed layout (a view of a [4, 3] tensor), with and
  // without clipping: the same norm and the same mean as its copy.
  const at::Tensor a = torch::arange(12.0).view({4, 3}).t();
  for (const double clip : {0.0, 1.0}) {
    AggregatorOptions options;
    options.clip_norm = clip;
    auto strided = UpdateAggregator::Create(Reference(), options);
    auto contiguous = UpdateAggregator::Create(Reference(), options);
    const auto n1 =
        (*strided)->Add(Named(a, torch::ones({5})), NamedTensors(), 1.0);
    const auto n2 =
        (*contiguous)
            ->Add(Named(a.contiguous(), torch::ones({5})), NamedTensors(), 1.0);
    ASSERT_TRUE(n1.ok() && n2.ok()) << clip;
    EXPECT_DOUBLE_EQ(*n1, *n2) << clip;
    EXPECT_TRUE(torch::equal((*(*strided)->Finish())["a"],
                             (*(*contiguous)->Finish())["a"]))
        << clip;
  }
}

TEST(AggregatorTest, ScaledAttackerMovesMeanButNotMedian) {
  for (AggregatorKind kind : {AggregatorKind::kMean, AggregatorKind::kMedian,
                              AggregatorKind::kTrimmedMean}) {
    AggregatorOptions options;
    options.kind = kind;
    options.trim_fraction = 0.2;
    auto agg = UpdateAggregator::Create(Reference(), options);
    for (int k = 0; k < 7; ++k) {
      ASSERT_TRUE(
          (*agg)
              ->Add(Named(torch::full({3, 4}, 1.0), torch::full({5}, 1.0)),
                    NamedTensors(), 1.0)
              .ok());
    }
    ASSERT_TRUE(
        (*agg)
            ->Add(Named(torch::full({3, 4}, -1000.0), torch::full({5}, 1000.0)),
                  NamedTensors(), 1.0)
            .ok());
    const NamedTensors out = *(*agg)->Finish();
    const double b = out["b"][0].item<double>();
    if (kind == AggregatorKind::kMean) {
      EXPECT_GT(b, 100.0);
    } else {
      EXPECT_NEAR(b, 1.0, 1e-6);
    }
  }
}

TEST(AggregatorTest, RejectsBadUpdatesWithoutChangingTheAggregate) {
  auto agg = UpdateAggregator::Create(Reference(), {});
  ASSERT_TRUE((*agg)
                  ->Add(Named(torch::ones({3, 4}), torch::ones({5})),
                        NamedTensors(), 1.0)
                  .ok());
  auto expect_rejected = [&](const NamedTensors& values,
                             const NamedTensors& coverage, double weight,
                             const std::string& fragment) {
    auto s = (*agg)->Add(values, coverage, weight);
    ASSERT_FALSE(s.ok()) << fragment;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find(fragment), std::string::npos)
        << s.status();
  };
  at::Tensor nan = torch::ones({5});
  nan[2] = NAN;
  expect_rejected(Named(torch::ones({3, 4}), nan), NamedTensors(), 1.0, "NaN");
  expect_rejected(Named(torch::ones({4, 3}), torch::ones({5})), NamedTensors(),
                  1.0, "shape");
  NamedTensors missing;
  missing.insert("a", torch::ones({3, 4}));
  missing.insert("c", torch::ones({5}));
  expect_rejected(missing, NamedTensors(), 1.0, "lacks tensor 'b'");
  expect_rejected(Named(torch::ones({3, 4}), torch::ones({5})), NamedTensors(),
                  0.0, "weight");
  NamedTensors bad_cover;
  bad_cover.insert("a", torch::full({3, 4}, 0.5));
  expect_rejected(Named(torch::ones({3, 4}), torch::ones({5})), bad_cover, 1.0,
                  "0/1 mask");
  EXPECT_EQ((*agg)->count(), 1);
  const NamedTensors out = *(*agg)->Finish();
  EXPECT_TRUE(torch::equal(out["b"], torch::ones({5})));
}

// What secure aggregation reveals, the sum of the weighted changes and the
// coverage sums, gives the mean that adding each client gives.
TEST(AggregatorTest, ASumOfClientsFoldsLikeTheClients) {
  const std::vector<Client> clients = MakeClients(5, /*partial=*/true, 7);
  const NamedTensors reference = Reference();
  auto each = UpdateAggregator::Create(reference, {});
  auto summed = UpdateAggregator::Create(reference, {});
  NamedTensors sum = Named(torch::zeros({3, 4}, torch::kFloat64),
                           torch::zeros({5}, torch::kFloat64));
  NamedTensors cover;
  cover.insert("a", torch::zeros({3, 4}, torch::kFloat64));
  cover.insert("b", torch::zeros({}, torch::kFloat64));
  for (const Client& c : clients) {
    ASSERT_TRUE((*each)->Add(c.values, c.coverage, c.weight).ok());
    for (const std::string name : {"a", "b"}) {
      at::Tensor delta = c.values[name].to(torch::kFloat64) - reference[name];
      const at::Tensor* mask = c.coverage.find(name);
      if (mask != nullptr) delta.mul_(*mask);
      sum[name].add_(delta, c.weight);
      cover[name].add_(mask != nullptr ? *mask : torch::ones({}), c.weight);
    }
  }
  ASSERT_TRUE((*summed)->AddSum(sum, cover, 5).ok());
  EXPECT_EQ((*summed)->count(), 5);
  const NamedTensors want = *(*each)->Finish();
  const NamedTensors got = *(*summed)->Finish();
  for (const std::string name : {"a", "b"}) {
    EXPECT_TRUE(torch::allclose(got[name], want[name], 1e-6, 1e-6)) << name;
  }
}

TEST(AggregatorTest, ASumIsRefusedWhereItCannotBeFolded) {
  const NamedTensors sum = Named(torch::ones({3, 4}), torch::ones({5}));
  for (AggregatorKind kind :
       {AggregatorKind::kMedian, AggregatorKind::kTrimmedMean}) {
    AggregatorOptions options;
    options.kind = kind;
    auto agg = UpdateAggregator::Create(Reference(), options);
    EXPECT_EQ((*agg)->AddSum(sum, NamedTensors(), 2).code(),
              absl::StatusCode::kFailedPrecondition);
  }
  AggregatorOptions clipped;
  clipped.clip_norm = 1;
  EXPECT_EQ((*UpdateAggregator::Create(Reference(), clipped))
                ->AddSum(sum, NamedTensors(), 2)
                .code(),
            absl::StatusCode::kFailedPrecondition);
  auto agg = UpdateAggregator::Create(Reference(), {});
  const auto refused = [&](const NamedTensors& s, const NamedTensors& c,
                           int64_t n, const std::string& fragment) {
    const absl::Status status = (*agg)->AddSum(s, c, n);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << fragment;
    EXPECT_NE(status.message().find(fragment), std::string::npos) << status;
  };
  refused(sum, NamedTensors(), 0, "0 clients");
  refused(Named(torch::ones({4, 3}), torch::ones({5})), NamedTensors(), 2,
          "sum of 'a'");
  at::Tensor nan = torch::ones({5});
  nan[1] = NAN;
  refused(Named(torch::ones({3, 4}), nan), NamedTensors(), 2, "sum of 'b'");
  NamedTensors negative;
  negative.insert("b", torch::full({}, -1.0));
  refused(sum, negative, 2, "coverage sum of 'b'");
  NamedTensors unknown;
  unknown.insert("c", torch::ones({}));
  refused(sum, unknown, 2, "unknown tensor 'c'");
  EXPECT_EQ((*agg)->count(), 0);
}

TEST(AggregatorTest, FinishNeedsAnUpdateAndOptionsAreChecked) {
  auto agg = UpdateAggregator::Create(Reference(), {});
  EXPECT_EQ((*agg)->Finish().status().code(),
            absl::StatusCode::kFailedPrecondition);
  AggregatorOptions options;
  options.trim_fraction = 0.5;
  EXPECT_FALSE(UpdateAggregator::Create(Reference(), options).ok());
  EXPECT_FALSE(UpdateAggregator::Create(NamedTensors(), {}).ok());
  options = AggregatorOptions();
  options.noise_stddev = 1.0;  // Noise without a fixed denominator.
  EXPECT_FALSE(UpdateAggregator::Create(Reference(), options).ok());
  options.fixed_denominator = 2.0;
  options.kind = AggregatorKind::kMedian;
  EXPECT_FALSE(UpdateAggregator::Create(Reference(), options).ok());
  EXPECT_FALSE(ParseAggregatorKind("mode").ok());
  EXPECT_EQ(*ParseAggregatorKind("trimmed_mean"), AggregatorKind::kTrimmedMean);
}

}  // namespace
}  // namespace fedge::strategies
