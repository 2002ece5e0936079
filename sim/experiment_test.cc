#include "sim/experiment.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "sim/profiles.h"

namespace fedge::sim {
namespace {

using ::testing::HasSubstr;

// What `print` writes to a FILE*.
template <typename Print>
std::string Printed(Print print) {
  char* buffer = nullptr;
  size_t size = 0;
  FILE* out = open_memstream(&buffer, &size);
  print(out);
  std::fclose(out);
  std::string text(buffer, size);
  std::free(buffer);
  return text;
}

ExperimentOptions TwoDevices(const std::string& bin_dir) {
  ExperimentOptions options;
  options.config.bin_dir = bin_dir;
  options.config.out_dir = ::testing::TempDir() + "/experiment_out";
  options.config.devices = *AssignDevices("mix", 2);
  options.config.links = *AssignLinks("mix", 2);
  options.strategies = *ParseStrategies("fedspine");
  options.spec = task::FashionMnistTask();
  return options;
}

TEST(ExperimentTest, StrategiesNameTheirCoordinatorFlags) {
  absl::StatusOr<std::vector<Strategy>> parsed =
      ParseStrategies("fedspine,static,fixed:0.2:32");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 3u);
  EXPECT_EQ((*parsed)[1].name, "static");
  EXPECT_EQ((*parsed)[1].flags, std::vector<std::string>{"--bandit=static"});
  EXPECT_EQ((*parsed)[2].flags,
            (std::vector<std::string>{"--bandit=fixed", "--fixed_ratio=0.2",
                                      "--fixed_rank=32"}));
  EXPECT_EQ(ParseStrategies("fixed-grid")->size(), 8u);
  for (const char* bad : {"", "oracle", "fixed:1:4", "fixed:0.2", "static,x"}) {
    EXPECT_EQ(ParseStrategies(bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(ExperimentTest, EachTaskMetricIsReadFromItsColumn) {
  EXPECT_EQ(MetricOf(task::Metric::kAccuracy).column, AccuracyMetric().column);
  EXPECT_EQ(MetricOf(task::Metric::kLoss).column, LossMetric().column);
  EXPECT_EQ(MetricOf(task::Metric::kPerplexity).label,
            PerplexityMetric().label);
  EXPECT_EQ(MetricOf(task::Metric::kBitsPerByte).column,
            BitsPerByteMetric().column);
  EXPECT_FALSE(MetricOf(task::Metric::kBitsPerByte).higher_is_better);
  EXPECT_EQ(MetricOf(task::Metric::kExactMatch).label,
            ExactMatchMetric().label);
}

TEST(ExperimentTest, AMissingBinaryIsNamedBeforeAnythingRuns) {
  const std::string empty = ::testing::TempDir() + "/experiment_no_bin";
  std::filesystem::create_directories(empty);
  ExperimentOptions options = TwoDevices(empty);
  std::string printed = Printed([&](FILE* out) {
    const absl::StatusOr<ExperimentResult> result = RunExperiment(options, out);
    EXPECT_TRUE(absl::IsFailedPrecondition(result.status())) << result.status();
    EXPECT_THAT(result.status().message(),
                HasSubstr(empty + "/fedge-coordinator not found"));
  });
  EXPECT_EQ(printed, "");  // Nothing pretrained, nothing started.

  options.config.virtual_clock = true;
  const absl::StatusOr<ExperimentResult> result =
      RunExperiment(options, stderr);
  EXPECT_THAT(result.status().message(), HasSubstr("/fedge-vclock not found"));
}

TEST(ExperimentTest, DevicesAndLinksMustPair) {
  ExperimentOptions options = TwoDevices("/nonexistent");
  options.config.links.pop_back();
  const absl::StatusOr<ExperimentResult> result =
      RunExperiment(options, stderr);
  EXPECT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  EXPECT_THAT(result.status().message(), HasSubstr("got 2 and 1"));

  options = TwoDevices("/nonexistent");
  options.strategies.clear();
  EXPECT_TRUE(absl::IsInvalidArgument(RunExperiment(options, stderr).status()));
}

// A speed swap is checked before anything runs: the virtual clock only, and
// devices that exist.
TEST(ExperimentTest, ASpeedSwapNeedsTheVirtualClockAndItsDevices) {
  ExperimentOptions options = TwoDevices("/nonexistent");
  options.config.swap_speeds = "3:0-1";
  absl::StatusOr<ExperimentResult> result = RunExperiment(options, stderr);
  EXPECT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  EXPECT_THAT(result.status().message(), HasSubstr("--clock=virtual"));

  options.config.virtual_clock = true;
  options.config.swap_speeds = "3:0-2";
  result = RunExperiment(options, stderr);
  EXPECT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  EXPECT_THAT(result.status().message(), HasSubstr("3:0-2"));

  // A valid swap passes the checks: the missing binary is what stops it.
  options.config.swap_speeds = "3:0-1";
  result = RunExperiment(options, stderr);
  EXPECT_TRUE(absl::IsFailedPrecondition(result.status())) << result.status();
}

TEST(ExperimentTest, NotesSayTheModeTheTargetAndTheVerdict) {
  ExperimentOptions options = TwoDevices("/bin");
  ExperimentResult result;
  result.cpu_mode = "dilate";
  result.base_value = 0.5;
  result.target = 0.6;

  std::vector<std::string> notes = ReportNotes(options, result);
  ASSERT_EQ(notes.size(), 6u);
  EXPECT_THAT(notes[0], HasSubstr("Mode: real time"));
  EXPECT_EQ(notes[1], "Device speed emulation: dilate");
  EXPECT_THAT(notes[3], HasSubstr("Task fashion-mnist"));
  EXPECT_THAT(notes[4], HasSubstr("60.00%"));
  EXPECT_EQ(notes[5], "Consistency checks: all records consistent.");

  options.config.virtual_clock = true;
  options.config.swap_speeds = "9:0-15";
  result.problems = {"fedspine: round 3 bytes differ", "fedspine: ..."};
  notes = ReportNotes(options, result);
  EXPECT_THAT(notes[0], HasSubstr("VIRTUAL CLOCK"));
  EXPECT_THAT(notes[4], HasSubstr("trade speeds (round:pairs): 9:0-15"));
  EXPECT_EQ(notes[5], "Consistency problems: 2 (see stderr)");
}

TEST(ExperimentTest, TheTableShowsEveryStrategyAndWhichNeverReached) {
  StrategySummary reached, censored;
  reached.name = "fedspine";
  reached.rounds = 10;
  reached.final_value = 0.75;
  reached.time_to_target_s = 12.5;
  censored.name = "fixed:0:8";
  censored.rounds = 10;
  censored.final_value = 0.7;
  const std::string table = Printed([&](FILE* out) {
    PrintSummaryTable({reached, censored}, AccuracyMetric(), out);
  });
  EXPECT_THAT(table, HasSubstr("to target"));
  EXPECT_THAT(table, HasSubstr("12.5s"));
  const size_t row = table.find("fixed:0:8");
  ASSERT_NE(row, std::string::npos);
  EXPECT_THAT(table.substr(row, table.find('\n', row) - row), HasSubstr(" - "));
}

}  // namespace
}  // namespace fedge::sim
