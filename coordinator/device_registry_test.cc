#include "coordinator/device_registry.h"

#include <random>
#include <string>

#include "gtest/gtest.h"

namespace fedge::coordinator {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1700000000);
const auto kIdle = [](const std::string&) { return false; };

DeviceFacts Facts(const std::string& id) {
  DeviceFacts f;
  f.device_id = id;
  return f;
}

TEST(DeviceRegistryTest, RegistersChecksAndRefreshesDevices) {
  EngineOptions options;
  options.allow_list = {"pi-0", "pi-1"};
  DeviceRegistry registry(&options, {0.9, 0.0});
  EXPECT_EQ(registry.Register(Facts("bad id"), kStart, kIdle).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Register(Facts("pi-9"), kStart, kIdle).code(),
            absl::StatusCode::kPermissionDenied);
  ASSERT_TRUE(registry.Register(Facts("pi-0"), kStart, kIdle).ok());
  registry.at("pi-0").polled = true;
  registry.Play("pi-0", strategies::Arm{0.1, 4}, 0.5);
  // Re-registering keeps the bandit's history, forgets the poll.
  ASSERT_TRUE(
      registry.Register(Facts("pi-0"), kStart + absl::Seconds(1), kIdle).ok());
  EXPECT_EQ(registry.size(), 1);
  EXPECT_EQ(registry.at("pi-0").plays, 1);
  EXPECT_FALSE(registry.at("pi-0").polled);
  EXPECT_EQ(registry.at("pi-0").last_seen, kStart + absl::Seconds(1));
  EXPECT_EQ(registry.Touch("pi-1", kStart).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(DeviceRegistryTest, NamedDevicesPlayTheirOwnFixedArm) {
  EngineOptions options;
  options.bandit.kind = strategies::BanditKind::kFixed;
  options.bandit.space.max_ratio = 0.4;
  options.bandit.fixed_arm = {0.0, 16};
  options.device_arms = {{"slow", strategies::Arm{0.4, 4}}};
  ASSERT_TRUE(options.Validate().ok());
  DeviceRegistry registry(&options, {0.9, 0.0});
  ASSERT_TRUE(registry.Register(Facts("slow"), kStart, kIdle).ok());
  ASSERT_TRUE(registry.Register(Facts("fast"), kStart, kIdle).ok());
  std::mt19937_64 rng(1);
  EXPECT_EQ(registry.at("slow").bandit->Choose(rng), (strategies::Arm{0.4, 4}));
  EXPECT_EQ(registry.at("fast").bandit->Choose(rng),
            (strategies::Arm{0.0, 16}));
  // Restored from a checkpoint, a device gets its own arm again.
  EngineState state;
  registry.Save(state);
  DeviceRegistry restored(&options, {0.9, 0.0});
  ASSERT_TRUE(restored.Restore(state).ok());
  EXPECT_EQ(restored.at("slow").bandit->Choose(rng), (strategies::Arm{0.4, 4}));
}

TEST(DeviceRegistryTest, AFullRegistryForgetsOnlySilentIdleDevices) {
  EngineOptions options;
  options.max_devices = 2;
  options.heartbeat_timeout = absl::Seconds(10);
  DeviceRegistry registry(&options, {0.9, 0.0});
  ASSERT_TRUE(registry.Register(Facts("a"), kStart, kIdle).ok());
  ASSERT_TRUE(registry.Register(Facts("b"), kStart, kIdle).ok());
  // Not yet silent past the timeout: nobody is forgotten.
  EXPECT_EQ(
      registry.Register(Facts("c"), kStart + absl::Seconds(5), kIdle).code(),
      absl::StatusCode::kResourceExhausted);
  registry.at("a").polled = true;  // Asked for work: kept.
  const auto b_busy = [](const std::string& id) { return id == "b"; };
  EXPECT_EQ(
      registry.Register(Facts("c"), kStart + absl::Seconds(60), b_busy).code(),
      absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(
      registry.Register(Facts("c"), kStart + absl::Seconds(60), kIdle).ok());
  EXPECT_EQ(registry.Touch("b", kStart).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(registry.Touch("a", kStart).ok());
}

TEST(DeviceRegistryTest, SaveAndRestoreRebuildTheBanditsFromThePlays) {
  EngineOptions options;
  DeviceRegistry first(&options, {0.9, 0.0});
  ASSERT_TRUE(first.Register(Facts("a"), kStart, kIdle).ok());
  ASSERT_TRUE(first.Register(Facts("b"), kStart, kIdle).ok());
  first.Play("a", strategies::Arm{0.0, 8}, 0.3);
  first.Play("a", strategies::Arm{0.2, 4}, 0.1);
  first.Play("b", strategies::Arm{0.0, 4}, 0.2);
  first.at("b").expected_seconds = 12;
  first.at("a").times.Observe({0.0, 8, 3.0, 1.0, 0.1});
  EngineState state;
  first.Save(state);
  EXPECT_EQ(state.plays.size(), 3u);

  DeviceRegistry second(&options, {0.9, 0.0});
  ASSERT_TRUE(second.Restore(state).ok());
  EXPECT_EQ(second.at("a").plays, 2);
  EXPECT_EQ(second.MostPlays(), 2);
  EXPECT_EQ(second.at("b").expected_seconds, 12);
  EXPECT_EQ(*second.at("a").times.Predict(0.0, 8),
            *first.at("a").times.Predict(0.0, 8));
  EXPECT_EQ(second.Restore(state).code(),
            absl::StatusCode::kFailedPrecondition);

  state.plays.push_back({"ghost", strategies::Arm{}, 0});
  DeviceRegistry third(&options, {0.9, 0.0});
  EXPECT_EQ(third.Restore(state).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(third.size(), 0);  // Nothing half-restored.
}

}  // namespace
}  // namespace fedge::coordinator
