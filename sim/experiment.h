// What fedge-sim does, as a library call: one experiment is the task's base
// model (pretrained once with fedge-pretrain if its directory has none), its
// metric on the held-out data, the same federation (devices, links, shards,
// seeds) run under each strategy, and the report (summary.json and
// report.html in out_dir) built from the coordinator's records.
// fedge-sim's main() only turns flags into ExperimentOptions.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

#include "sim/federation.h"
#include "sim/report.h"
#include "task/spec.h"

namespace fedge::sim {

struct ExperimentOptions {
  // Shared by every strategy; base_dir and task_args are the task's.
  SimConfig config;
  std::vector<Strategy> strategies;
  task::TaskSpec spec;
  // Time-to-target threshold in the task's metric; <= 0: DefaultTarget
  // (chosen from the runs, before any is summarised).
  double target = 0;
};

struct ExperimentResult {
  std::vector<StrategySummary> summaries;  // One per strategy, in order.
  // Records that failed their consistency check, "strategy: problem".
  std::vector<std::string> problems;
  double base_value = 0;  // The base model's metric.
  double target = 0;
  std::string cpu_mode;  // How device speeds were emulated.
  // Real clock: each link profile's emulator measured at start-up against
  // its claim ("wifi up 500 -> 497 Mbit/s, ..."); empty on the virtual
  // clock, which charges the profiles' rates exactly.
  std::string link_check;
  std::string json_path, html_path;
};

// How rounds.csv records `metric`.
Metric MetricOf(task::Metric metric);

// Runs the experiment, printing progress and the closing summary table on
// `out`. FailedPrecondition naming the binary when bin_dir lacks one the
// clock needs; the first failing strategy's error otherwise. Inconsistent
// records are not an error: they are in `problems`, and their strategies
// yield no time to target in the report.
absl::StatusOr<ExperimentResult> RunExperiment(const ExperimentOptions& options,
                                               FILE* out);

// The notes at the top of the report: the mode, device and link emulation,
// the task and its data, the target, and the consistency verdict.
std::vector<std::string> ReportNotes(const ExperimentOptions& options,
                                     const ExperimentResult& result);

// The closing table: per strategy its rounds, final value, time to target,
// wall time, mean pruning ratio, rank and MB up; then the first strategy's
// phase shares by link.
void PrintSummaryTable(const std::vector<StrategySummary>& summaries,
                       const Metric& metric, FILE* out);

}  // namespace fedge::sim
