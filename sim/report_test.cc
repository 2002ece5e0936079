#include "sim/report.h"

#include <cmath>
#include <filesystem>

#include "gtest/gtest.h"
#include <nlohmann/json.hpp>

#include "metrics/csv.h"

namespace fedge::sim {
namespace {

// An accuracy report's description.
ReportInfo Info(std::string title, std::vector<std::string> notes,
                double target) {
  ReportInfo info;
  info.title = std::move(title);
  info.notes = std::move(notes);
  info.target = target;
  return info;
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos;
       at = text.find(what, at + 1)) {
    ++n;
  }
  return n;
}

// Two rounds, two devices (ethernet and 5g-sa); accuracy 0.80 then 0.85.
std::string WriteRun(const std::string& name, bool break_timing = false) {
  const std::string dir = ::testing::TempDir() + "/report_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto rounds = *metrics::CsvWriter::Open(
      dir + "/rounds.csv", {"round", "committed", "invited", "accepted",
                            "round_s", "aggregate_s", "accuracy", "unix_time"});
  EXPECT_TRUE(
      rounds->Write({"1", "1", "2", "2", "10", "0.1", "0.80", "1010"}).ok());
  EXPECT_TRUE(
      rounds->Write({"2", "1", "2", "2", "10", "0.1", "0.85", "1020"}).ok());
  auto clients = *metrics::CsvWriter::Open(
      dir + "/clients.csv",
      {"round", "device", "link", "status", "arm_prune_ratio", "prune_ratio",
       "rank", "download_s", "train_s", "upload_s", "wait_s", "elapsed_s",
       "bytes_down", "bytes_up", "peak_rss_mb"});
  for (const char* round : {"1", "2"}) {
    EXPECT_TRUE(clients
                    ->Write({round, "device-0", "ethernet", "accepted", "0.2",
                             "0.2", "8", "0.1", "5", "0.1", "4.5", "5.4",
                             "1000", "500", "200"})
                    .ok());
    EXPECT_TRUE(clients
                    ->Write({round, "device-1", "5g-sa", "accepted", "0.6",
                             "0.6", "4", "0.5", "6", break_timing ? "9" : "3",
                             "0.2", "9.7", "1000", "300", "150"})
                    .ok());
  }
  return dir;
}

TEST(ReportTest, SummarisesTimeToTargetBytesAndUploadShares) {
  absl::StatusOr<StrategyRun> run = LoadRun("fedspine", WriteRun("a"), 1000);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_TRUE(CheckConsistency(*run).empty());
  const StrategySummary s = Summarize(*run, 0.84);
  EXPECT_EQ(s.rounds, 2);
  EXPECT_DOUBLE_EQ(s.final_value, 0.85);
  EXPECT_DOUBLE_EQ(s.time_to_target_s, 20);
  EXPECT_DOUBLE_EQ(Summarize(*run, 0.9).time_to_target_s, -1);
  EXPECT_DOUBLE_EQ(s.mean_prune_ratio, 0.4);
  EXPECT_DOUBLE_EQ(s.mean_rank, 6);
  EXPECT_EQ(s.bytes_up, 1600);
  EXPECT_NEAR(s.by_link.at("5g-sa").upload_share(), 3 / 9.7, 1e-9);
  EXPECT_DOUBLE_EQ(s.by_link.at("5g-sa").upload_median, 3);

  const std::string json = SummaryJson({s}, Info("t", {"note"}, 0.84));
  nlohmann::json parsed = nlohmann::json::parse(json);
  EXPECT_EQ(parsed["strategies"][0]["time_to_target_s"], 20);
  EXPECT_EQ(parsed["strategies"][0]["dp_epsilon"], -1);
}

// A run with differential privacy: the epsilon its last committed round
// had spent, in the summary and the report's table.
TEST(ReportTest, ThePrivacySpentIsReported) {
  absl::StatusOr<StrategyRun> run = LoadRun("dp", WriteRun("dp"), 1000);
  ASSERT_TRUE(run.ok()) << run.status();
  run->rounds[0]["dp_epsilon"] = "3.5";
  run->rounds[1]["dp_epsilon"] = "4.25";
  const StrategySummary s = Summarize(*run, 0.84);
  EXPECT_DOUBLE_EQ(s.dp_epsilon, 4.25);
  const std::string html = HtmlReport({*run}, {s}, Info("t", {}, 0.84));
  EXPECT_NE(html.find("<th>DP epsilon</th>"), std::string::npos);
  EXPECT_NE(html.find("<td>4.25</td>"), std::string::npos);
}

// A run with secure aggregation: its phases' medians in the summary, the
// JSON and a table of their own; a run without has none of them.
TEST(ReportTest, SecureAggregationPhasesAreSummarised) {
  absl::StatusOr<StrategyRun> run = LoadRun("secure", WriteRun("sa"), 1000);
  ASSERT_TRUE(run.ok()) << run.status();
  const StrategySummary plain = Summarize(*run, 0.84);
  EXPECT_EQ(plain.secure.attempts, 0);
  EXPECT_EQ(nlohmann::json::parse(
                SummaryJson({plain}, Info("t", {}, 0.84)))["strategies"][0]
                .count("secure_aggregation"),
            0u);
  EXPECT_EQ(
      HtmlReport({*run}, {plain}, Info("t", {}, 0.84)).find("id=\"secure\""),
      std::string::npos);

  const std::vector<std::vector<std::string>> values = {
      {"0.5", "0.25", "1.5", "0.75", "0.01", "2000", "4000", "0"},
      {"0.7", "0.35", "2.5", "0.95", "0.03", "3000", "6000", "1"}};
  for (size_t i = 0; i < 2; ++i) {
    const std::vector<std::string> columns = {
        "secagg_advertise_s", "secagg_share_keys_s", "secagg_mask_s",
        "secagg_unmask_s",    "secagg_sum_s",        "secagg_bytes_up",
        "secagg_bytes_down",  "secagg_excluded"};
    for (size_t k = 0; k < columns.size(); ++k) {
      run->rounds[i][columns[k]] = values[i][k];
    }
  }
  const StrategySummary s = Summarize(*run, 0.84);
  EXPECT_EQ(s.secure.attempts, 2);
  EXPECT_DOUBLE_EQ(s.secure.advertise_s, 0.6);
  EXPECT_DOUBLE_EQ(s.secure.mask_s, 2.0);
  EXPECT_DOUBLE_EQ(s.secure.sum_s, 0.02);
  EXPECT_DOUBLE_EQ(s.secure.bytes_down, 5000);
  EXPECT_EQ(s.secure.excluded, 1);
  const nlohmann::json json =
      nlohmann::json::parse(SummaryJson({s}, Info("t", {}, 0.84)));
  EXPECT_NEAR(
      json["strategies"][0]["secure_aggregation"]["unmask_s"].get<double>(),
      0.85, 1e-12);
  const std::string html = HtmlReport({*run}, {s}, Info("t", {}, 0.84));
  EXPECT_NE(html.find("<td>secure</td><td>2</td><td>0.600 s</td><td>0.300 "
                      "s</td><td>2.000 s</td><td>0.850 s</td><td>0.020 s</td>"
                      "<td>2.5</td><td>5.0</td><td>1</td>"),
            std::string::npos)
      << html;
}

TEST(ReportTest, MedianUploadIgnoresAFewSlowedUploads) {
  absl::StatusOr<StrategyRun> run = LoadRun("fedspine", WriteRun("m"), 1000);
  ASSERT_TRUE(run.ok()) << run.status();
  // Ethernet uploads 0.1 s in rounds 1 and 2; a third, held up 2 s by a
  // busy CPU, moves the mean, not the median.
  Row slowed = run->clients.front();
  ASSERT_EQ(RowText(slowed, "link"), "ethernet");
  slowed["round"] = "3";
  slowed["upload_s"] = "2.1";
  run->clients.push_back(slowed);
  const PhaseShares ethernet = Summarize(*run, 0.84).by_link.at("ethernet");
  EXPECT_NEAR(ethernet.upload, 2.3 / 3, 1e-9);
  EXPECT_DOUBLE_EQ(ethernet.upload_median, 0.1);
  // An even count: the mean of the middle two.
  slowed["round"] = "4";
  slowed["upload_s"] = "0.3";
  run->clients.push_back(slowed);
  EXPECT_DOUBLE_EQ(Summarize(*run, 0.84).by_link.at("ethernet").upload_median,
                   0.2);
  nlohmann::json parsed = nlohmann::json::parse(
      SummaryJson({Summarize(*run, 0.84)}, Info("t", {"note"}, 0.84)));
  EXPECT_DOUBLE_EQ(
      parsed["strategies"][0]["links"]["ethernet"]["upload_median_s"], 0.2);
}

TEST(ReportTest, DefaultTargetIsHalfwayToTheBestAccuracy) {
  absl::StatusOr<StrategyRun> run = LoadRun("fedspine", WriteRun("t"), 1000);
  ASSERT_TRUE(run.ok()) << run.status();
  // Best 0.85 from base 0.75: 0.80.
  EXPECT_DOUBLE_EQ(DefaultTarget({*run}, AccuracyMetric(), 0.75), 0.80);
  // No run gained half a point: base + 0.5 points.
  EXPECT_DOUBLE_EQ(DefaultTarget({*run}, AccuracyMetric(), 0.848), 0.853);
  EXPECT_DOUBLE_EQ(DefaultTarget({}, AccuracyMetric(), 0.5), 0.505);
}

// A text task's bits per byte: lower is better, in the summary, the default
// target, time to target and the report's labels.
TEST(ReportTest, BitsPerByteIsSummarisedLowerIsBetter) {
  const std::string dir = WriteRun("bpb");
  std::filesystem::remove(dir + "/rounds.csv");
  auto rounds = *metrics::CsvWriter::Open(
      dir + "/rounds.csv",
      {"round", "committed", "invited", "accepted", "round_s", "aggregate_s",
       "accuracy", "test_bits_per_byte", "unix_time"});
  ASSERT_TRUE(
      rounds->Write({"1", "1", "2", "2", "10", "0.1", "0.3", "2.05", "1010"})
          .ok());
  ASSERT_TRUE(
      rounds->Write({"2", "1", "2", "2", "10", "0.1", "0.3", "1.90", "1020"})
          .ok());
  rounds.reset();
  absl::StatusOr<StrategyRun> run = LoadRun("fedspine", dir, 1000);
  ASSERT_TRUE(run.ok()) << run.status();
  run->metric = BitsPerByteMetric();
  run->base_value = 2.3;
  // Halfway from 2.3 to the best, 1.9: 2.1, passed in round 1 (2.05).
  const double target = DefaultTarget({*run}, run->metric, 2.3);
  EXPECT_NEAR(target, 2.1, 1e-12);
  const StrategySummary s = Summarize(*run, target);
  EXPECT_DOUBLE_EQ(s.final_value, 1.9);
  EXPECT_DOUBLE_EQ(s.best_value, 1.9);
  EXPECT_DOUBLE_EQ(s.time_to_target_s, 10);
  // Nothing better than the base by 0.005: the target is base - 0.005.
  EXPECT_NEAR(DefaultTarget({}, run->metric, 2.3), 2.295, 1e-12);
  ReportInfo info;
  info.metric = run->metric;
  info.target = target;
  info.base_value = 2.3;
  const std::string html = HtmlReport({*run}, {s}, info);
  EXPECT_NE(html.find("bits per byte versus wall time"), std::string::npos);
  EXPECT_NE(html.find("<td>1.9000</td>"), std::string::npos);
  EXPECT_TRUE(CheckConsistency(*run).empty());
}

// Every metric reads its own column; perplexity is exp(test_loss), and a
// round without an evaluation reads as -1 whatever the metric.
TEST(ReportTest, MetricsReadTheirColumns) {
  const Row row = {
      {"accuracy", "0.8"}, {"test_loss", "2"}, {"test_bits_per_byte", "1.5"}};
  EXPECT_DOUBLE_EQ(AccuracyMetric().Read(row), 0.8);
  EXPECT_DOUBLE_EQ(LossMetric().Read(row), 2);
  EXPECT_DOUBLE_EQ(PerplexityMetric().Read(row), std::exp(2.0));
  EXPECT_DOUBLE_EQ(BitsPerByteMetric().Read(row), 1.5);
  const Row empty = {{"accuracy", ""}, {"test_loss", ""}};
  EXPECT_EQ(PerplexityMetric().Read(empty), -1);
  EXPECT_EQ(AccuracyMetric().Read(empty), -1);
  EXPECT_FALSE(PerplexityMetric().higher_is_better);
}

TEST(ReportTest, FlagsPhasesThatDoNotFitTheirElapsedTime) {
  absl::StatusOr<StrategyRun> run = LoadRun("bad", WriteRun("b", true), 1000);
  ASSERT_TRUE(run.ok());
  const std::vector<std::string> problems = CheckConsistency(*run);
  ASSERT_EQ(problems.size(), 2u);  // device-1 in both rounds.
  EXPECT_NE(problems[0].find("device-1"), std::string::npos) << problems[0];
}

TEST(ReportTest, HtmlHasEveryPlotAndNoExternalAssets) {
  StrategyRun a = *LoadRun("fedspine", WriteRun("c"), 1000);
  StrategyRun b = *LoadRun("random", WriteRun("d"), 1000);
  a.device_profiles = {{"device-0", "laptop"}, {"device-1", "pi4"}};
  const std::vector<StrategySummary> summaries = {Summarize(a, 0.84),
                                                  Summarize(b, 0.84)};
  const std::string html =
      HtmlReport({a, b}, summaries, Info("title <&>", {"mode"}, 0.84));
  EXPECT_NE(html.find("title &lt;&amp;&gt;"), std::string::npos);
  EXPECT_EQ(Count(html, "class=\"metric\""), 2u);  // One line each.
  EXPECT_EQ(Count(html, "<svg"), 5u);  // Accuracy, 2 links, arms, memory.
  EXPECT_EQ(Count(html, "class=\"phase-upload\""), 4u);  // 2 links x 2.
  EXPECT_EQ(Count(html, "class=\"arm\""), 4u);
  EXPECT_EQ(Count(html, "class=\"memory\""), 2u);
  EXPECT_NE(html.find("device-1 (pi4)"), std::string::npos);
  EXPECT_EQ(html.find("http://"), html.find("http://www.w3.org/2000/svg"));
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
}

TEST(ReportTest, BytesMustEqualWhatTheDeviceCounted) {
  const std::string dir = WriteRun("e");
  auto own = *metrics::CsvWriter::Open(dir + "/device-0.csv",
                                       {"round", "bytes_down", "bytes_up"});
  ASSERT_TRUE(own->Write({"1", "1000", "500"}).ok());
  ASSERT_TRUE(own->Write({"2", "1000", "499"}).ok());
  own.reset();
  absl::StatusOr<StrategyRun> run = LoadRun("e", dir, 1000);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->device_reports.size(), 1u);
  const std::vector<std::string> problems = CheckConsistency(*run);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("round 2 device-0"), std::string::npos)
      << problems[0];
}

TEST(ReportTest, RefusedUpdatesAreListedByDeviceAndCode) {
  const std::string dir = WriteRun("refused");
  StrategyRun quiet = *LoadRun("quiet", WriteRun("quiet"), 1000);
  const std::string none =
      HtmlReport({quiet}, {Summarize(quiet, 0.84)}, Info("t", {}, 0.84));
  EXPECT_NE(none.find("Refused updates</h2><p id=\"refusals\">None"),
            std::string::npos);

  auto refusals = *metrics::CsvWriter::Open(
      dir + "/refusals.csv",
      {"unix_time", "device_id", "round", "code", "message"});
  ASSERT_TRUE(refusals
                  ->Write({"1011", "device-1", "2", "INVALID_ARGUMENT",
                           "update tensor \"x\": encoded as CODEC_FLOAT32"})
                  .ok());
  ASSERT_TRUE(refusals
                  ->Write({"1012", "device-1", "2", "INVALID_ARGUMENT",
                           "update tensor \"x\": NaN"})
                  .ok());
  refusals.reset();
  StrategyRun run = *LoadRun("fedspine", dir, 1000);
  ASSERT_EQ(run.refusals.size(), 2u);
  const std::string html =
      HtmlReport({run}, {Summarize(run, 0.84)}, Info("t", {}, 0.84));
  EXPECT_NE(html.find("<td>fedspine</td><td>device-1</td><td>"
                      "INVALID_ARGUMENT</td><td>2</td><td>update tensor "
                      "&quot;x&quot;: NaN</td>"),
            std::string::npos)
      << html;
}

TEST(ReportTest, MissingRecordsAreNotFound) {
  EXPECT_EQ(LoadRun("x", "/nonexistent/run", 0).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace fedge::sim
