#include "coordinator/private_rounds.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace fedge::coordinator {
namespace {

strategies::PrivacyOptions Options(double target_quantile) {
  strategies::PrivacyOptions o;
  o.noise_multiplier = 1.0;
  o.sampling_rate = 0.5;
  o.target_quantile = target_quantile;
  return o;
}

TEST(PrivateRoundsTest, ARoundIsToldItsClipNoiseAndExpectedCount) {
  PrivateRounds rounds(Options(0), 2.0, /*seed=*/3);
  strategies::AggregatorOptions aggregator;
  absl::StatusOr<PrivateRound> round = rounds.Open(100, 1000, aggregator);
  ASSERT_TRUE(round.ok()) << round.status();
  EXPECT_EQ(aggregator.clip_norm, 2.0);
  EXPECT_EQ(aggregator.fixed_denominator, 50.0);
  EXPECT_EQ(aggregator.noise_stddev, 2.0);  // z * clip.
  EXPECT_EQ(aggregator.noise_seed, round->seed);
  // Repeatable with a seed, and each round's seed its own.
  strategies::AggregatorOptions again;
  EXPECT_EQ(rounds.Open(100, 1000, again)->seed, round->seed);
  EXPECT_NE(rounds.Open(100, 2000, again)->seed, round->seed);
  EXPECT_NE(rounds.SamplingSeed(1000), round->seed);
}

TEST(PrivateRoundsTest, AdaptiveClippingTakesNoiseAndFollowsTheNorms) {
  PrivateRounds rounds(Options(0.5), 1.0, /*seed=*/3);
  strategies::AggregatorOptions aggregator;
  // 2000 candidates at q = 0.5: 1000 expected, count stddev 50.
  absl::StatusOr<PrivateRound> round = rounds.Open(2000, 1000, aggregator);
  ASSERT_TRUE(round.ok()) << round.status();
  EXPECT_EQ(round->count_stddev, 50.0);
  EXPECT_GT(aggregator.noise_stddev, 1.0);  // z_sum > z.
  // Every device under the clip: it shrinks (by about exp(-0.1)).
  const PrivacyRecord shrunk =
      rounds.Commit(*round, std::vector<double>(1000, 0.5));
  EXPECT_EQ(shrunk.clip_norm, 1.0);
  EXPECT_NEAR(shrunk.next_clip, std::exp(-0.1), 0.02);
  EXPECT_GT(shrunk.epsilon, 0);
  // Every device over it: it grows.
  round = rounds.Open(2000, 2000, aggregator);
  EXPECT_EQ(aggregator.clip_norm, shrunk.next_clip);
  const PrivacyRecord grown =
      rounds.Commit(*round, std::vector<double>(1000, 5.0));
  EXPECT_GT(grown.next_clip, shrunk.next_clip);
  EXPECT_GT(grown.epsilon, shrunk.epsilon);
  EXPECT_NEAR(rounds.EpsilonAfter(0), grown.epsilon, 1e-12);
  EXPECT_GT(rounds.EpsilonAfter(1), grown.epsilon);
}

TEST(PrivateRoundsTest, TooFewDevicesForAdaptiveClippingIsNamed) {
  PrivateRounds rounds(Options(0.5), 1.0, 3);
  strategies::AggregatorOptions aggregator;
  // 20 expected devices: count stddev 1 > z / 2 is fine; 10: 0.5 is not.
  EXPECT_TRUE(rounds.Open(40, 1, aggregator).ok());
  absl::StatusOr<PrivateRound> round = rounds.Open(20, 1, aggregator);
  ASSERT_FALSE(round.ok());
  EXPECT_NE(round.status().message().find("--dp_clipped_count_stddev"),
            std::string::npos)
      << round.status();
}

TEST(PrivateRoundsTest, StateRoundTripsAndBadStateIsRefused) {
  PrivateRounds rounds(Options(0.5), 1.0, 3);
  strategies::AggregatorOptions aggregator;
  const PrivateRound round = *rounds.Open(2000, 1, aggregator);
  const PrivacyRecord record =
      rounds.Commit(round, std::vector<double>(1000, 0.5));
  PrivateRounds restored(Options(0.5), 1.0, 3);
  ASSERT_TRUE(restored.Restore(rounds.State()).ok());
  EXPECT_NEAR(restored.EpsilonAfter(0), record.epsilon, 1e-12);
  ASSERT_TRUE(restored.Open(2000, 2, aggregator).ok());
  EXPECT_EQ(aggregator.clip_norm, record.next_clip);
  PrivacyState bad = rounds.State();
  bad.rdp.pop_back();
  EXPECT_FALSE(restored.Restore(bad).ok());
  bad = rounds.State();
  bad.rdp[3] = -1;
  EXPECT_FALSE(restored.Restore(bad).ok());
  bad = rounds.State();
  bad.clip_norm = NAN;
  EXPECT_FALSE(restored.Restore(bad).ok());
  EXPECT_NEAR(restored.EpsilonAfter(0), record.epsilon, 1e-12);
}

}  // namespace
}  // namespace fedge::coordinator
