// One simulated federation: a real fedge-coordinator process and N real
// fedge-client processes on this machine, talking gRPC over loopback, each
// client behind its own link emulator (transport::ShapingProxy, in this
// process) and, where cgroups allow, capped to its device profile's CPU
// share. Progress (per round: accuracy, the slowest device and its phase
// breakdown) is printed as the coordinator's records appear.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "sim/profiles.h"
#include "sim/report.h"

namespace fedge::sim {

// How a real-clock federation makes devices as slow as their profiles.
enum class CpuEmulation {
  kAuto,    // cgroups where writable, else time dilation; says which ran.
  kCgroup,  // CPU caps (sim/cpu_limit.h) or fail.
  kDilate,  // Time dilation: fedge-client --compute_slowdown=1/speed.
  kOff,     // Every device at this machine's speed.
};

// "auto" (or "true"), "cgroup", "dilate", "off" (or "false").
absl::StatusOr<CpuEmulation> ParseCpuEmulation(absl::string_view name);

struct SimConfig {
  std::string bin_dir;  // Holds fedge-coordinator and fedge-client.
  std::string out_dir;  // This experiment's output directory.
  // --task and --task_set as every process gets them (task/task_flags.h),
  // so that all run the same task.
  std::vector<std::string> task_args;
  std::string base_dir = "runs/base";  // The task's base.
  std::string cache_dir = "runs/cache";
  int rounds = 10;
  int local_steps = 40;  // Optimizer steps per client per round (0: epoch).
  // The coordinator's --fill_pace, passed when local_steps > 0: a device
  // that would wait for the round's slowest trains up to this many times
  // local_steps.
  double fill_pace = 4;
  int eval_examples = 10000;
  std::vector<DeviceProfile> devices;  // One per client.
  std::vector<std::string> links;      // One per client.
  CpuEmulation cpu_emulation = CpuEmulation::kAuto;
  double usable_cores = 0;  // CPU shares sum to at most this (0: 90% of
                            // this machine's cores).
  absl::Duration timeout = absl::Minutes(60);  // Per strategy.
  // Run on fedge-vclock's virtual clock (sim/virtual_clock.h) instead of
  // real processes: for federations of hundreds or thousands of devices.
  bool virtual_clock = false;
  int clients_per_round = 0;  // Virtual clock: k devices per round; 0: all.
  int workers = 1;            // Virtual clock: devices trained at once.
  // Virtual clock: the compute-cost table every strategy reads and extends
  // (sim/compute_costs.h). RunExperiment makes a fresh one in out_dir when
  // this is empty, and keeps a named one (runs that share it compare).
  std::string compute_costs;
  // Virtual clock: devices that trade speeds at a round, as fedge-vclock's
  // --swap_speeds (ParseSpeedSwap in sim/profiles.h); "" none.
  std::string swap_speeds;
  std::vector<std::string> coordinator_flags;  // Passed through.
};

// A strategy is a name and the coordinator flags that select it.
struct Strategy {
  std::string name;
  std::vector<std::string> flags;
};

// A comma list of: fedspine, ucb1, discounted_ucb, sliding_window_ucb,
// thompson, exp3, random, static (the capability rule, --bandit=static),
// fixed:RATIO:RANK, and fixed-grid (uniform fixed
// arms over ratios {0, 0.2, 0.4, 0.6} x ranks {4, 8}). InvalidArgument
// naming an unknown entry.
absl::StatusOr<std::vector<Strategy>> ParseStrategies(absl::string_view spec);

// Measures each distinct link profile of `links` through the emulator
// (transport::MeasureLink, about a second each) before a real-clock run,
// so that no run emulates a slower link than it claims without saying so:
// prints a warning on `out` for each whose time is off its ideal by more
// than kLinkTolerance. Returns the one-line account for the summary and
// the report. InvalidArgument for an unknown profile.
inline constexpr double kLinkTolerance = 0.10;
absl::StatusOr<std::string> CheckLinks(const std::vector<std::string>& links,
                                       FILE* out);

struct StrategyOutcome {
  StrategyRun run;
  std::string cpu_mode;  // How device speeds were emulated.
};

// Runs one federation under `strategy` into out_dir/<name>, as processes
// (real clock) or in fedge-vclock (virtual clock). Fails with the
// coordinator's log tail if it exits with an error or the timeout passes.
absl::StatusOr<StrategyOutcome> RunStrategy(const SimConfig& config,
                                            const Strategy& strategy,
                                            std::FILE* progress);

}  // namespace fedge::sim
