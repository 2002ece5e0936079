#include "coordinator/engine_flags.h"

#include <string>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "gtest/gtest.h"

ABSL_DECLARE_FLAG(std::string, mode);
ABSL_DECLARE_FLAG(std::string, bandit);
ABSL_DECLARE_FLAG(double, fixed_ratio);
ABSL_DECLARE_FLAG(double, clip_norm);
ABSL_DECLARE_FLAG(std::string, selection);
ABSL_DECLARE_FLAG(double, sampling_rate);
ABSL_DECLARE_FLAG(int64_t, rounds);
ABSL_DECLARE_FLAG(double, dp_epsilon);
ABSL_DECLARE_FLAG(double, dp_noise_multiplier);
ABSL_DECLARE_FLAG(double, local_dp_clip);
ABSL_DECLARE_FLAG(double, local_dp_noise_multiplier);
ABSL_DECLARE_FLAG(std::string, split);
ABSL_DECLARE_FLAG(std::string, device_arms);
ABSL_DECLARE_FLAG(std::string, global_rank);
ABSL_DECLARE_FLAG(bool, secure_aggregation);
ABSL_DECLARE_FLAG(double, secure_clip_norm);
ABSL_DECLARE_FLAG(double, secure_phase_timeout_s);
ABSL_DECLARE_FLAG(int64_t, min_devices);
ABSL_DECLARE_FLAG(std::string, server_optimizer);
ABSL_DECLARE_FLAG(double, server_beta1);

namespace fedge::coordinator {
namespace {

constexpr task::Objective kImage = task::Objective::kImageClassification;

TEST(EngineFlagsTest, AutoBanditIsFedSpineForLoraAndPlainFedAvgForDense) {
  absl::FlagSaver restore;
  absl::StatusOr<EngineOptions> lora = EngineOptionsFromFlags(kImage);
  ASSERT_TRUE(lora.ok()) << lora.status();
  EXPECT_EQ(lora->bandit.kind, strategies::BanditKind::kFedSpine);

  absl::SetFlag(&FLAGS_mode, "dense");
  absl::StatusOr<EngineOptions> dense = EngineOptionsFromFlags(kImage);
  ASSERT_TRUE(dense.ok()) << dense.status();
  EXPECT_EQ(dense->bandit.kind, strategies::BanditKind::kFixed);
  EXPECT_EQ(dense->bandit.fixed_arm.prune_ratio, 0.0);

  // Asked for, a bandit still chooses (pruned dense sub-models).
  absl::SetFlag(&FLAGS_bandit, "fedspine");
  absl::StatusOr<EngineOptions> asked = EngineOptionsFromFlags(kImage);
  ASSERT_TRUE(asked.ok()) << asked.status();
  EXPECT_EQ(asked->bandit.kind, strategies::BanditKind::kFedSpine);
}

TEST(EngineFlagsTest, AutoServerOptimizerIsMomentumForImageLoraOnly) {
  absl::FlagSaver restore;
  absl::StatusOr<EngineOptions> lora = EngineOptionsFromFlags(kImage);
  ASSERT_TRUE(lora.ok()) << lora.status();
  EXPECT_EQ(lora->server_optimizer.kind,
            strategies::ServerOptimizerKind::kMomentum);
  EXPECT_EQ(lora->server_optimizer.momentum, 0.5);

  absl::StatusOr<EngineOptions> text =
      EngineOptionsFromFlags(task::Objective::kCausalLm);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->server_optimizer.kind,
            strategies::ServerOptimizerKind::kNone);

  absl::SetFlag(&FLAGS_mode, "dense");
  absl::StatusOr<EngineOptions> dense = EngineOptionsFromFlags(kImage);
  ASSERT_TRUE(dense.ok()) << dense.status();
  EXPECT_EQ(dense->server_optimizer.kind,
            strategies::ServerOptimizerKind::kNone);

  // Asked for, FedAdam takes its own beta1, not the momentum factor.
  absl::SetFlag(&FLAGS_server_optimizer, "adam");
  absl::SetFlag(&FLAGS_server_beta1, 0.8);
  absl::StatusOr<EngineOptions> adam = EngineOptionsFromFlags(kImage);
  ASSERT_TRUE(adam.ok()) << adam.status();
  EXPECT_EQ(adam->server_optimizer.kind,
            strategies::ServerOptimizerKind::kAdam);
  EXPECT_EQ(adam->server_optimizer.beta1, 0.8);

  absl::SetFlag(&FLAGS_server_beta1, 1.0);
  absl::StatusOr<EngineOptions> bad = EngineOptionsFromFlags(kImage);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("beta1"), std::string::npos)
      << bad.status();

  absl::SetFlag(&FLAGS_server_optimizer, "lamb");
  bad = EngineOptionsFromFlags(kImage);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--server_optimizer"),
            std::string::npos)
      << bad.status();
}

TEST(EngineFlagsTest, AnUnknownBanditIsNamed) {
  absl::FlagSaver restore;
  absl::SetFlag(&FLAGS_bandit, "greedy");
  absl::StatusOr<EngineOptions> options = EngineOptionsFromFlags(kImage);
  ASSERT_FALSE(options.ok());
  EXPECT_NE(options.status().message().find("--bandit"), std::string::npos)
      << options.status();
}

TEST(EngineFlagsTest, DeviceArmsParseAndAreCheckedAsFixedArms) {
  absl::StatusOr<std::map<std::string, strategies::Arm>> arms =
      ParseDeviceArms("device-0=0.4:4,device-12=0:32");
  ASSERT_TRUE(arms.ok()) << arms.status();
  ASSERT_EQ(arms->size(), 2u);
  EXPECT_EQ(arms->at("device-0"), (strategies::Arm{0.4, 4}));
  EXPECT_EQ(arms->at("device-12"), (strategies::Arm{0.0, 32}));
  EXPECT_TRUE(ParseDeviceArms("")->empty());
  for (const char* bad : {"device-0", "device-0=0.4", "=0.4:4", "d=x:4",
                          "d=0.4:4.5", "d=0.1:4,d=0.2:4"}) {
    absl::StatusOr<std::map<std::string, strategies::Arm>> parsed =
        ParseDeviceArms(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }

  absl::FlagSaver restore;
  absl::SetFlag(&FLAGS_device_arms, "device-0=0.4:4");
  // A bandit chooses its own arms: the assignment is refused.
  absl::SetFlag(&FLAGS_bandit, "fedspine");
  absl::StatusOr<EngineOptions> options = EngineOptionsFromFlags(kImage);
  ASSERT_FALSE(options.ok());
  EXPECT_NE(options.status().message().find("--bandit=fixed"),
            std::string::npos)
      << options.status();
  absl::SetFlag(&FLAGS_bandit, "fixed");
  options = EngineOptionsFromFlags(kImage);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->device_arms.at("device-0"), (strategies::Arm{0.4, 4}));
  // An arm no fixed arm could be is named with its device.
  absl::SetFlag(&FLAGS_device_arms, "device-3=0.2:0");
  options = EngineOptionsFromFlags(kImage);
  ASSERT_FALSE(options.ok());
  EXPECT_NE(options.status().message().find("device-3"), std::string::npos)
      << options.status();
  absl::SetFlag(&FLAGS_device_arms, "device-3=0.2:x");
  options = EngineOptionsFromFlags(kImage);
  ASSERT_FALSE(options.ok());
  EXPECT_NE(options.status().message().find("--device_arms"), std::string::npos)
      << options.status();
}

TEST(EngineFlagsTest, GlobalRankIsAutoZeroOrARank) {
  absl::FlagSaver restore;
  absl::StatusOr<EngineOptions> options = EngineOptionsFromFlags(kImage);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->global_rank, kAutoGlobalRank);
  absl::SetFlag(&FLAGS_global_rank, "0");
  EXPECT_EQ(EngineOptionsFromFlags(kImage)->global_rank, 0);
  absl::SetFlag(&FLAGS_global_rank, "32");
  EXPECT_EQ(EngineOptionsFromFlags(kImage)->global_rank, 32);
  for (const char* bad : {"-1", "x", "", "16.5"}) {
    absl::SetFlag(&FLAGS_global_rank, bad);
    options = EngineOptionsFromFlags(kImage);
    ASSERT_FALSE(options.ok()) << bad;
    EXPECT_NE(options.status().message().find("--global_rank"),
              std::string::npos)
        << options.status();
  }
}

// --dp_epsilon picks the noise for the run's rounds and sampling rate; the
// start-up line says what the run will spend.
TEST(EngineFlagsTest, PrivacyIsCalibratedToATargetEpsilon) {
  absl::FlagSaver restore;
  EXPECT_EQ(PrivacySummary(*EngineOptionsFromFlags(kImage)), "");
  absl::SetFlag(&FLAGS_bandit, "fixed");
  absl::SetFlag(&FLAGS_clip_norm, 0.5);
  absl::SetFlag(&FLAGS_selection, "poisson");
  absl::SetFlag(&FLAGS_sampling_rate, 0.05);
  absl::SetFlag(&FLAGS_rounds, 15);
  absl::SetFlag(&FLAGS_dp_epsilon, 8.0);
  absl::StatusOr<EngineOptions> options = EngineOptionsFromFlags(kImage);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_NEAR(strategies::SpentAfter(options->privacy, 15).epsilon, 8.0, 0.05);
  EXPECT_EQ(options->privacy.sampling_rate, 0.05);
  EXPECT_EQ(options->selection.sampling_rate, 0.05);
  EXPECT_NE(PrivacySummary(*options).find("after all 15 rounds"),
            std::string::npos)
      << PrivacySummary(*options);
  absl::SetFlag(&FLAGS_dp_noise_multiplier, 1.0);
  options = EngineOptionsFromFlags(kImage);
  ASSERT_FALSE(options.ok());
  EXPECT_NE(options.status().message().find("not both"), std::string::npos)
      << options.status();
}

// Local DP reaches the devices through the task; split training, which it
// does not cover, stays off unless a cut is asked for, which is refused.
TEST(EngineFlagsTest, LocalPrivacyTurnsAutomaticSplittingOff) {
  absl::FlagSaver restore;
  absl::SetFlag(&FLAGS_local_dp_clip, 1.0);
  absl::SetFlag(&FLAGS_local_dp_noise_multiplier, 1.3);
  absl::StatusOr<EngineOptions> options = EngineOptionsFromFlags(kImage);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->split.mode, "off");
  EXPECT_EQ(options->train.local_dp_noise_multiplier, 1.3);
  EXPECT_NE(PrivacySummary(*options).find("local differential privacy"),
            std::string::npos);
  absl::SetFlag(&FLAGS_split, "2");
  EXPECT_FALSE(EngineOptionsFromFlags(kImage).ok());
  absl::SetFlag(&FLAGS_split, "auto");
  absl::SetFlag(&FLAGS_local_dp_clip, 0.0);
  EXPECT_FALSE(EngineOptionsFromFlags(kImage).ok());  // Noise without a clip.
}

// Secure aggregation's flags reach its options; like local DP it turns
// automatic splitting off, and what it cannot run under is refused.
TEST(EngineFlagsTest, SecureAggregationTurnsAutomaticSplittingOff) {
  absl::FlagSaver restore;
  absl::SetFlag(&FLAGS_secure_aggregation, true);
  absl::SetFlag(&FLAGS_secure_clip_norm, 2.5);
  absl::SetFlag(&FLAGS_secure_phase_timeout_s, 30.0);
  absl::SetFlag(&FLAGS_min_devices, 3);
  absl::StatusOr<EngineOptions> options = EngineOptionsFromFlags(kImage);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_TRUE(options->secure.enabled);
  EXPECT_EQ(options->secure.clip_norm, 2.5);
  EXPECT_EQ(options->secure.phase_timeout, absl::Seconds(30));
  EXPECT_EQ(options->split.mode, "off");
  absl::SetFlag(&FLAGS_split, "2");
  EXPECT_FALSE(EngineOptionsFromFlags(kImage).ok());
  absl::SetFlag(&FLAGS_split, "auto");
  absl::SetFlag(&FLAGS_mode, "dense");
  EXPECT_FALSE(EngineOptionsFromFlags(kImage).ok());
  absl::SetFlag(&FLAGS_mode, "lora");
  absl::SetFlag(&FLAGS_min_devices, 1);
  EXPECT_FALSE(EngineOptionsFromFlags(kImage).ok());
  // With DP the devices clip to --secure_clip_norm and add the noise; the
  // start-up line says so.
  absl::SetFlag(&FLAGS_min_devices, 3);
  absl::SetFlag(&FLAGS_bandit, "fixed");
  absl::SetFlag(&FLAGS_dp_noise_multiplier, 1.0);
  options = EngineOptionsFromFlags(kImage);
  ASSERT_TRUE(options.ok()) << options.status();
  const std::string summary = PrivacySummary(*options);
  EXPECT_NE(summary.find("clip 2.5 (fixed; the devices clip and add the noise"),
            std::string::npos)
      << summary;
}

}  // namespace
}  // namespace fedge::coordinator
