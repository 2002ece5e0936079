#include "secagg/protocol.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "gtest/gtest.h"

namespace fedge::secagg {
namespace {

Parameters Params(int64_t n, int k, int t, int64_t length = 257) {
  Parameters p;
  p.devices = n;
  p.neighbours = k;
  p.threshold = t;
  p.length = length;
  p.round = 7;
  p.graph_seed = 99;
  return p;
}

std::vector<uint32_t> Input(int64_t device, int64_t length) {
  std::mt19937 rng(static_cast<uint32_t>(device) + 1);
  std::vector<uint32_t> x(length);
  for (auto& w : x) w = rng();
  return x;
}

// Devices and their coordinator past the key exchange: every device has
// advertised and shared its keys.
struct KeyedRound {
  explicit KeyedRound(const Parameters& p) : coordinator(p) {
    for (int64_t i = 0; i < p.devices; ++i) devices.emplace_back(p, i);
    for (Device& d : devices) {
      absl::StatusOr<Advertisement> a = d.Advertise();
      EXPECT_TRUE(a.ok() && coordinator.AddAdvertisement(*a).ok());
    }
    for (int64_t i = 0; i < p.devices; ++i) {
      auto shares = devices[i].ShareKeys(coordinator.AdvertisementsFor(i));
      EXPECT_TRUE(shares.ok() && coordinator.AddShares(i, *shares).ok());
    }
  }
  std::vector<Device> devices;
  Coordinator coordinator;
};

struct Outcome {
  absl::StatusOr<std::vector<uint32_t>> sum;
  std::vector<uint32_t> expected;  // Plain sum of the survivors' inputs.
};

// One round: `before` drop after sharing (never mask), `after` drop after
// masking (never help unmask).
Outcome RunRound(const Parameters& p, const std::set<int64_t>& before,
                 const std::set<int64_t>& after) {
  KeyedRound round(p);
  std::vector<Device>& devices = round.devices;
  Coordinator& coordinator = round.coordinator;
  Outcome outcome;
  outcome.expected.assign(p.length, 0);
  for (int64_t i = 0; i < p.devices; ++i) {
    if (before.count(i) > 0) continue;
    const std::vector<uint32_t> x = Input(i, p.length);
    auto y = devices[i].MaskInput(x, coordinator.SharesFor(i));
    EXPECT_TRUE(y.ok()) << y.status();
    EXPECT_NE(*y, x);
    EXPECT_TRUE(coordinator.AddMaskedInput(i, *y).ok());
    for (int64_t k = 0; k < p.length; ++k) outcome.expected[k] += x[k];
  }
  const std::set<int64_t> survivors = coordinator.Survivors();
  for (int64_t i : survivors) {
    if (after.count(i) > 0) continue;
    auto shares = devices[i].Unmask(survivors);
    if (!shares.ok()) continue;  // Too few neighbours left: it refuses.
    EXPECT_TRUE(coordinator.AddUnmaskShares(*shares).ok());
  }
  outcome.sum = coordinator.Sum();
  return outcome;
}

TEST(SecAggTest, TheCoordinatorGetsExactlyTheSum) {
  for (const Parameters& p : {Params(5, 4, 3), Params(30, 8, 5)}) {
    const Outcome o = RunRound(p, {}, {});
    ASSERT_TRUE(o.sum.ok()) << o.sum.status();
    EXPECT_EQ(*o.sum, o.expected);
  }
}

TEST(SecAggTest, DevicesThatDropBeforeOrAfterMaskingAreUnmasked) {
  const Parameters p = Params(30, 10, 6);
  const Outcome o = RunRound(p, {3, 17}, {5, 21, 29});
  ASSERT_TRUE(o.sum.ok()) << o.sum.status();
  EXPECT_EQ(*o.sum, o.expected);
}

// SecAgg+'s sparse graph: the largest share of devices that can drop after
// masking with the round still unmasking, over random drop sets: with 60
// devices, 20 neighbours and threshold 11, dropping 30% still completes.
TEST(SecAggTest, ARoundSurvivesThirtyPercentDroppingAfterMasking) {
  const Parameters p = Params(60, 20, 11, 16);
  std::mt19937 rng(3);
  for (int trial = 0; trial < 5; ++trial) {
    std::vector<int64_t> ids(p.devices);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    const std::set<int64_t> after(ids.begin(), ids.begin() + 18);  // 30%.
    const Outcome o = RunRound(p, {}, after);
    ASSERT_TRUE(o.sum.ok()) << "trial " << trial << ": " << o.sum.status();
    EXPECT_EQ(*o.sum, o.expected);
  }
}

TEST(SecAggTest, TooManyDropsFailTheRoundRatherThanGiveAWrongSum) {
  const Parameters p = Params(12, 4, 3, 8);
  std::set<int64_t> after;
  for (int64_t i = 0; i < 9; ++i) after.insert(i);
  const Outcome o = RunRound(p, {}, after);
  EXPECT_EQ(o.sum.status().code(), absl::StatusCode::kFailedPrecondition)
      << o.sum.status();
}

TEST(SecAggTest, BadMessagesAreRefusedAndNamed) {
  const Parameters p = Params(6, 4, 3, 4);
  std::vector<Device> devices;
  for (int64_t i = 0; i < p.devices; ++i) devices.emplace_back(p, i);
  Coordinator coordinator(p);
  std::vector<Advertisement> ads;
  for (Device& d : devices) ads.push_back(*d.Advertise());
  for (const Advertisement& a : ads)
    ASSERT_TRUE(coordinator.AddAdvertisement(a).ok());
  // A replayed advertisement.
  absl::Status replay = coordinator.AddAdvertisement(ads[2]);
  EXPECT_NE(replay.message().find("twice"), std::string::npos) << replay;
  Advertisement short_key = ads[0];
  short_key.device = 9;
  EXPECT_FALSE(coordinator.AddAdvertisement(short_key).ok());
  std::vector<std::vector<SealedShares>> shares;
  for (int64_t i = 0; i < p.devices; ++i) {
    shares.push_back(*devices[i].ShareKeys(coordinator.AdvertisementsFor(i)));
  }
  // Shares in another device's name.
  EXPECT_FALSE(coordinator.AddShares(1, shares[0]).ok());
  for (int64_t i = 0; i < p.devices; ++i) {
    ASSERT_TRUE(coordinator.AddShares(i, shares[i]).ok());
  }
  // A sealed share changed in transit does not open.
  std::vector<SealedShares> inbox = coordinator.SharesFor(0);
  inbox[0].sealed[20] ^= 1;
  absl::StatusOr<std::vector<uint32_t>> y =
      devices[0].MaskInput(Input(0, 4), inbox);
  EXPECT_EQ(y.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(y.status().message().find("do not open"), std::string::npos);
  // A masked vector of the wrong length.
  y = devices[1].MaskInput(Input(1, 4), coordinator.SharesFor(1));
  ASSERT_TRUE(y.ok()) << y.status();
  y->pop_back();
  EXPECT_NE(coordinator.AddMaskedInput(1, *y).message().find("words"),
            std::string::npos);
}

// A malformed unmasking share: with more shares than the threshold, the
// round still sums exactly without it and names its sender; with two bad
// shares of one secret, it fails rather than sum wrongly.
TEST(SecAggTest, AMalformedUnmaskingShareIsLeftOutAndNamed) {
  for (int bad : {1, 2}) {
    const Parameters p = Params(6, 4, 3, 4);
    KeyedRound round(p);
    std::vector<Device>& devices = round.devices;
    Coordinator& coordinator = round.coordinator;
    std::vector<uint32_t> expected(4, 0);
    for (int64_t i = 0; i < p.devices; ++i) {
      const std::vector<uint32_t> x = Input(i, 4);
      for (int k = 0; k < 4; ++k) expected[k] += x[k];
      ASSERT_TRUE(coordinator
                      .AddMaskedInput(
                          i, *devices[i].MaskInput(x, coordinator.SharesFor(i)))
                      .ok());
    }
    // Devices 0 (and, for two bad shares, 1) corrupt their share of the
    // seed of a survivor that both neighbour.
    std::vector<UnmaskShares> answers;
    for (int64_t i = 0; i < p.devices; ++i) {
      answers.push_back(*devices[i].Unmask(coordinator.Survivors()));
    }
    int64_t target = -1;
    for (const auto& [j, share] : answers[0].seed_shares) {
      if (bad == 1 || answers[1].seed_shares.count(j) > 0) {
        target = j;
        break;
      }
    }
    ASSERT_GE(target, 0);
    // Different bytes: two equal errors could cancel in the combination.
    for (int i = 0; i < bad; ++i) {
      answers[i].seed_shares.at(target).y[3 + 5 * i] ^= 0x40;
    }
    for (const UnmaskShares& u : answers) {
      ASSERT_TRUE(coordinator.AddUnmaskShares(u).ok());
    }
    absl::StatusOr<std::vector<uint32_t>> sum = coordinator.Sum();
    if (bad == 1) {
      ASSERT_TRUE(sum.ok()) << sum.status();
      EXPECT_EQ(*sum, expected);
      EXPECT_EQ(coordinator.faulty(), std::set<int64_t>({0}));
    } else {
      EXPECT_EQ(sum.status().code(), absl::StatusCode::kInvalidArgument)
          << sum.status();
    }
  }
}

TEST(SecAggTest, NeighboursGrowSlowlyWithTheDevices) {
  const int hundred = NeighboursFor(100, 0.3, 0.01);
  const int thousand = NeighboursFor(1000, 0.3, 0.01);
  EXPECT_EQ(hundred % 2, 0);
  EXPECT_LT(hundred, 99);
  EXPECT_GT(thousand, hundred);
  EXPECT_LT(thousand, hundred * 3 / 2);        // Logarithmic, not linear.
  EXPECT_EQ(NeighboursFor(10, 0.3, 0.01), 9);  // Full graph.
}

TEST(SecAggTest, ParametersAreChecked) {
  EXPECT_TRUE(ValidateParameters(Params(30, 8, 5)).ok());
  EXPECT_TRUE(ValidateParameters(Params(5, 4, 3)).ok());    // Full graph.
  EXPECT_FALSE(ValidateParameters(Params(30, 7, 5)).ok());  // Odd.
  EXPECT_FALSE(ValidateParameters(Params(30, 8, 4)).ok());  // Half.
  EXPECT_FALSE(ValidateParameters(Params(30, 8, 9)).ok());
  EXPECT_FALSE(ValidateParameters(Params(1, 0, 1)).ok());
  const auto graph = NeighbourGraph(30, 8, 1);
  for (int64_t i = 0; i < 30; ++i) {
    EXPECT_EQ(graph[i].size(), 8u);
    for (int64_t j : graph[i]) {
      EXPECT_TRUE(std::binary_search(graph[j].begin(), graph[j].end(), i));
    }
  }
}

// MaskChange is what a device sends: the masked encoding of its change,
// so the coordinator's sum decodes to the changes' sum; a change of the
// wrong length is refused.
TEST(SecAggTest, MaskedChangesSumToTheChanges) {
  const Parameters p = Params(5, 4, 3, 8);  // Changes within +-1.
  const RingCodec ring(p.devices, 1.0);
  KeyedRound round(p);
  std::vector<Device>& devices = round.devices;
  Coordinator& coordinator = round.coordinator;
  std::vector<double> plain(p.length, 0);
  for (int64_t i = 0; i < p.devices; ++i) {
    std::vector<float> change(p.length);
    for (int64_t k = 0; k < p.length; ++k) {
      change[k] = 0.05f * static_cast<float>(k - i);
      plain[k] += change[k];
    }
    EXPECT_EQ(MaskChange(devices[i], ring, {0.5f}, coordinator.SharesFor(i))
                  .status()
                  .code(),
              absl::StatusCode::kInvalidArgument);
    absl::StatusOr<std::vector<uint32_t>> y =
        MaskChange(devices[i], ring, change, coordinator.SharesFor(i));
    ASSERT_TRUE(y.ok()) << y.status();
    EXPECT_NE(*y, ring.Encode(change));
    ASSERT_TRUE(coordinator.AddMaskedInput(i, *y).ok());
  }
  const std::set<int64_t> survivors = coordinator.Survivors();
  for (int64_t i : survivors) {
    ASSERT_TRUE(
        coordinator.AddUnmaskShares(*devices[i].Unmask(survivors)).ok());
  }
  absl::StatusOr<std::vector<uint32_t>> sum = coordinator.Sum();
  ASSERT_TRUE(sum.ok()) << sum.status();
  const std::vector<double> decoded = ring.Decode(*sum);
  for (int64_t k = 0; k < p.length; ++k) {
    EXPECT_NEAR(decoded[k], plain[k], p.devices / ring.scale + 1e-9) << k;
  }
}

TEST(RingCodecTest, SumsOfEncodingsDecodeWithinOneStepPerDevice) {
  const RingCodec codec(100, 1.0);
  std::vector<uint32_t> sum(3, 0);
  std::vector<double> plain(3, 0);
  for (int d = 0; d < 100; ++d) {
    const std::vector<float> v = {1.0f, -1.0f, 0.001f * d - 0.05f};
    const std::vector<uint32_t> e = codec.Encode(v);
    for (int k = 0; k < 3; ++k) {
      sum[k] += e[k];
      plain[k] += v[k];
    }
  }
  const std::vector<double> decoded = codec.Decode(sum);
  for (int k = 0; k < 3; ++k) {
    EXPECT_NEAR(decoded[k], plain[k], 100 / codec.scale + 1e-9);
  }
  // Clipped values saturate; the all-extreme sum does not wrap.
  EXPECT_NEAR(codec.Decode(sum)[0], 100.0, 1e-4);
  EXPECT_NEAR(codec.Decode(codec.Encode({5.0f}))[0], 1.0, 1e-6);
}

// Truncation never lengthens a vector: its encoding stays within the clip,
// the sensitivity distributed DP calibrates to.
TEST(RingCodecTest, EncodingNeverGrowsAValue) {
  const RingCodec codec(1000, 1.0);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0, 1);
  std::vector<float> v(10000);
  double norm = 0;
  for (float& x : v) {
    x = normal(rng);
    norm += static_cast<double>(x) * x;
  }
  for (float& x : v) x = static_cast<float>(x / std::sqrt(norm));
  const std::vector<uint32_t> e = codec.Encode(v);
  double encoded = 0;
  for (size_t k = 0; k < v.size(); ++k) {
    const double step = static_cast<int32_t>(e[k]) / codec.scale;
    EXPECT_LE(std::abs(step), std::abs(static_cast<double>(v[k])));
    encoded += step * step;
  }
  EXPECT_LE(std::sqrt(encoded), 1.0);
}

// With noise the scale leaves room for it; a sum of noised encodings
// decodes to the plain sum plus noise of the summed spread.
TEST(RingCodecTest, NoisedSumsKeepTheirSpreadAndDoNotWrap) {
  const int devices = 50;
  const double noise = 0.05;
  const RingCodec plain(devices, 1.0), noised(devices, 1.0, noise);
  EXPECT_LT(noised.scale, plain.scale);
  EXPECT_GE(
      2147483647.0 / noised.scale,
      devices * 1.0 + 10 * noise * std::sqrt(static_cast<double>(devices)));
  std::vector<uint32_t> sum(20000, 0);
  for (int d = 0; d < devices; ++d) {
    std::vector<uint32_t> e =
        noised.Encode(std::vector<float>(sum.size(), 0.5f));
    ASSERT_TRUE(noised.AddNoise(e).ok());
    for (size_t k = 0; k < sum.size(); ++k) sum[k] += e[k];
  }
  const std::vector<double> decoded = noised.Decode(sum);
  double mean = 0, squares = 0;
  for (double x : decoded) mean += x;
  mean /= static_cast<double>(decoded.size());
  for (double x : decoded) squares += (x - mean) * (x - mean);
  const double spread =
      std::sqrt(squares / static_cast<double>(decoded.size()));
  EXPECT_NEAR(mean, devices * 0.5, 0.02);
  EXPECT_NEAR(spread / (noise * std::sqrt(devices * 1.0)), 1.0, 0.03);
  // Two devices' noise differ: each draws its own seed.
  std::vector<uint32_t> a(100, 0), b(100, 0);
  ASSERT_TRUE(noised.AddNoise(a).ok());
  ASSERT_TRUE(noised.AddNoise(b).ok());
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace fedge::secagg
