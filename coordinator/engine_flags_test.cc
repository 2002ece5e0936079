#include "coordinator/engine_flags.h"

#include <string>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "gtest/gtest.h"

ABSL_DECLARE_FLAG(std::string, mode);
ABSL_DECLARE_FLAG(std::string, bandit);
ABSL_DECLARE_FLAG(double, fixed_ratio);

namespace fedge::coordinator {
namespace {

TEST(EngineFlagsTest, AutoBanditIsFedSpineForLoraAndPlainFedAvgForDense) {
  absl::FlagSaver restore;
  absl::StatusOr<EngineOptions> lora = EngineOptionsFromFlags();
  ASSERT_TRUE(lora.ok()) << lora.status();
  EXPECT_EQ(lora->bandit.kind, strategies::BanditKind::kFedSpine);

  absl::SetFlag(&FLAGS_mode, "dense");
  absl::StatusOr<EngineOptions> dense = EngineOptionsFromFlags();
  ASSERT_TRUE(dense.ok()) << dense.status();
  EXPECT_EQ(dense->bandit.kind, strategies::BanditKind::kFixed);
  EXPECT_EQ(dense->bandit.fixed_arm.prune_ratio, 0.0);

  // Asked for, a bandit still chooses (pruned dense sub-models).
  absl::SetFlag(&FLAGS_bandit, "fedspine");
  absl::StatusOr<EngineOptions> asked = EngineOptionsFromFlags();
  ASSERT_TRUE(asked.ok()) << asked.status();
  EXPECT_EQ(asked->bandit.kind, strategies::BanditKind::kFedSpine);
}

TEST(EngineFlagsTest, AnUnknownBanditIsNamed) {
  absl::FlagSaver restore;
  absl::SetFlag(&FLAGS_bandit, "greedy");
  absl::StatusOr<EngineOptions> options = EngineOptionsFromFlags();
  ASSERT_FALSE(options.ok());
  EXPECT_NE(options.status().message().find("--bandit"), std::string::npos)
      << options.status();
}

}  // namespace
}  // namespace fedge::coordinator
