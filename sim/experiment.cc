#include "sim/experiment.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

#include "model/checkpoint.h"
#include "model/dataset.h"
#include "model/file_io.h"
#include "model/trainer.h"
#include "sim/process.h"
#include "task/task_data.h"

namespace fedge::sim {
namespace {

// Pretrains the task's base model into config.base_dir unless it is there.
absl::Status EnsureBaseModel(const SimConfig& config, FILE* out) {
  if (std::filesystem::exists(config.base_dir + "/model.safetensors")) {
    return absl::OkStatus();
  }
  std::fprintf(out, "fedge-sim: pretraining the base model into %s (once)\n",
               config.base_dir.c_str());
  std::fflush(out);
  std::vector<std::string> pretrain = {config.bin_dir + "/fedge-pretrain",
                                       "--out=" + config.base_dir,
                                       "--progress_every=100"};
  pretrain.insert(pretrain.end(), config.task_args.begin(),
                  config.task_args.end());
  absl::StatusOr<std::unique_ptr<ChildProcess>> process =
      ChildProcess::Start(pretrain, "");
  if (!process.ok()) return process.status();
  absl::StatusOr<int> code = (*process)->Wait();
  if (!code.ok()) return code.status();
  if (*code != 0) {
    return absl::InternalError(absl::StrCat(
        "pretraining the base model failed (fedge-pretrain exit ", *code, ")"));
  }
  return absl::OkStatus();
}

// The base model's metric on the held-out data the coordinator evaluates on
// (the task's first `examples`), so round 0 compares like with like.
absl::StatusOr<double> BaseValue(const task::TaskSpec& spec, int64_t examples) {
  absl::StatusOr<model::Model> base = model::LoadCheckpoint(spec.base_dir);
  if (!base.ok()) return base.status();
  task::TaskSpec eval_spec = spec;
  eval_spec.evaluation.examples =
      std::min<int64_t>(eval_spec.evaluation.examples, examples);
  absl::StatusOr<std::unique_ptr<task::TaskData>> data =
      task::TaskData::Create(eval_spec);
  if (!data.ok()) return data.status();
  absl::StatusOr<model::Dataset> eval = (*data)->Eval();
  if (!eval.ok()) return eval.status();
  absl::StatusOr<model::EvalResult> result = model::Evaluate(**base, *eval, 64);
  if (!result.ok()) return result.status();
  return task::MetricValue(spec.evaluation.metric, *result);
}

// The binaries the clock needs, in bin_dir.
absl::Status CheckTools(const SimConfig& config) {
  const std::vector<const char*> tools =
      config.virtual_clock
          ? std::vector<const char*>{"fedge-vclock"}
          : std::vector<const char*>{"fedge-coordinator", "fedge-client"};
  for (const char* tool : tools) {
    if (::access((config.bin_dir + "/" + tool).c_str(), X_OK) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          config.bin_dir, "/", tool, " not found; build it or pass --bin_dir"));
    }
  }
  return absl::OkStatus();
}

void PrintPlan(const ExperimentOptions& options, FILE* out) {
  const SimConfig& config = options.config;
  const int clients = static_cast<int>(config.devices.size());
  std::fprintf(
      out,
      "fedge-sim: %s clock, %d devices, %d rounds, %zu strateg%s; output in "
      "%s\n",
      config.virtual_clock ? "virtual" : "real", clients, config.rounds,
      options.strategies.size(), options.strategies.size() == 1 ? "y" : "ies",
      config.out_dir.c_str());
  for (int i = 0; i < std::min(clients, 16); ++i) {
    std::fprintf(
        out, "  device-%d: %s (%s), speed %.2f of a laptop core, link %s\n", i,
        config.devices[i].name.c_str(), config.devices[i].board.c_str(),
        config.devices[i].relative_speed, config.links[i].c_str());
  }
  if (clients > 16) std::fprintf(out, "  ... and %d more\n", clients - 16);
  std::fflush(out);
}

}  // namespace

Metric MetricOf(task::Metric metric) {
  switch (metric) {
    case task::Metric::kAccuracy:
      return AccuracyMetric();
    case task::Metric::kLoss:
      return LossMetric();
    case task::Metric::kPerplexity:
      return PerplexityMetric();
    case task::Metric::kBitsPerByte:
      return BitsPerByteMetric();
    case task::Metric::kExactMatch:
      return ExactMatchMetric();
  }
  return AccuracyMetric();
}

absl::StatusOr<ExperimentResult> RunExperiment(const ExperimentOptions& options,
                                               FILE* out) {
  SimConfig config = options.config;
  if (config.devices.empty() || config.devices.size() != config.links.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("an experiment needs one device profile and one link per "
                     "client; got ",
                     config.devices.size(), " and ", config.links.size()));
  }
  if (options.strategies.empty()) {
    return absl::InvalidArgumentError("no strategy to run");
  }
  if (!config.swap_speeds.empty()) {
    if (!config.virtual_clock) {
      return absl::InvalidArgumentError(
          "--swap_speeds needs the virtual clock (--clock=virtual)");
    }
    absl::StatusOr<SpeedSwap> swap = ParseSpeedSwap(
        config.swap_speeds, static_cast<int>(config.devices.size()));
    if (!swap.ok()) return swap.status();
  }
  if (absl::Status s = CheckTools(config); !s.ok()) return s;
  if (absl::Status s = model::MakeDirectories(config.out_dir); !s.ok()) {
    return s;
  }
  if (absl::Status s = EnsureBaseModel(config, out); !s.ok()) return s;
  const Metric metric = MetricOf(options.spec.evaluation.metric);
  ExperimentResult result;
  absl::StatusOr<double> base_value =
      BaseValue(options.spec, config.eval_examples);
  if (!base_value.ok()) {
    return absl::Status(
        base_value.status().code(),
        absl::StrCat("base model: ", base_value.status().message()));
  }
  result.base_value = *base_value;
  std::fprintf(out,
               "fedge-sim: task %s; base model %s %s on the held-out data\n",
               options.spec.name.c_str(), metric.label.c_str(),
               metric.Format(result.base_value).c_str());
  PrintPlan(options, out);
  if (!config.virtual_clock) {
    absl::StatusOr<std::string> links = CheckLinks(config.links, out);
    if (!links.ok()) return links.status();
    result.link_check = *std::move(links);
  }

  if (config.virtual_clock && config.compute_costs.empty()) {
    // Measured afresh for this build and machine, then shared by every
    // strategy (sim/compute_costs.h). A table the caller names is shared
    // with other runs too, and kept.
    config.compute_costs = config.out_dir + "/compute_costs.tsv";
    std::error_code error;
    if (std::filesystem::remove(config.compute_costs, error); error) {
      return absl::InternalError(absl::StrCat("cannot remove the old ",
                                              config.compute_costs, ": ",
                                              error.message()));
    }
  }
  std::vector<StrategyRun> runs;
  const absl::Time start = absl::Now();
  for (const Strategy& strategy : options.strategies) {
    absl::StatusOr<StrategyOutcome> outcome =
        RunStrategy(config, strategy, out);
    if (!outcome.ok()) return outcome.status();
    outcome->run.metric = metric;
    outcome->run.base_value = result.base_value;
    result.cpu_mode = outcome->cpu_mode;
    runs.push_back(std::move(outcome->run));
  }

  result.target = options.target > 0
                      ? options.target
                      : DefaultTarget(runs, metric, result.base_value);
  for (const StrategyRun& run : runs) {
    result.summaries.push_back(Summarize(run, result.target));
    for (const std::string& p : CheckConsistency(run)) {
      result.problems.push_back(run.name + ": " + p);
    }
  }
  ReportInfo info;
  info.title =
      absl::StrFormat("fedge simulated federation: %d devices, %d rounds%s",
                      config.devices.size(), config.rounds,
                      config.virtual_clock ? " (virtual clock)" : "");
  info.metric = metric;
  info.target = result.target;
  info.base_value = result.base_value;
  info.notes = ReportNotes(options, result);
  result.json_path = config.out_dir + "/summary.json";
  result.html_path = config.out_dir + "/report.html";
  for (const auto& [path, text] :
       {std::pair{result.json_path, SummaryJson(result.summaries, info)},
        std::pair{result.html_path,
                  HtmlReport(runs, result.summaries, info)}}) {
    if (absl::Status s = model::WriteFileAtomically(path, text); !s.ok()) {
      return s;
    }
  }

  PrintSummaryTable(result.summaries, metric, out);
  std::fprintf(out, "device speeds: %s\n", result.cpu_mode.c_str());
  if (!result.link_check.empty()) {
    std::fprintf(out, "links: %s\n", result.link_check.c_str());
  }
  std::fprintf(out, "fedge-sim: done in %.1f min; report %s, summary %s\n",
               absl::ToDoubleMinutes(absl::Now() - start),
               result.html_path.c_str(), result.json_path.c_str());
  std::fflush(out);
  return result;
}

std::vector<std::string> ReportNotes(const ExperimentOptions& options,
                                     const ExperimentResult& result) {
  const SimConfig& config = options.config;
  const task::TaskSpec& spec = options.spec;
  const Metric metric = MetricOf(spec.evaluation.metric);
  return {
      config.virtual_clock
          ? "Mode: VIRTUAL CLOCK. The real round engine in-process (fedge-"
            "vclock); each round's invited devices train for real; times are "
            "charged, not waited for."
          : "Mode: real time. A real fedge-coordinator and one fedge-client "
            "process per device over loopback gRPC; all training is real.",
      "Device speed emulation: " + result.cpu_mode,
      config.virtual_clock
          ? "Links: transfer time charged as RTT + bytes / the profile's rate."
          : "Links: one user-space link emulator per device (token bucket per "
            "direction plus half the RTT each way); transfer times are real "
            "times of the bytes sent. Measured at start-up: " +
                result.link_check + ".",
      absl::StrFormat(
          "Task %s (%s) on %s: %s shards%s (seed %d); %d local steps per "
          "round; base model held-out %s %s.",
          spec.name, task::ObjectiveName(spec.objective), spec.data.corpus,
          spec.simulation.partition,
          spec.simulation.partition == "dirichlet"
              ? absl::StrFormat(", alpha %.2f", spec.simulation.alpha)
              : "",
          spec.simulation.seed, config.local_steps, metric.label,
          metric.Format(result.base_value)),
      absl::StrFormat(
          "Time to target: first evaluation at %s or better.%s",
          metric.Format(result.target),
          config.swap_speeds.empty()
              ? ""
              : absl::StrCat(" Devices trade speeds (round:pairs): ",
                             config.swap_speeds, ".")),
      result.problems.empty()
          ? "Consistency checks: all records consistent."
          : absl::StrCat("Consistency problems: ", result.problems.size(),
                         " (see stderr)"),
  };
}

void PrintSummaryTable(const std::vector<StrategySummary>& summaries,
                       const Metric& metric, FILE* out) {
  std::fprintf(out, "\n%-16s %7s %13s %12s %9s %8s %6s %9s\n", "strategy",
               "rounds", metric.label.c_str(), "to target", "wall", "pruning",
               "rank", "MB up");
  for (const StrategySummary& s : summaries) {
    std::fprintf(out, "%-16s %7lld %13s %12s %8.1fs %8.3f %6.1f %9.2f\n",
                 s.name.c_str(), static_cast<long long>(s.rounds),
                 metric.Format(s.final_value).c_str(),
                 s.time_to_target_s < 0
                     ? "-"
                     : absl::StrFormat("%.1fs", s.time_to_target_s).c_str(),
                 s.wall_s, s.mean_prune_ratio, s.mean_rank, s.bytes_up / 1e6);
  }
  if (summaries.empty()) return;
  for (const auto& [link, p] : summaries.front().by_link) {
    std::fprintf(out,
                 "  %s: upload %.1f%% of a device's round (down %.2f s, train "
                 "%.2f s, up %.2f s, wait %.2f s)\n",
                 link.c_str(), 100 * p.upload_share(), p.download, p.train,
                 p.upload, p.wait);
  }
}

}  // namespace fedge::sim
