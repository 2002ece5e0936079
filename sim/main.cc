// fedge-sim: a whole federation on this machine, the real coordinator and
// real client daemons over loopback gRPC, with device profiles (CPU caps)
// and link profiles (link emulators), on a task file's task (--task) or the
// built-in Fashion-MNIST task.
// With several --strategies it is the experiment runner: the same
// federation (seeds, shards, profiles) under each, compared in one report.
// Every flag is in --help.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "cli/cli.h"
#include "sim/experiment.h"
#include "sim/federation.h"
#include "sim/profiles.h"
#include "task/spec.h"
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
          "exp3, random, static (the capability rule), fixed:RATIO:RANK, "
          "fixed-grid (8 uniform fixed arms).");
ABSL_FLAG(std::string, devices, "mix", fedge::sim::kDevicesHelp);
ABSL_FLAG(std::string, links, "mix", fedge::sim::kLinksHelp);
ABSL_FLAG(int, local_steps, 60,
          "Optimizer steps per device per round (0: one epoch of its shard). "
          "A round's progress is about one device's steps: on the default "
          "task 60 steps gain about 0.4 points more than 40 in 10 rounds, "
          "and an epoch more still (docs/simulation.md), but an epoch takes "
          "a Pi 4 profile over 3 minutes a round on the real clock.");
ABSL_FLAG(double, fill_pace, 4,
          "A device predicted to submit before the round's pace (its slowest "
          "device's fastest predicted time) trains up to this many times "
          "--local_steps instead of waiting (the coordinator's --fill_pace; "
          "docs/simulation.md). 1: every device trains --local_steps. No "
          "effect with --local_steps=0.");
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
ABSL_FLAG(std::string, compute_costs, "",
          "--clock=virtual: a compute-cost table (seconds per training FLOP) "
          "to share with other fedge-sim runs, so that their charged times "
          "compare: read where it exists, measured and written where not. "
          "Empty: OUT/compute_costs.tsv, measured afresh for this run's "
          "strategies.");
ABSL_FLAG(std::string, swap_speeds, "", fedge::sim::kSwapSpeedsHelp);
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
  config.fill_pace = absl::GetFlag(FLAGS_fill_pace);
  if (clients < 1 || config.rounds < 1 || config.local_steps < 0 ||
      !(config.fill_pace >= 1) || !std::isfinite(config.fill_pace)) {
    return Fail(
        "--clients and --rounds must be >= 1, --local_steps >= 0, "
        "--fill_pace a finite multiple >= 1");
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
  config.compute_costs = absl::GetFlag(FLAGS_compute_costs);
  config.swap_speeds = absl::GetFlag(FLAGS_swap_speeds);
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

  sim::ExperimentOptions options;
  options.config = std::move(config);
  options.strategies = *std::move(strategies);
  options.spec = spec;
  options.target = absl::GetFlag(FLAGS_target);
  absl::StatusOr<sim::ExperimentResult> result =
      sim::RunExperiment(options, stdout);
  if (!result.ok()) return Fail(result.status().message());
  for (const std::string& p : result->problems) {
    std::fprintf(stderr, "fedge-sim: inconsistent record: %s\n", p.c_str());
  }
  return result->problems.empty() ? 0 : 2;
}
