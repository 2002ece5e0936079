#include "strategies/selection.h"

#include <map>
#include <set>
#include <string>

#include "gtest/gtest.h"

namespace fedge::strategies {
namespace {

std::vector<Candidate> Candidates() {
  // d0..d9; d0-d3 fast, d4-d5 unknown, d6-d9 slow (over a 60 s deadline).
  std::vector<Candidate> c;
  for (int i = 0; i < 10; ++i) {
    double t = i < 4 ? 10.0 + i : (i < 6 ? -1.0 : 100.0 + i);
    c.push_back({"d" + std::to_string(i), t});
  }
  return c;
}

TEST(SelectionTest, AllInvitesEveryone) {
  std::mt19937_64 rng(1);
  const Selection s = SelectClients(Candidates(), {}, 60, rng);
  EXPECT_EQ(s.invited.size(), 10u);
  EXPECT_EQ(s.target_updates, 10);
}

TEST(SelectionTest, RandomKIsUniformAndSeeded) {
  SelectionOptions options;
  options.kind = SelectionKind::kRandomK;
  options.clients_per_round = 3;
  std::map<std::string, int> counts;
  for (uint64_t seed = 0; seed < 2000; ++seed) {
    std::mt19937_64 rng(seed);
    const Selection s = SelectClients(Candidates(), options, 60, rng);
    ASSERT_EQ(s.invited.size(), 3u);
    EXPECT_EQ(std::set<std::string>(s.invited.begin(), s.invited.end()).size(),
              3u);
    for (const auto& id : s.invited) ++counts[id];
  }
  for (const auto& [id, n] : counts) EXPECT_NEAR(n, 600, 90) << id;
  std::mt19937_64 a(9), b(9);
  EXPECT_EQ(SelectClients(Candidates(), options, 60, a).invited,
            SelectClients(Candidates(), options, 60, b).invited);
}

TEST(SelectionTest, DeadlineAwareOvercommitsAndPrefersFastDevices) {
  SelectionOptions options;
  options.kind = SelectionKind::kDeadlineAware;
  options.clients_per_round = 4;
  options.overcommit = 1.5;
  std::mt19937_64 rng(3);
  const Selection s = SelectClients(Candidates(), options, 60, rng);
  ASSERT_EQ(s.invited.size(), 6u);  // ceil(4 * 1.5)
  EXPECT_EQ(s.target_updates, 4);
  // The four fast devices and both unknown ones; no slow one.
  EXPECT_EQ(s.invited,
            (std::vector<std::string>{"d0", "d1", "d2", "d3", "d4", "d5"}));
  options.clients_per_round = 6;  // Needs 9: the fastest slow ones join.
  const Selection t = SelectClients(Candidates(), options, 60, rng);
  EXPECT_EQ(t.invited.size(), 9u);
  EXPECT_EQ(std::count(t.invited.begin(), t.invited.end(), "d9"), 0);
}

// Each device in with probability q, independently: over many rounds each
// is invited about q of the time, round sizes vary (binomial), and the
// round waits for everyone it invited.
TEST(SelectionTest, PoissonSamplesEachDeviceIndependently) {
  SelectionOptions options;
  options.kind = SelectionKind::kPoisson;
  options.sampling_rate = 0.3;
  std::mt19937_64 rng(5);
  std::map<std::string, int> invited;
  std::set<size_t> sizes;
  const int rounds = 4000;
  for (int r = 0; r < rounds; ++r) {
    const Selection s = SelectClients(Candidates(), options, 60, rng);
    EXPECT_EQ(s.target_updates, static_cast<int64_t>(s.invited.size()));
    sizes.insert(s.invited.size());
    for (const std::string& id : s.invited) ++invited[id];
  }
  ASSERT_EQ(invited.size(), 10u);
  for (const auto& [id, count] : invited) {
    // Binomial(4000, 0.3): stddev 29; 5 stddevs.
    EXPECT_NEAR(count, 0.3 * rounds, 145) << id;
  }
  EXPECT_TRUE(sizes.count(0) == 1 && sizes.count(6) == 1);
}

TEST(SelectionTest, ParsesNames) {
  EXPECT_EQ(*ParseSelectionKind("deadline"), SelectionKind::kDeadlineAware);
  EXPECT_EQ(*ParseSelectionKind("poisson"), SelectionKind::kPoisson);
  EXPECT_FALSE(ParseSelectionKind("fastest").ok());
}

}  // namespace
}  // namespace fedge::strategies
