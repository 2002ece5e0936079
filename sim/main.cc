// fedge-sim: a whole federation on this machine, the real coordinator and
// real client daemons over loopback gRPC, with device profiles (CPU caps)
// and link profiles (link emulators), on a task file's task (--task) or the
// built-in Fashion-MNIST task.
// With several --strategies it is the experiment runner: the same
// federation (seeds, shards, profiles) under each, compared in one report.
// Every flag is in --help.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "cli/cli.h"
#include "model/checkpoint.h"
#include "model/dataset.h"
#include "model/file_io.h"
#include "model/trainer.h"
#include "sim/federation.h"
#include "sim/process.h"
#include "sim/profiles.h"
#include "sim/report.h"
#include "task/spec.h"
#include "task/task_data.h"
#include "task/task_flags.h"

ABSL_FLAG(int, clients, 8,
          "Client devices (processes; with --clock=virtual, simulated "
          "devices: hundreds or thousands are fine).");
ABSL_FLAG(std::string, clock, "real",
          "real: a coordinator and one client process per device, real time. "
          "virtual: the engine in-process on simulated time, real training "
          "for each round's sample, times charged from the profiles "
          "(fedge-vclock; see docs/simulation.md).");
ABSL_FLAG(int, clients_per_round, 0,
          "--clock=virtual: devices invited per round, at random (0: all).");
ABSL_FLAG(int, workers, 1,
          "--clock=virtual: devices trained at once, one thread each.");
ABSL_FLAG(int, rounds, 10, "Federated rounds per strategy.");
ABSL_FLAG(std::string, strategies, "fedspine",
          "Comma list of strategies to run on the same federation: "
          "fedspine, ucb1, discounted_ucb, sliding_window_ucb, thompson, "
          "exp3, random, fixed:RATIO:RANK, fixed-grid (8 uniform fixed arms).");
ABSL_FLAG(std::string, devices, "mix", fedge::sim::kDevicesHelp);
ABSL_FLAG(std::string, links, "mix", fedge::sim::kLinksHelp);
ABSL_FLAG(int, local_steps, 40,
          "Optimizer steps per device per round (0: one epoch of its shard). "
          "A round's progress is about one device's steps: an epoch gains "
          "about 2.5x what 40 steps do (docs/simulation.md), but takes a "
          "Pi 4 profile over 3 minutes a round on the real clock.");
ABSL_FLAG(double, target, 0,
          "Value of the task's metric for time-to-target (accuracy in [0, "
          "1], or bits per byte). 0: halfway from the base model's value to "
          "the best any strategy reached, and at least 0.5 points (0.005 "
          "bits per byte) better than the base.");
ABSL_FLAG(std::string, out, "",
          "Output directory (default: runs/sim-YYYYmmdd-HHMMSS).");
ABSL_FLAG(std::string, cache_dir, "runs/cache",
          "Where each device caches the base model (one folder per device).");
ABSL_FLAG(std::string, bin_dir, "",
          "Where fedge-coordinator, fedge-client and fedge-pretrain are "
          "(default: next to fedge-sim).");
ABSL_FLAG(std::string, emulate_cpu, "auto",
          "How devices get their profile's speed: cgroup (cap each client's "
          "CPU; needs root), dilate (each client waits after computing until "
          "its compute took 1/speed as long), auto (cgroup where possible, "
          "else dilate) or off. The report says which ran.");
ABSL_FLAG(double, cores, 0,
          "CPU the devices may use together (0: 90% of this machine's).");
ABSL_FLAG(int, eval_examples, 10000,
          "Held-out examples per global evaluation (at most the task's "
          "evaluation.examples).");
ABSL_FLAG(double, timeout_minutes, 60, "Give up on a strategy after this.");
ABSL_FLAG(std::string, coordinator_flags, "",
          "Extra fedge-coordinator flags, space-separated (e.g. "
          "\"--aggregator=median --lr=1e-3\").");

namespace {

using fedge::cli::Fail;

std::string SelfDir() {
  std::error_code error;
  const std::filesystem::path self =
      std::filesystem::read_symlink("/proc/self/exe", error);
  return error ? "." : self.parent_path().string();
}

// The base model's metric on the held-out data the coordinator evaluates on
// (the task's first `examples`), so round 0 compares like with like.
absl::StatusOr<double> BaseValue(const fedge::task::TaskSpec& spec,
                                 int64_t examples) {
  absl::StatusOr<fedge::model::Model> base =
      fedge::model::LoadCheckpoint(spec.base_dir);
  if (!base.ok()) return base.status();
  fedge::task::TaskSpec eval_spec = spec;
  eval_spec.evaluation.examples =
      std::min<int64_t>(eval_spec.evaluation.examples, examples);
  absl::StatusOr<std::unique_ptr<fedge::task::TaskData>> data =
      fedge::task::TaskData::Create(eval_spec);
  if (!data.ok()) return data.status();
  absl::StatusOr<fedge::model::Dataset> eval = (*data)->Eval();
  if (!eval.ok()) return eval.status();
  absl::StatusOr<fedge::model::EvalResult> result =
      fedge::model::Evaluate(**base, *eval, 64);
  if (!result.ok()) return result.status();
  return fedge::task::MetricValue(spec.evaluation.metric, *result);
}

// How rounds.csv records the task's evaluation.metric.
fedge::sim::Metric SimMetric(fedge::task::Metric metric) {
  switch (metric) {
    case fedge::task::Metric::kAccuracy:
      return fedge::sim::AccuracyMetric();
    case fedge::task::Metric::kLoss:
      return fedge::sim::LossMetric();
    case fedge::task::Metric::kPerplexity:
      return fedge::sim::PerplexityMetric();
    case fedge::task::Metric::kBitsPerByte:
      return fedge::sim::BitsPerByteMetric();
    case fedge::task::Metric::kExactMatch:
      return fedge::sim::ExactMatchMetric();
  }
  return fedge::sim::AccuracyMetric();
}

}  // namespace

int main(int argc, char** argv) {
  if (absl::Status s = fedge::cli::ParseFlags(
          argc, argv,
          "Runs a simulated federation (real coordinator and clients, device "
          "and link profiles) and writes an HTML report.\nUsage: fedge-sim "
          "[--clients=N] [--rounds=R] [--strategies=fedspine,random,...]");
      !s.ok()) {
    return Fail(s.message());
  }
  namespace sim = fedge::sim;
  sim::SimConfig config;
  const int clients = absl::GetFlag(FLAGS_clients);
  config.rounds = absl::GetFlag(FLAGS_rounds);
  config.local_steps = absl::GetFlag(FLAGS_local_steps);
  if (clients < 1 || config.rounds < 1 || config.local_steps < 0) {
    return Fail("--clients and --rounds must be >= 1, --local_steps >= 0");
  }
  absl::StatusOr<std::vector<sim::Strategy>> strategies =
      sim::ParseStrategies(absl::GetFlag(FLAGS_strategies));
  if (!strategies.ok()) return Fail(std::string(strategies.status().message()));
  absl::StatusOr<std::vector<sim::DeviceProfile>> devices =
      sim::AssignDevices(absl::GetFlag(FLAGS_devices), clients);
  if (!devices.ok()) return Fail(std::string(devices.status().message()));
  absl::StatusOr<std::vector<std::string>> links =
      sim::AssignLinks(absl::GetFlag(FLAGS_links), clients);
  if (!links.ok()) return Fail(std::string(links.status().message()));
  config.devices = *devices;
  config.links = *links;
  config.bin_dir = absl::GetFlag(FLAGS_bin_dir).empty()
                       ? SelfDir()
                       : absl::GetFlag(FLAGS_bin_dir);
  config.task_args = fedge::task::TaskFlagArguments();
  absl::StatusOr<fedge::task::TaskSpec> resolved = fedge::task::TaskFromFlags();
  if (!resolved.ok()) return Fail(std::string(resolved.status().message()));
  const fedge::task::TaskSpec spec = *std::move(resolved);
  config.base_dir = spec.base_dir;
  const sim::Metric metric = SimMetric(spec.evaluation.metric);
  config.cache_dir = absl::GetFlag(FLAGS_cache_dir);
  absl::StatusOr<sim::CpuEmulation> emulation =
      sim::ParseCpuEmulation(absl::GetFlag(FLAGS_emulate_cpu));
  if (!emulation.ok()) {
    return Fail(absl::StrCat("--emulate_cpu: ", emulation.status().message()));
  }
  config.cpu_emulation = *emulation;
  config.usable_cores = absl::GetFlag(FLAGS_cores);
  config.eval_examples = static_cast<int>(std::min<int64_t>(
      absl::GetFlag(FLAGS_eval_examples), spec.evaluation.examples));
  config.timeout = absl::Minutes(absl::GetFlag(FLAGS_timeout_minutes));
  const std::string clock = absl::GetFlag(FLAGS_clock);
  if (clock != "real" && clock != "virtual") {
    return Fail(absl::StrCat("--clock: '", clock, "' is not real or virtual"));
  }
  config.virtual_clock = clock == "virtual";
  config.clients_per_round = absl::GetFlag(FLAGS_clients_per_round);
  config.workers = absl::GetFlag(FLAGS_workers);
  if (config.clients_per_round < 0 || config.workers < 1) {
    return Fail("--clients_per_round must be >= 0 and --workers >= 1");
  }
  for (absl::string_view flag : absl::StrSplit(
           absl::GetFlag(FLAGS_coordinator_flags), ' ', absl::SkipEmpty())) {
    config.coordinator_flags.emplace_back(flag);
  }
  config.out_dir = absl::GetFlag(FLAGS_out);
  if (config.out_dir.empty()) {
    config.out_dir =
        "runs/sim-" +
        absl::FormatTime("%Y%m%d-%H%M%S", absl::Now(), absl::LocalTimeZone());
  }
  if (absl::Status s = fedge::model::MakeDirectories(config.out_dir); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  const std::vector<const char*> tools =
      config.virtual_clock
          ? std::vector<const char*>{"fedge-vclock"}
          : std::vector<const char*>{"fedge-coordinator", "fedge-client"};
  for (const char* tool : tools) {
    if (::access((config.bin_dir + "/" + tool).c_str(), X_OK) != 0) {
      return Fail(absl::StrCat(config.bin_dir, "/", tool,
                               " not found; build it or pass --bin_dir"));
    }
  }

  // The base model, pretrained once on the public split.
  if (!std::filesystem::exists(config.base_dir + "/model.safetensors")) {
    std::printf("fedge-sim: pretraining the base model into %s (once)\n",
                config.base_dir.c_str());
    std::fflush(stdout);
    std::vector<std::string> pretrain = {config.bin_dir + "/fedge-pretrain",
                                         "--out=" + config.base_dir,
                                         "--progress_every=100"};
    pretrain.insert(pretrain.end(), config.task_args.begin(),
                    config.task_args.end());
    auto process = sim::ChildProcess::Start(pretrain, "");
    if (!process.ok()) return Fail(std::string(process.status().message()));
    absl::StatusOr<int> code = (*process)->Wait();
    if (!code.ok() || *code != 0) return Fail("pretraining failed");
  }
  absl::StatusOr<double> base_value = BaseValue(spec, config.eval_examples);
  if (!base_value.ok()) {
    return Fail(absl::StrCat("base model: ", base_value.status().message()));
  }
  std::printf("fedge-sim: task %s; base model %s %s on the held-out data\n",
              spec.name.c_str(), metric.label.c_str(),
              metric.Format(*base_value).c_str());

  std::printf(
      "fedge-sim: %s clock, %d devices, %d rounds, %zu strateg%s; output in "
      "%s\n",
      clock.c_str(), clients, config.rounds, strategies->size(),
      strategies->size() == 1 ? "y" : "ies", config.out_dir.c_str());
  for (int i = 0; i < std::min(clients, 16); ++i) {
    std::printf("  device-%d: %s (%s), speed %.2f of a laptop core, link %s\n",
                i, config.devices[i].name.c_str(),
                config.devices[i].board.c_str(),
                config.devices[i].relative_speed, config.links[i].c_str());
  }
  if (clients > 16) std::printf("  ... and %d more\n", clients - 16);
  std::fflush(stdout);

  if (config.virtual_clock) {
    // Measured afresh for this build and machine, then shared by every
    // strategy (sim/compute_costs.h).
    config.compute_costs = config.out_dir + "/compute_costs.tsv";
    std::error_code error;
    if (std::filesystem::remove(config.compute_costs, error); error) {
      return Fail(absl::StrCat("cannot remove the old ", config.compute_costs,
                               ": ", error.message()));
    }
  }
  std::vector<sim::StrategyRun> runs;
  std::string cpu_mode;
  const absl::Time start = absl::Now();
  for (const sim::Strategy& strategy : *strategies) {
    absl::StatusOr<sim::StrategyOutcome> outcome =
        sim::RunStrategy(config, strategy, stdout);
    if (!outcome.ok()) return Fail(std::string(outcome.status().message()));
    outcome->run.metric = metric;
    outcome->run.base_value = *base_value;
    cpu_mode = outcome->cpu_mode;
    runs.push_back(std::move(outcome->run));
  }

  double target = absl::GetFlag(FLAGS_target);
  if (!(target > 0)) target = sim::DefaultTarget(runs, metric, *base_value);
  std::vector<sim::StrategySummary> summaries;
  std::vector<std::string> problems;
  for (const sim::StrategyRun& run : runs) {
    summaries.push_back(sim::Summarize(run, target));
    for (const std::string& p : sim::CheckConsistency(run)) {
      problems.push_back(run.name + ": " + p);
    }
  }
  sim::ReportInfo info;
  info.title = absl::StrFormat(
      "fedge simulated federation: %d devices, %d rounds%s", clients,
      config.rounds, config.virtual_clock ? " (virtual clock)" : "");
  info.metric = metric;
  info.target = target;
  info.base_value = *base_value;
  info.notes = {
      config.virtual_clock
          ? "Mode: VIRTUAL CLOCK. The real round engine in-process (fedge-"
            "vclock); each round's invited devices train for real; times are "
            "charged, not waited for."
          : "Mode: real time. A real fedge-coordinator and one fedge-client "
            "process per device over loopback gRPC; all training is real.",
      "Device speed emulation: " + cpu_mode,
      config.virtual_clock
          ? "Links: transfer time charged as RTT + bytes / the profile's rate."
          : "Links: one user-space link emulator per device (token bucket per "
            "direction plus half the RTT each way); transfer times are real "
            "times of the bytes sent.",
      absl::StrFormat(
          "Task %s (%s) on %s: %s shards%s (seed %d); %d local steps per "
          "round; base model held-out %s %s.",
          spec.name, fedge::task::ObjectiveName(spec.objective),
          spec.data.corpus, spec.simulation.partition,
          spec.simulation.partition == "dirichlet"
              ? absl::StrFormat(", alpha %.2f", spec.simulation.alpha)
              : "",
          spec.simulation.seed, config.local_steps, metric.label,
          metric.Format(*base_value)),
      absl::StrFormat("Time to target: first evaluation at %s or better.",
                      metric.Format(target)),
      problems.empty() ? "Consistency checks: all records consistent."
                       : absl::StrCat("Consistency problems: ", problems.size(),
                                      " (see stderr)"),
  };
  const std::string json_path = config.out_dir + "/summary.json";
  const std::string html_path = config.out_dir + "/report.html";
  for (const auto& [path, text] :
       {std::pair{json_path, sim::SummaryJson(summaries, info)},
        std::pair{html_path, sim::HtmlReport(runs, summaries, info)}}) {
    if (absl::Status s = fedge::model::WriteFileAtomically(path, text);
        !s.ok()) {
      return Fail(std::string(s.message()));
    }
  }

  std::printf("\n%-16s %7s %13s %12s %9s %8s %6s %9s\n", "strategy", "rounds",
              metric.label.c_str(), "to target", "wall", "pruning", "rank",
              "MB up");
  for (const sim::StrategySummary& s : summaries) {
    std::printf("%-16s %7lld %13s %12s %8.1fs %8.3f %6.1f %9.2f\n",
                s.name.c_str(), static_cast<long long>(s.rounds),
                metric.Format(s.final_value).c_str(),
                s.time_to_target_s < 0
                    ? "-"
                    : absl::StrFormat("%.1fs", s.time_to_target_s).c_str(),
                s.wall_s, s.mean_prune_ratio, s.mean_rank, s.bytes_up / 1e6);
  }
  for (const auto& [link, p] : summaries.front().by_link) {
    std::printf(
        "  %s: upload %.1f%% of a device's round (down %.2f s, train "
        "%.2f s, up %.2f s, wait %.2f s)\n",
        link.c_str(), 100 * p.upload_share(), p.download, p.train, p.upload,
        p.wait);
  }
  std::printf("device speeds: %s\n", cpu_mode.c_str());
  for (const std::string& p : problems) {
    std::fprintf(stderr, "fedge-sim: inconsistent record: %s\n", p.c_str());
  }
  std::printf("fedge-sim: done in %.1f min; report %s, summary %s\n",
              absl::ToDoubleMinutes(absl::Now() - start), html_path.c_str(),
              json_path.c_str());
  return problems.empty() ? 0 : 2;
}
