// The results of simulated federations: each strategy's run read back from
// the coordinator's CSVs, summarised (time to a target value of the task's
// metric, its final value, bytes, sparsity, phase shares per link type),
// checked for
// consistency, and rendered as a JSON summary and a self-contained HTML
// report with SVG plots (no external assets).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedge::sim {

// The task's metric (its evaluation.metric) as rounds.csv records it.
struct Metric {
  std::string column = "accuracy";  // rounds.csv column.
  std::string label = "accuracy";   // For people.
  bool higher_is_better = true;
  bool percent = true;    // Print as a percentage.
  bool exponent = false;  // The metric is exp(column): perplexity.
  // "87.20%" or "1.2345".
  std::string Format(double value) const;
  // Whether `value` is at least as good as `target`.
  bool Reaches(double value, double target) const;
  // The metric in `row`; -1 if the row was not evaluated.
  double Read(const std::map<std::string, std::string>& row) const;
};
Metric AccuracyMetric();
Metric BitsPerByteMetric();
Metric ExactMatchMetric();  // Share of held-out instruction records, in %.
Metric LossMetric();
Metric PerplexityMetric();

// One row of a CSV file by column name.
using Row = std::map<std::string, std::string>;

// A row's field as text ("" if absent) or as a number (`fallback` if
// absent or not a number).
std::string RowText(const Row& row, const std::string& column);
double RowNumber(const Row& row, const std::string& column,
                 double fallback = 0);

// One strategy's federation as the coordinator recorded it.
struct StrategyRun {
  std::string name;       // "fedspine", "fixed p=0.3 r=8", ...
  std::string run_dir;    // Holds rounds.csv and clients.csv.
  double start_unix = 0;  // When the coordinator started.
  Metric metric;
  double base_value = -1;  // The pretrained model's metric, if known.
  std::vector<Row> rounds;
  std::vector<Row> clients;
  // What each device measured itself (fedge-client --report_csv files
  // run_dir/<device>.csv), by device id; empty if there were none.
  std::map<std::string, std::vector<Row>> device_reports;
  // Per device: its profile name ("pi4", ...), for the report.
  std::map<std::string, std::string> device_profiles;
  // refusals.csv: the coordinator's refused SubmitUpdates (none if the
  // file is absent, as fedge-vclock writes none).
  std::vector<Row> refusals;
};

// Reads run_dir/rounds.csv, run_dir/clients.csv and any device reports
// run_dir/device-*.csv. NotFound or
// InvalidArgument naming the file for a missing or malformed one.
absl::StatusOr<StrategyRun> LoadRun(const std::string& name,
                                    const std::string& run_dir,
                                    double start_unix);

struct PhaseShares {
  double download = 0, train = 0, upload = 0, wait = 0;  // Mean seconds.
  // The median seconds of one upload: what the link takes. A mean of
  // small uploads is swayed by the few that also waited for their
  // device's emulated CPU (a throttled cgroup waits out its 100 ms period).
  double upload_median = 0;
  int64_t rows = 0;
  double upload_share() const;  // upload / (sum of the four).
};

struct StrategySummary {
  std::string name;
  int64_t rounds = 0;            // Committed rounds.
  double final_value = -1;       // The metric of the last evaluated round.
  double best_value = -1;        // The best of any evaluated round.
  double time_to_target_s = -1;  // -1: never reached.
  double wall_s = 0;             // Start to the last round's close.
  double mean_prune_ratio = 0;   // Over accepted updates.
  double mean_rank = 0;
  int64_t bytes_up = 0, bytes_down = 0;
  // Differential privacy: epsilon spent by the last committed round; -1
  // for a run without.
  double dp_epsilon = -1;
  std::map<std::string, PhaseShares> by_link;
  // Secure aggregation (rounds.csv's secagg_* columns): the median over
  // its round attempts (retried ones too: their exchange was spent) of
  // each phase's seconds and of its key, share and unmasking bytes;
  // attempts = 0 for a run without.
  struct Secure {
    int64_t attempts = 0;
    double advertise_s = 0, share_keys_s = 0, mask_s = 0, unmask_s = 0;
    double sum_s = 0;
    double bytes_up = 0, bytes_down = 0;
    int64_t excluded = 0;  // Devices excluded, over all its rounds.
  } secure;
};

StrategySummary Summarize(const StrategyRun& run, double target);

// The default time-to-target value of the runs' metric: halfway from
// `base_value` (the model before any round) to the best value any of `runs`
// reached, and at least 0.5 accuracy points (0.005 bits per byte) better
// than the base. A target every start meets in round 1 (one just past the
// base) compares round-1 lengths, not learning; one only the best run
// reaches ranks nothing else.
double DefaultTarget(const std::vector<StrategyRun>& runs, const Metric& metric,
                     double base_value);

// Problems found, empty if none: every accepted row's phases fit in its
// elapsed time (5% + 50 ms slack), elapsed + wait matches the round's time
// (10% + 0.5 s), bytes are positive and equal what the device itself
// counted (its report, if any), and accuracy is in [0, 1] (bits per byte
// positive and finite).
std::vector<std::string> CheckConsistency(const StrategyRun& run);

struct ReportInfo {
  std::string title;
  std::vector<std::string> notes;  // How it ran (emulation modes, ...).
  double target = 0;               // Of the metric.
  double base_value = -1;  // Before any round, on the same held-out data.
  Metric metric;
};

std::string SummaryJson(const std::vector<StrategySummary>& summaries,
                        const ReportInfo& info);

// The whole report: the strategy table (with speedups over each), the
// metric versus wall time per strategy, the per-round time breakdown per link
// type, the arms chosen per device over rounds and peak memory per device
// (these three for the first run).
std::string HtmlReport(const std::vector<StrategyRun>& runs,
                       const std::vector<StrategySummary>& summaries,
                       const ReportInfo& info);

}  // namespace fedge::sim
