#include "model/partition.h"

#include <algorithm>
#include <numeric>
#include <set>

#include "gtest/gtest.h"

namespace fedge::model {
namespace {

std::vector<int64_t> Range(int64_t n) {
  std::vector<int64_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// Every index of `expected` appears in exactly one part, exactly once.
void ExpectCoversOnce(const Partition& parts, std::vector<int64_t> expected) {
  std::vector<int64_t> all;
  for (const auto& part : parts)
    all.insert(all.end(), part.begin(), part.end());
  std::sort(all.begin(), all.end());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(all, expected);
}

std::vector<int64_t> CyclicLabels(int64_t n, int classes) {
  std::vector<int64_t> labels(n);
  for (int64_t i = 0; i < n; ++i) labels[i] = i % classes;
  return labels;
}

TEST(PartitionTest, PublicSplitIsDisjointCompleteAndReproducible) {
  absl::StatusOr<PublicSplit> a = SplitPublic(1000, 0.1, 7);
  absl::StatusOr<PublicSplit> b = SplitPublic(1000, 0.1, 7);
  absl::StatusOr<PublicSplit> c = SplitPublic(1000, 0.1, 8);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->public_indices.size(), 100u);
  ExpectCoversOnce({a->public_indices, a->private_indices}, Range(1000));
  EXPECT_EQ(a->public_indices, b->public_indices);
  EXPECT_NE(a->public_indices, c->public_indices);
  EXPECT_FALSE(SplitPublic(10, 1.5, 0).ok());
}

TEST(PartitionTest, PermutationIsReproducibleAndComplete) {
  std::vector<int64_t> a = Permutation(20, 3);
  EXPECT_EQ(a, Permutation(20, 3));
  EXPECT_NE(a, Permutation(20, 4));
  std::sort(a.begin(), a.end());
  EXPECT_EQ(a, Range(20));
  EXPECT_TRUE(Permutation(0, 1).empty());
}

TEST(PartitionTest, IidCoversEverySampleOnceWithBalancedSizes) {
  const std::vector<int64_t> pool = {5, 9, 11, 20, 21, 40, 41, 42, 43, 99};
  absl::StatusOr<Partition> parts = PartitionIid(pool, 3, 1);
  ASSERT_TRUE(parts.ok());
  ExpectCoversOnce(*parts, pool);
  for (const auto& part : *parts) {
    EXPECT_GE(part.size(), 3u);
    EXPECT_LE(part.size(), 4u);
  }
  EXPECT_EQ(*parts, *PartitionIid(pool, 3, 1));
  EXPECT_FALSE(PartitionIid(pool, 0, 1).ok());
}

TEST(PartitionTest, DirichletCoversEverySampleOnceAndIsReproducible) {
  const std::vector<int64_t> labels = CyclicLabels(5000, 10);
  const std::vector<int64_t> pool = Range(5000);
  for (double alpha : {0.05, 0.5, 100.0}) {
    absl::StatusOr<Partition> a =
        PartitionDirichlet(pool, labels, 10, 8, alpha, 3);
    absl::StatusOr<Partition> b =
        PartitionDirichlet(pool, labels, 10, 8, alpha, 3);
    ASSERT_TRUE(a.ok()) << a.status();
    ExpectCoversOnce(*a, pool);
    EXPECT_EQ(*a, *b) << "alpha " << alpha;
    for (const auto& part : *a) EXPECT_GE(part.size(), 1u);
  }
}

TEST(PartitionTest, SmallAlphaSkewsLabelsAndLargeAlphaDoesNot) {
  const std::vector<int64_t> labels = CyclicLabels(10000, 10);
  const std::vector<int64_t> pool = Range(10000);
  // Mean over clients of the share of each client's most common class.
  auto dominance = [&](double alpha) {
    Partition parts = *PartitionDirichlet(pool, labels, 10, 10, alpha, 11);
    double sum = 0;
    for (const auto& part : parts) {
      std::vector<int64_t> counts(10);
      for (int64_t i : part) ++counts[labels[i]];
      sum +=
          double(*std::max_element(counts.begin(), counts.end())) / part.size();
    }
    return sum / parts.size();
  };
  EXPECT_GT(dominance(0.1), 0.5);
  EXPECT_LT(dominance(1000.0), 0.2);
}

TEST(PartitionTest, DirichletRejectsBadInput) {
  const std::vector<int64_t> labels = {0, 1, 2, 3};
  EXPECT_FALSE(
      PartitionDirichlet(Range(4), labels, 3, 2, 0.5, 0).ok());  // Label 3.
  EXPECT_FALSE(PartitionDirichlet(Range(4), labels, 4, 2, 0.0, 0).ok());
  EXPECT_FALSE(PartitionDirichlet({7}, labels, 4, 2, 0.5, 0).ok());
  EXPECT_EQ(
      PartitionDirichlet(Range(4), labels, 4, 3, 0.5, 0, 2).status().code(),
      absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace fedge::model
