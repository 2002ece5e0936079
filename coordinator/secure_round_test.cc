#include "coordinator/secure_round.h"

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace fedge::coordinator {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1000);

std::vector<std::string> Ids(int n) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) ids.push_back("dev-" + std::to_string(i));
  return ids;
}

std::vector<uint32_t> Input(int64_t device, int64_t length) {
  std::vector<uint32_t> v(length);
  for (int64_t k = 0; k < length; ++k) {
    v[k] = static_cast<uint32_t>(device * 1000 + k * 7);
  }
  return v;
}

TEST(SecureRoundTest, PhasesCloseOnAnswersOrDeadlinesAndOnlyTheSumIsRead) {
  const int n = 10;
  const int64_t length = 50;
  SecureOptions options;
  options.enabled = true;
  options.phase_timeout = absl::Seconds(10);
  const std::vector<std::string> ids = Ids(n);
  auto round = SecureRound::Create(ids, length, /*round=*/42, /*seed=*/9,
                                   options, kStart);
  ASSERT_TRUE(round.ok()) << round.status();
  SecureRound& r = **round;
  const secagg::Parameters& p = r.parameters();
  EXPECT_EQ(p.devices, n);
  EXPECT_EQ(p.neighbours, n - 1);  // Too few devices for a sparse graph.
  EXPECT_EQ(p.threshold, 5);
  std::vector<secagg::Device> devices;
  for (int i = 0; i < n; ++i) devices.emplace_back(p, i);

  // Device 9 never advertises; device 8 advertises in device 7's name
  // (excluded); everyone else advertises.
  std::vector<secagg::Advertisement> ads;
  for (int i = 0; i < 8; ++i) {
    ads.push_back(*devices[i].Advertise());
    ASSERT_TRUE(r.Advertise(ids[i], ads.back()).ok()) << i;
  }
  // A retry of the same message is answered as the first was.
  EXPECT_TRUE(r.Advertise(ids[0], ads[0]).ok());
  secagg::Advertisement stolen = *devices[8].Advertise();
  stolen.device = 7;
  EXPECT_EQ(r.Advertise(ids[8], stolen).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.Advertise(ids[8], *devices[8].Advertise()).code(),
            absl::StatusCode::kFailedPrecondition);  // Excluded.
  EXPECT_EQ(r.Advertise("stranger", ads[1]).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(r.Advertisements(ids[0]).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_FALSE(r.Advance(kStart + absl::Seconds(5), false));  // 9 waited for.
  ASSERT_TRUE(r.Advance(kStart + absl::Seconds(10), false));
  EXPECT_EQ(r.phase(), SecurePhase::kShareKeys);
  EXPECT_EQ(r.Lost(), (std::set<std::string>{ids[8], ids[9]}));

  const absl::Time shared_at = kStart + absl::Seconds(12);
  for (int i = 0; i < 8; ++i) {
    auto ads = r.Advertisements(ids[i]);
    ASSERT_TRUE(ads.ok()) << ads.status();
    auto shares = devices[i].ShareKeys(*ads);
    ASSERT_TRUE(shares.ok()) << shares.status();
    ASSERT_TRUE(r.ShareKeys(ids[i], *shares).ok()) << i;
  }
  // Everyone left answered: the phase closes before its deadline.
  ASSERT_TRUE(r.Advance(shared_at, false));
  EXPECT_EQ(r.phase(), SecurePhase::kMaskedInput);

  // A wrong-length vector excludes device 7, which then counts as dropped
  // after sharing; the others mask.
  std::vector<uint32_t> want(length, 0);
  for (int i = 0; i < 7; ++i) {
    auto inbox = r.Shares(ids[i]);
    ASSERT_TRUE(inbox.ok()) << inbox.status();
    auto masked = devices[i].MaskInput(Input(i, length), *inbox);
    ASSERT_TRUE(masked.ok()) << masked.status();
    ASSERT_TRUE(r.MaskedInput(ids[i], *masked).ok()) << i;
    for (int64_t k = 0; k < length; ++k) want[k] += Input(i, length)[k];
  }
  EXPECT_EQ(r.MaskedInput(ids[7], std::vector<uint32_t>(length - 1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(r.record().excluded.count(ids[7]) > 0);
  EXPECT_EQ(r.Survivors(ids[0]).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_FALSE(r.Advance(shared_at + absl::Seconds(100), false));
  ASSERT_TRUE(r.Advance(shared_at + absl::Seconds(100), true));
  EXPECT_EQ(r.phase(), SecurePhase::kUnmask);
  EXPECT_EQ(r.MaskedInput(ids[7], std::vector<uint32_t>(length)).code(),
            absl::StatusCode::kFailedPrecondition);  // Excluded.
  EXPECT_EQ(r.Sum().status().code(), absl::StatusCode::kFailedPrecondition);

  // Device 6 drops after masking: its vector stays in the sum. Each
  // secret still gets the threshold of shares from the others.
  for (int i = 0; i < 6; ++i) {
    auto survivors = r.Survivors(ids[i]);
    ASSERT_TRUE(survivors.ok());
    EXPECT_EQ(*survivors, (std::set<int64_t>{0, 1, 2, 3, 4, 5, 6}));
    auto shares = devices[i].Unmask(*survivors);
    ASSERT_TRUE(shares.ok()) << shares.status();
    ASSERT_TRUE(r.Unmask(ids[i], *shares).ok()) << i;
  }
  const absl::Time unmask_opened = shared_at + absl::Seconds(100);
  EXPECT_FALSE(r.Advance(unmask_opened + absl::Seconds(1), true));
  ASSERT_TRUE(r.Advance(unmask_opened + absl::Seconds(10), true));
  auto sum = r.Sum();
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(*sum, want);

  const SecureRecord record = r.record();
  EXPECT_EQ(record.masked, 7);
  EXPECT_EQ(record.unmasked, 6);
  EXPECT_DOUBLE_EQ(record.advertise_s, 10);
  EXPECT_DOUBLE_EQ(record.share_keys_s, 2);
  EXPECT_DOUBLE_EQ(record.unmask_s, 10);
  EXPECT_GT(record.bytes_up, 0);
  EXPECT_GT(record.bytes_down, 0);
  EXPECT_EQ(record.excluded.size(), 2u);
}

TEST(SecureRoundTest, TooManyDropsAfterMaskingFailTheSumInsteadOfGuessing) {
  const int n = 5;
  SecureOptions options;
  options.enabled = true;
  const std::vector<std::string> ids = Ids(n);
  auto round = SecureRound::Create(ids, 4, 1, 2, options, kStart);
  ASSERT_TRUE(round.ok()) << round.status();
  SecureRound& r = **round;
  std::vector<secagg::Device> devices;
  for (int i = 0; i < n; ++i) devices.emplace_back(r.parameters(), i);
  for (int i = 0; i < n; ++i) {
    ASSERT_TRUE(r.Advertise(ids[i], *devices[i].Advertise()).ok());
  }
  ASSERT_TRUE(r.Advance(kStart, false));
  for (int i = 0; i < n; ++i) {
    ASSERT_TRUE(
        r.ShareKeys(ids[i], *devices[i].ShareKeys(*r.Advertisements(ids[i])))
            .ok());
  }
  ASSERT_TRUE(r.Advance(kStart, false));
  for (int i = 0; i < n; ++i) {
    ASSERT_TRUE(r.MaskedInput(ids[i], *devices[i].MaskInput(Input(i, 4),
                                                            *r.Shares(ids[i])))
                    .ok());
  }
  ASSERT_TRUE(r.Advance(kStart, true));
  // Threshold 3 of 4 neighbours: with only two answering, nothing rebuilds.
  for (int i : {0, 1}) {
    ASSERT_TRUE(
        r.Unmask(ids[i], *devices[i].Unmask(*r.Survivors(ids[i]))).ok());
  }
  ASSERT_TRUE(r.Advance(kStart + options.phase_timeout, true));
  EXPECT_EQ(r.Sum().status().code(), absl::StatusCode::kFailedPrecondition);
}

// Distributed DP: the noise is split so that the fewest survivors the
// round unmasks for carry z * clip together; with fewer masked vectors the
// round never unmasks.
TEST(SecureRoundTest, DistributedNoiseNeedsItsSurvivors) {
  SecureOptions options;
  options.enabled = true;
  options.clip_norm = 2;
  options.dropout = 0.3;
  options.phase_timeout = absl::Seconds(10);
  const std::vector<std::string> ids = Ids(10);
  auto plain = SecureRound::Create(ids, 8, 1, 2, options, kStart);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ((*plain)->noise_stddev(), 0);
  EXPECT_EQ((*plain)->min_survivors(), 0);
  auto round = SecureRound::Create(ids, 8, 1, 2, options, kStart, 1.5);
  ASSERT_TRUE(round.ok()) << round.status();
  SecureRound& r = **round;
  EXPECT_EQ(r.min_survivors(), 7);  // ceil(0.7 * 10).
  EXPECT_DOUBLE_EQ(r.noise_stddev(), 1.5 * 2 / std::sqrt(7.0));
  EXPECT_FALSE(SecureRound::Create(ids, 8, 1, 2, options, kStart, -1).ok());
  EXPECT_EQ(SecureRound::Create(Ids(2), 8, 1, 2, options, kStart, 1)
                .value()
                ->min_survivors(),
            2);

  const secagg::Parameters& p = r.parameters();
  std::vector<secagg::Device> devices;
  for (int i = 0; i < 10; ++i) devices.emplace_back(p, i);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(r.Advertise(ids[i], *devices[i].Advertise()).ok());
  }
  ASSERT_TRUE(r.Advance(kStart, false));
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(
        r.ShareKeys(ids[i], *devices[i].ShareKeys(*r.Advertisements(ids[i])))
            .ok());
  }
  ASSERT_TRUE(r.Advance(kStart, false));
  for (int i = 0; i < 6; ++i) {  // One short of 7.
    ASSERT_TRUE(r.MaskedInput(ids[i], *devices[i].MaskInput(Input(i, 8),
                                                            *r.Shares(ids[i])))
                    .ok());
  }
  ASSERT_TRUE(r.Advance(kStart, true));
  EXPECT_EQ(r.phase(), SecurePhase::kDone);  // Unmasking is skipped.
  const absl::Status survivors = r.Survivors(ids[0]).status();
  EXPECT_EQ(survivors.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(survivors.message().find("fewer than the 7"), std::string::npos)
      << survivors;
  EXPECT_EQ(r.Sum().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(SecureRoundTest, RefusesBadOptionsAndTooFewDevices) {
  SecureOptions options;
  options.enabled = true;
  EXPECT_FALSE(SecureRound::Create(Ids(1), 4, 1, 2, options, kStart).ok());
  EXPECT_FALSE(
      SecureRound::Create({"a", "a", "b"}, 4, 1, 2, options, kStart).ok());
  options.clip_norm = 0;
  EXPECT_FALSE(ValidateSecureOptions(options).ok());
  options.clip_norm = 1;
  options.dropout = 1;
  EXPECT_FALSE(ValidateSecureOptions(options).ok());
}

}  // namespace
}  // namespace fedge::coordinator
