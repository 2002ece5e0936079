// fedge-vclock: a federation of many devices on simulated time (see
// sim/virtual_clock.h): the real round engine in-process, real training for
// each round's invited sample, compute and transfer times charged from the
// device and link profiles. fedge-sim --clock=virtual runs it per strategy;
// it also runs alone. Takes every fedge-coordinator engine flag (--bandit,
// --rounds, --selection, --clients_per_round, --lr, ...); all in --help.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#include "cli/cli.h"
#include "coordinator/engine_flags.h"
#include "model/threads.h"
#include "sim/profiles.h"
#include "sim/virtual_clock.h"
#include "strategies/server_optimizer.h"
#include "task/task_flags.h"

ABSL_FLAG(int, clients, 100, "Devices in the federation.");
ABSL_FLAG(std::string, devices, "mix", fedge::sim::kDevicesHelp);
ABSL_FLAG(std::string, links, "mix", fedge::sim::kLinksHelp);
ABSL_FLAG(std::string, run_dir, "runs/vclock",
          "Where clients.csv and rounds.csv go (unix_time: virtual seconds).");
ABSL_FLAG(int64_t, eval_examples, 2000, "Test images to evaluate on (0: all).");
ABSL_FLAG(int64_t, validation_examples, 256,
          "Public-split images on which the coordinator measures, during "
          "the round before, what each ratio the bandits may play costs the "
          "global model (--reward_pruning_cost; 0: not measured).");
ABSL_FLAG(int64_t, eval_every, 1, "Evaluate every N committed rounds.");
ABSL_FLAG(int, workers, 1,
          "Devices trained at once, one LibTorch thread each (more is faster "
          "but their measured times then share the machine).");
ABSL_FLAG(std::string, compute_costs, "",
          "File of this machine's measured compute cost (CPU seconds per "
          "training FLOP) to read, or to write when the first job has "
          "measured it. Devices are charged FLOPs x that cost / their "
          "speed, so runs that share the file charge the same work alike "
          "(fedge-sim shares one across an experiment's strategies). Empty: "
          "measured for this run only.");
ABSL_FLAG(int64_t, malicious, 0,
          "Hostile devices (the first N): they send --attack updates.");
ABSL_FLAG(std::string, attack, "signflip",
          "What hostile devices send: scale (p + s(u - p)), signflip "
          "(p - s(u - p)) or nan (a NaN crafted past the encoder); p: the "
          "payload they got, u: what they trained, s: --attack_scale.");
ABSL_FLAG(double, attack_scale, 10.0, "s of --attack.");
ABSL_FLAG(std::string, swap_speeds, "", fedge::sim::kSwapSpeedsHelp);
ABSL_FLAG(bool, quiet, false, "No per-round progress lines.");

namespace {

using fedge::cli::Fail;

}  // namespace

int main(int argc, char** argv) {
  if (absl::Status s = fedge::cli::ParseFlags(
          argc, argv,
          "Runs a federation of many simulated devices on a virtual clock: the "
          "real round engine, real training for each round's invited sample, "
          "times charged from device and link profiles.\nUsage: fedge-vclock "
          "--clients=1000 --selection=random --clients_per_round=10 "
          "[--flag=value...]");
      !s.ok()) {
    return Fail(s);
  }
  absl::StatusOr<fedge::task::TaskSpec> task = fedge::task::TaskFromFlags();
  if (!task.ok()) return Fail(task.status());
  absl::StatusOr<fedge::coordinator::EngineOptions> engine =
      fedge::coordinator::EngineOptionsFromFlags(task->objective);
  if (!engine.ok()) return Fail(engine.status());
  if (engine->download_codec != "float32") {
    return Fail(absl::InvalidArgumentError(
        "--download_codec: the virtual clock charges dense downloads as "
        "float32 weights; compressed downloads run on the real clock "
        "(fedge-coordinator, fedge-sim)"));
  }
  const int clients = absl::GetFlag(FLAGS_clients);
  if (clients < 1) {
    return Fail(absl::InvalidArgumentError("--clients must be >= 1"));
  }
  fedge::sim::VirtualConfig config;
  absl::StatusOr<std::vector<fedge::sim::DeviceProfile>> devices =
      fedge::sim::AssignDevices(absl::GetFlag(FLAGS_devices), clients);
  if (!devices.ok()) return Fail(devices.status());
  absl::StatusOr<std::vector<std::string>> links =
      fedge::sim::AssignLinks(absl::GetFlag(FLAGS_links), clients);
  if (!links.ok()) return Fail(links.status());
  config.devices = *devices;
  config.links = *links;
  absl::StatusOr<fedge::sim::SpeedSwap> swap =
      fedge::sim::ParseSpeedSwap(absl::GetFlag(FLAGS_swap_speeds), clients);
  if (!swap.ok()) return Fail(swap.status());
  config.swap = *std::move(swap);
  config.task = *std::move(task);
  config.run_dir = absl::GetFlag(FLAGS_run_dir);
  config.eval_examples = absl::GetFlag(FLAGS_eval_examples);
  config.validation_examples = absl::GetFlag(FLAGS_validation_examples);
  config.eval_every = absl::GetFlag(FLAGS_eval_every);
  config.workers = absl::GetFlag(FLAGS_workers);
  config.compute_costs = absl::GetFlag(FLAGS_compute_costs);
  config.malicious = absl::GetFlag(FLAGS_malicious);
  config.attack = absl::GetFlag(FLAGS_attack);
  config.attack_scale = absl::GetFlag(FLAGS_attack_scale);
  config.progress = absl::GetFlag(FLAGS_quiet) ? nullptr : stdout;
  fedge::model::ConfigureRuntime(1);  // Each device trains on one thread.
  if (config.progress != nullptr) {
    const int k = engine->selection.clients_per_round;
    const std::string per_round =
        engine->selection.kind == fedge::strategies::SelectionKind::kPoisson
            ? absl::StrFormat("each with probability %g",
                              engine->selection.sampling_rate)
        : k > 0 ? absl::StrCat(k)
                : std::string("all");
    std::printf(
        "fedge-vclock: VIRTUAL CLOCK: %d devices, %s per round train for "
        "real on this machine; download, compute and upload times are "
        "charged from the device and link profiles; records in %s; server "
        "step %s\n",
        clients, per_round.c_str(), config.run_dir.c_str(),
        fedge::strategies::Describe(engine->server_optimizer).c_str());
    if (const std::string privacy = fedge::coordinator::PrivacySummary(*engine);
        !privacy.empty()) {
      std::printf("fedge-vclock: %s\n", privacy.c_str());
    }
    std::fflush(stdout);
  }
  if (absl::Status s = fedge::sim::RunVirtualFederation(config, *engine);
      !s.ok()) {
    return Fail(s);
  }
  if (config.progress != nullptr) {
    std::printf("fedge-vclock: done; records in %s\n", config.run_dir.c_str());
  }
  return 0;
}
