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
