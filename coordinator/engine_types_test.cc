#include "coordinator/engine_types.h"

#include <cmath>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

#include "tests/testing/tiny_models.h"

namespace fedge::coordinator {
namespace {

TEST(TrainSpecTest, TheRoundScheduleDecaysThePeakLearningRate) {
  TrainSpec t;
  t.learning_rate = 0.01;
  EXPECT_DOUBLE_EQ(t.RoundLearningRate(1, 4), 0.01);
  EXPECT_DOUBLE_EQ(t.RoundLearningRate(4, 4), 0.01);  // Constant.
  t.round_schedule = "cosine";
  EXPECT_DOUBLE_EQ(t.RoundLearningRate(1, 4), 0.01);
  EXPECT_NEAR(t.RoundLearningRate(3, 4), 0.005, 1e-12);  // cos(pi / 2).
  EXPECT_GT(t.RoundLearningRate(4, 4), 0);  // The last round still trains.
  EXPECT_LT(t.RoundLearningRate(4, 4), t.RoundLearningRate(3, 4));
  EXPECT_DOUBLE_EQ(t.RoundLearningRate(9, 4), t.RoundLearningRate(4, 4));
}

TEST(EngineOptionsTest, AnUnknownRoundScheduleIsRefused) {
  EngineOptions o;
  EXPECT_TRUE(o.Validate().ok());
  o.train.round_schedule = "linear";
  const absl::Status s = o.Validate();
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_NE(s.message().find("round schedule"), std::string::npos) << s;
}

TEST(EngineOptionsTest, AnUnknownInRoundScheduleIsRefusedByName) {
  EngineOptions o;
  o.train.in_round_schedule = "constant";
  EXPECT_TRUE(o.Validate().ok());
  o.train.in_round_schedule = "step";
  const absl::Status s = o.Validate();
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_NE(s.message().find("in-round schedule"), std::string::npos) << s;
  EXPECT_NE(s.message().find("'step'"), std::string::npos) << s;
}

TEST(EngineOptionsTest, FillingThePaceMultipliesAStepCap) {
  EngineOptions o;
  o.train.fill_pace = 4;
  absl::Status s = o.Validate();
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_NE(s.message().find("needs max_steps > 0"), std::string::npos) << s;
  o.train.max_steps = 10;
  EXPECT_TRUE(o.Validate().ok());
  for (double bad : {0.5, -1.0, double{NAN}, double{INFINITY}}) {
    o.train.fill_pace = bad;
    s = o.Validate();
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << bad;
    EXPECT_NE(s.message().find("fill_pace"), std::string::npos) << s;
  }
}

TEST(EngineOptionsTest, CompressedDownloadsAreDenseAndNotSparse) {
  EngineOptions o;
  o.mode = Mode::kDense;
  o.download_codec = "int8_row";
  EXPECT_TRUE(o.Validate().ok());
  o.download_codec = "topk";
  EXPECT_TRUE(absl::IsInvalidArgument(o.Validate()));
  o.download_codec = "int9";
  EXPECT_TRUE(absl::IsInvalidArgument(o.Validate()));
  o.mode = Mode::kLora;
  o.download_codec = "float16";
  const absl::Status s = o.Validate();
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_NE(s.message().find("dense mode"), std::string::npos) << s;
}

TEST(EngineOptionsTest, AGlobalRankIsPositiveAndForLora) {
  EngineOptions o;
  o.global_rank = 16;
  EXPECT_TRUE(o.Validate().ok());
  o.global_rank = kAutoGlobalRank;
  EXPECT_TRUE(o.Validate().ok());
  o.global_rank = -2;
  EXPECT_TRUE(absl::IsInvalidArgument(o.Validate()));
  o.global_rank = 16;
  o.mode = Mode::kDense;
  const absl::Status s = o.Validate();
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_NE(s.message().find("global rank"), std::string::npos) << s;
}

// auto: the largest rank any device may play, whichever way arms are
// given; nothing in dense mode; an explicit rank as asked.
TEST(EngineOptionsTest, TheAutomaticGlobalRankIsTheLargestPlayable) {
  EngineOptions o;
  o.bandit.space.ranks = {4, 16, 32};
  EXPECT_EQ(EffectiveGlobalRank(o), 32);
  o.bandit.kind = strategies::BanditKind::kFixed;
  o.bandit.fixed_arm = {0.2, 16};
  EXPECT_EQ(EffectiveGlobalRank(o), 16);
  o.device_arms["device-3"] = {0.4, 4};
  EXPECT_EQ(EffectiveGlobalRank(o), 16);
  o.device_arms["device-7"] = {0.0, 64};
  EXPECT_EQ(EffectiveGlobalRank(o), 64);
  o.global_rank = 8;
  EXPECT_EQ(EffectiveGlobalRank(o), 8);
  o.global_rank = 0;
  EXPECT_EQ(EffectiveGlobalRank(o), 0);
  o.global_rank = kAutoGlobalRank;
  o.mode = Mode::kDense;
  EXPECT_EQ(EffectiveGlobalRank(o), 0);
}

// A rank-1 adapter on q and v of every block adds (in + out) per target
// over the base's parameters; dense mode trains no adapter.
TEST(EngineOptionsTest, TrainingWorkCountsTheAdaptersPerRank) {
  const model::Vit vit = testing::TinyVit(16);
  EngineOptions o;
  o.lora.target_modules = {"q_proj", "v_proj"};
  const strategies::WorkShares lora = TrainingWork(*vit, o);
  double all = 0, adapter = 0;
  for (const auto& item : vit->named_parameters()) {
    all += static_cast<double>(item.value().numel());
    const std::string& name = item.key();
    if (absl::EndsWith(name, "q_proj.weight") ||
        absl::EndsWith(name, "v_proj.weight")) {
      adapter +=
          static_cast<double>(item.value().size(0) + item.value().size(1));
    }
  }
  ASSERT_GT(adapter, 0);
  EXPECT_DOUBLE_EQ(lora.per_rank, adapter / all);
  EXPECT_DOUBLE_EQ(lora.prunable, pruning::PrunableShare(*vit));
  o.mode = Mode::kDense;
  EXPECT_EQ(TrainingWork(*vit, o).per_rank, 0.0);
}

TEST(EngineTypesTest, SecureAggregationRefusesWhatWouldSeeOneUpdate) {
  EngineOptions o;
  o.min_devices = 2;
  o.split.mode = "off";
  o.secure.enabled = true;
  EXPECT_TRUE(o.Validate().ok()) << o.Validate();
  const auto refused = [](EngineOptions bad, absl::string_view names) {
    const absl::Status s = bad.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << names;
    EXPECT_NE(s.message().find(names), absl::string_view::npos) << s;
  };
  EngineOptions bad = o;
  bad.mode = Mode::kDense;
  refused(bad, "--mode=lora");
  bad = o;
  bad.aggregator.kind = strategies::AggregatorKind::kMedian;
  refused(bad, "--aggregator=mean");
  bad = o;
  bad.aggregator.clip_norm = 1;
  refused(bad, "--clip_norm");
  bad = o;
  bad.split.mode = "auto";
  refused(bad, "--split=off");
  bad = o;
  bad.min_devices = 1;
  refused(bad, "--min_devices");
  bad = o;
  bad.secure.clip_norm = 0;
  refused(bad, "--secure_clip_norm");
  // Distributed DP: the devices clip to --secure_clip_norm, so --clip_norm
  // stays 0; the clip must stay fixed.
  EngineOptions dp = o;
  dp.privacy.noise_multiplier = 1;
  dp.bandit.kind = strategies::BanditKind::kFixed;
  dp.selection.kind = strategies::SelectionKind::kAll;
  EXPECT_TRUE(dp.Validate().ok()) << dp.Validate();
  bad = dp;
  bad.privacy.target_quantile = 0.5;
  refused(bad, "--dp_target_quantile=0");
  bad = dp;
  bad.secure.enabled = false;
  EXPECT_NE(bad.Validate().message().find("--clip_norm > 0"),
            absl::string_view::npos)
      << bad.Validate();
}

// A device's timings feed the bandits and the records: each field that is
// negative or not finite is refused by name.
TEST(EngineTypesTest, TimingsMustBeFiniteAndNonNegative) {
  EXPECT_TRUE(ValidateTimings(Timings()).ok());
  const auto refused = [](const Timings& t, absl::string_view field) {
    const absl::Status s = ValidateTimings(t);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(s.message().find(field), absl::string_view::npos) << s;
  };
  Timings t;
  t.train_s = NAN;
  refused(t, "timings.train_s");
  t = Timings();
  t.upload_s = INFINITY;
  refused(t, "timings.upload_s");
  t = Timings();
  t.secagg_mask_s = -1;
  refused(t, "timings.secagg_mask_s");
  t = Timings();
  t.raw_bytes_up = -4;
  refused(t, "timings.raw_bytes_up");
  t = Timings();
  t.split_bytes_down = -1;
  refused(t, "timings.split_bytes_down");
}

}  // namespace
}  // namespace fedge::coordinator
