#include "sim/profiles.h"

#include <map>
#include <set>

#include "gtest/gtest.h"

namespace fedge::sim {
namespace {

TEST(ProfilesTest, MixCyclesDevicesAndLinksSoProfilesSeeDifferentLinks) {
  absl::StatusOr<std::vector<DeviceProfile>> devices = AssignDevices("mix", 8);
  absl::StatusOr<std::vector<std::string>> links = AssignLinks("mix", 8);
  ASSERT_TRUE(devices.ok() && links.ok());
  std::map<std::string, std::set<std::string>> links_of;
  for (int i = 0; i < 8; ++i) {
    links_of[(*devices)[i].name].insert((*links)[i]);
  }
  EXPECT_EQ(links_of.size(), 4u);  // Two of each profile...
  for (const auto& [name, seen] : links_of) {
    EXPECT_EQ(seen.size(), 2u) << name;  // ...on two different links.
  }
  EXPECT_EQ(AssignDevices("pi5,laptop", 3)->at(2).name, "pi5");
}

TEST(ProfilesTest, RejectsUnknownProfilesNamingThem) {
  absl::Status device = AssignDevices("pi4,pi9", 2).status();
  EXPECT_EQ(device.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(device.message().find("pi9"), std::string::npos);
  EXPECT_FALSE(AssignLinks("wifi,carrier-pigeon", 2).ok());
  EXPECT_TRUE(AssignLinks("wifi:300/300/6", 2).ok());
}

TEST(ProfilesTest, CustomSpeedsAndRepeats) {
  absl::StatusOr<std::vector<DeviceProfile>> devices =
      AssignDevices("cpu:0.1*2,cpu:0.5:2048,laptop*3", 6);
  ASSERT_TRUE(devices.ok()) << devices.status();
  EXPECT_EQ((*devices)[1].relative_speed, 0.1);
  EXPECT_EQ((*devices)[1].memory_mb, 8192);
  EXPECT_EQ((*devices)[2].relative_speed, 0.5);
  EXPECT_EQ((*devices)[2].memory_mb, 2048);
  EXPECT_EQ((*devices)[5].name, "laptop");
  absl::StatusOr<std::vector<std::string>> links =
      AssignLinks("lte*2,wifi:1/10/40", 4);
  ASSERT_TRUE(links.ok()) << links.status();
  EXPECT_EQ((*links)[1], "lte");
  EXPECT_EQ((*links)[2], "wifi:1/10/40");
  EXPECT_EQ((*links)[3], "lte");
  for (const char* bad : {"cpu:0", "cpu:fast", "cpu:0.5:1", "cpu:1:2:3",
                          "laptop*0", "laptop*x", "cpu:200"}) {
    absl::Status s = AssignDevices(bad, 2).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find(bad), std::string::npos) << s.message();
  }
}

TEST(ProfilesTest, SpeedSwaps) {
  EXPECT_EQ(ParseSpeedSwap("", 4)->round, 0);
  absl::StatusOr<SpeedSwap> swap = ParseSpeedSwap("20:0-3,1-2", 4);
  ASSERT_TRUE(swap.ok()) << swap.status();
  EXPECT_EQ(swap->round, 20);
  ASSERT_EQ(swap->pairs.size(), 2u);
  EXPECT_EQ(swap->pairs[0], (std::pair<int64_t, int64_t>{0, 3}));
  for (const char* bad :
       {"0:0-1", "x:0-1", "5", "5:0-4", "5:0-1,1-2", "5:0", "5:0-1-2"}) {
    EXPECT_EQ(ParseSpeedSwap(bad, 4).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(ProfilesTest, ASwappedDeviceIsNamedWithItsPartnersSpeed) {
  const std::vector<DeviceProfile> devices = *AssignDevices("cpu:0.1,cpu:1", 2);
  const SpeedSwap swap = *ParseSpeedSwap("3:0-1", 2);
  EXPECT_EQ(ProfileInRound(devices, swap, 0, 2), "cpu:0.1");
  EXPECT_EQ(ProfileInRound(devices, swap, 0, 3), "cpu:0.1 at cpu:1's speed");
  EXPECT_EQ(ProfileInRound(devices, swap, 1, 4), "cpu:1 at cpu:0.1's speed");
  EXPECT_EQ(ProfileInRound(devices, SpeedSwap{}, 1, 4), "cpu:1");
}

TEST(ProfilesTest, CpuSharesKeepRatiosAndFitTheCores) {
  const std::vector<DeviceProfile> devices = *AssignDevices("mix", 8);
  const std::vector<double> shares = CpuShares(devices, 1.8);
  double total = 0;
  for (double s : shares) total += s;
  EXPECT_NEAR(total, 1.8, 1e-9);
  EXPECT_NEAR(shares[3] / shares[0],
              devices[3].relative_speed / devices[0].relative_speed, 1e-9);
  // Enough cores: every device at its own speed.
  EXPECT_EQ(CpuShares(devices, 100)[3], devices[3].relative_speed);
}

}  // namespace
}  // namespace fedge::sim
