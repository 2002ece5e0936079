#include "sim/federation.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

#include "metrics/csv.h"
#include "sim/cpu_limit.h"
#include "sim/process.h"
#include "transport/link_profile.h"
#include "transport/shaping_proxy.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

namespace fedge::sim {
namespace {

absl::StatusOr<int> FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(addr);
  const bool ok =
      fd >= 0 &&
      ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) == 0;
  if (fd >= 0) ::close(fd);
  if (!ok) return absl::UnavailableError("no free loopback port");
  return static_cast<int>(ntohs(addr.sin_port));
}

std::string Slug(absl::string_view name) {
  std::string out;
  for (char c : name) {
    out += absl::ascii_isalnum(c) || c == '.' ? c : '-';
  }
  return out;
}

// The rounds' flags that fedge-coordinator and fedge-vclock both take from
// the experiment: every device in every round, its steps and evaluation.
std::vector<std::string> RoundFlags(const SimConfig& config) {
  return {
      absl::StrCat("--rounds=", config.rounds),
      absl::StrCat("--min_devices=", config.devices.size()),
      absl::StrCat("--max_steps=", config.local_steps),
      absl::StrCat("--fill_pace=",
                   config.local_steps > 0 ? config.fill_pace : 1),
      absl::StrCat("--eval_examples=", config.eval_examples),
  };
}

std::string Tail(const std::string& path, size_t bytes = 2000) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  return text.size() > bytes ? text.substr(text.size() - bytes) : text;
}

// Prints a line per round as rounds.csv grows: accuracy, participation and
// the slowest device's phases (from clients.csv).
class ProgressPrinter {
 public:
  ProgressPrinter(std::string run_dir, std::string strategy, int rounds,
                  const std::vector<DeviceProfile>& devices, SpeedSwap swap,
                  std::FILE* out)
      : run_dir_(std::move(run_dir)),
        strategy_(std::move(strategy)),
        rounds_(rounds),
        out_(out),
        devices_(devices),
        swap_(std::move(swap)) {}

  void Poll() {
    absl::StatusOr<std::vector<Row>> rounds =
        metrics::ReadCsvFile(run_dir_ + "/rounds.csv");
    if (!rounds.ok() || rounds->size() <= printed_) return;
    absl::StatusOr<std::vector<Row>> clients =
        metrics::ReadCsvFile(run_dir_ + "/clients.csv");
    for (; printed_ < rounds->size(); ++printed_) {
      const Row& r = (*rounds)[printed_];
      std::string line = absl::StrFormat(
          "[%s] round %s/%d: %s/%s updates", strategy_, RowText(r, "round"),
          rounds_, RowText(r, "accepted"), RowText(r, "invited"));
      if (r.count("test_bits_per_byte") &&
          !RowText(r, "test_bits_per_byte").empty()) {
        absl::StrAppendFormat(&line, ", held-out %.4f bits/byte (ppl %.2f)",
                              RowNumber(r, "test_bits_per_byte"),
                              std::exp(RowNumber(r, "test_loss")));
        if (!RowText(r, "test_exact_match").empty()) {
          absl::StrAppendFormat(&line, ", exact match %.1f%%",
                                100 * RowNumber(r, "test_exact_match"));
        }
      } else if (r.count("accuracy") && !RowText(r, "accuracy").empty()) {
        absl::StrAppendFormat(&line, ", accuracy %.2f%%",
                              100 * RowNumber(r, "accuracy"));
      }
      if (r.count("dp_epsilon") && !RowText(r, "dp_epsilon").empty()) {
        absl::StrAppendFormat(&line, ", epsilon %.2f (clip %.3g)",
                              RowNumber(r, "dp_epsilon"),
                              RowNumber(r, "dp_clip_norm"));
      }
      const Row* slowest = nullptr;
      // The accepted tasks' step caps, when --fill_pace made them differ.
      std::optional<double> fewest_steps, most_steps;
      static const std::vector<Row> kNone;
      for (const Row& c : clients.ok() ? *clients : kNone) {
        if (RowText(c, "round") != RowText(r, "round") ||
            RowText(c, "status") != "accepted") {
          continue;
        }
        if (slowest == nullptr ||
            RowNumber(c, "elapsed_s") > RowNumber(*slowest, "elapsed_s")) {
          slowest = &c;
        }
        if (c.count("max_steps")) {
          const double steps = RowNumber(c, "max_steps");
          fewest_steps = std::min(fewest_steps.value_or(steps), steps);
          most_steps = std::max(most_steps.value_or(steps), steps);
        }
      }
      if (fewest_steps.has_value() && *fewest_steps > 0 &&
          *most_steps > *fewest_steps) {
        absl::StrAppendFormat(&line, ", %.0f-%.0f steps", *fewest_steps,
                              *most_steps);
      }
      absl::StrAppendFormat(&line, ", %.1f s", RowNumber(r, "round_s"));
      if (slowest != nullptr) {
        const Row& c = *slowest;
        absl::StrAppendFormat(
            &line,
            "; slowest %s (%s, %s, p=%.2f r=%s): down %.2f + train %.2f + up "
            "%.2f s",
            RowText(c, "device"), Profile(c), RowText(c, "link"),
            RowNumber(c, "prune_ratio"), RowText(c, "rank"),
            RowNumber(c, "download_s"), RowNumber(c, "train_s"),
            RowNumber(c, "upload_s"));
      }
      std::fprintf(out_, "%s\n", line.c_str());
      std::fflush(out_);
    }
  }

 private:
  const std::string run_dir_;
  const std::string strategy_;
  const int rounds_;
  std::FILE* const out_;
  const std::vector<DeviceProfile> devices_;
  const SpeedSwap swap_;
  size_t printed_ = 0;

  // The profile a clients.csv row's device computed at in its round.
  std::string Profile(const Row& c) const {
    int64_t index = -1;
    const std::string device = RowText(c, "device");
    if (!absl::SimpleAtoi(absl::StripPrefix(device, "device-"), &index) ||
        index < 0 || index >= static_cast<int64_t>(devices_.size())) {
      return "?";
    }
    return ProfileInRound(devices_, swap_, index,
                          static_cast<int64_t>(RowNumber(c, "round")));
  }
};

// Polls the coordinator (or fedge-vclock) until it exits, printing rounds
// as they are recorded; its log's tail if it fails or times out.
absl::Status WaitForCoordinator(const SimConfig& config,
                                const Strategy& strategy,
                                const std::string& run_dir,
                                const std::string& log, ChildProcess& process,
                                std::FILE* progress) {
  // RunExperiment checked the swap; a bad one here prints no swap.
  ProgressPrinter printer(
      run_dir, strategy.name, config.rounds, config.devices,
      ParseSpeedSwap(config.swap_speeds,
                     static_cast<int>(config.devices.size()))
          .value_or(SpeedSwap{}),
      progress);
  const absl::Time deadline = absl::Now() + config.timeout;
  absl::StatusOr<int> exit_code = absl::DeadlineExceededError("");
  while (true) {
    exit_code = process.Wait(absl::Seconds(1));
    printer.Poll();
    if (exit_code.ok() || !absl::IsDeadlineExceeded(exit_code.status())) break;
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(strategy.name, ": the federation did not finish in ",
                       absl::FormatDuration(config.timeout), "; see ", log));
    }
  }
  if (!exit_code.ok()) return exit_code.status();
  if (*exit_code != 0) {
    return absl::InternalError(absl::StrCat(strategy.name, ": ", process.name(),
                                            " exited with ", *exit_code, ":\n",
                                            Tail(log)));
  }
  return absl::OkStatus();
}

absl::StatusOr<StrategyRun> LoadProfiledRun(const SimConfig& config,
                                            const Strategy& strategy,
                                            const std::string& run_dir,
                                            double start_unix) {
  absl::StatusOr<StrategyRun> run = LoadRun(strategy.name, run_dir, start_unix);
  if (!run.ok()) return run.status();
  for (size_t i = 0; i < config.devices.size(); ++i) {
    run->device_profiles[absl::StrCat("device-", i)] = config.devices[i].name;
  }
  return run;
}

// The same federation on fedge-vclock's virtual clock (sim/virtual_clock.h).
absl::StatusOr<StrategyOutcome> RunVirtual(const SimConfig& config,
                                           const Strategy& strategy,
                                           const std::string& run_dir,
                                           std::FILE* progress) {
  const int n = static_cast<int>(config.devices.size());
  std::vector<std::string> argv = {
      config.bin_dir + "/fedge-vclock",
      "--quiet",
      "--run_dir=" + run_dir,
      absl::StrCat("--clients=", n),
      "--devices=" +
          absl::StrJoin(config.devices, ",",
                        [](std::string* out, const DeviceProfile& d) {
                          out->append(d.name);
                        }),
      "--links=" + absl::StrJoin(config.links, ","),
      absl::StrCat("--workers=", config.workers),
      "--compute_costs=" + config.compute_costs,
  };
  const std::vector<std::string> rounds = RoundFlags(config);
  argv.insert(argv.end(), rounds.begin(), rounds.end());
  if (!config.swap_speeds.empty()) {
    argv.push_back("--swap_speeds=" + config.swap_speeds);
  }
  if (config.clients_per_round > 0) {
    argv.push_back("--selection=random");
    argv.push_back(
        absl::StrCat("--clients_per_round=", config.clients_per_round));
  }
  argv.insert(argv.end(), config.task_args.begin(), config.task_args.end());
  argv.insert(argv.end(), strategy.flags.begin(), strategy.flags.end());
  argv.insert(argv.end(), config.coordinator_flags.begin(),
              config.coordinator_flags.end());
  const std::string log = run_dir + "/vclock.log";
  absl::StatusOr<std::unique_ptr<ChildProcess>> process =
      ChildProcess::Start(argv, log);
  if (!process.ok()) return process.status();
  if (absl::Status s = WaitForCoordinator(config, strategy, run_dir, log,
                                          **process, progress);
      !s.ok()) {
    return s;
  }
  // unix_time in a virtual run counts virtual seconds from 0.
  absl::StatusOr<StrategyRun> run =
      LoadProfiledRun(config, strategy, run_dir, 0);
  if (!run.ok()) return run.status();
  return StrategyOutcome{
      *std::move(run),
      absl::StrFormat("virtual clock: %s of %d devices train for real per "
                      "round; compute charged as training FLOPs x this "
                      "machine's seconds per FLOP (calibrated once) / "
                      "profile speed (split tasks: their CPU time), "
                      "transfers as bytes / link rate + RTT",
                      config.clients_per_round > 0
                          ? absl::StrCat(config.clients_per_round)
                          : std::string("all"),
                      n)};
}

}  // namespace

absl::StatusOr<CpuEmulation> ParseCpuEmulation(absl::string_view name) {
  if (name == "auto" || name == "true") return CpuEmulation::kAuto;
  if (name == "cgroup") return CpuEmulation::kCgroup;
  if (name == "dilate") return CpuEmulation::kDilate;
  if (name == "off" || name == "false") return CpuEmulation::kOff;
  return absl::InvalidArgumentError(
      absl::StrCat("'", name, "' is not auto, cgroup, dilate or off"));
}

absl::StatusOr<std::vector<Strategy>> ParseStrategies(absl::string_view spec) {
  std::vector<Strategy> out;
  for (absl::string_view item : absl::StrSplit(spec, ',', absl::SkipEmpty())) {
    const std::string name(item);
    if (name == "fedspine" || name == "ucb1" || name == "discounted_ucb" ||
        name == "sliding_window_ucb" || name == "thompson" || name == "exp3" ||
        name == "random" || name == "static") {
      out.push_back({name, {"--bandit=" + name}});
    } else if (name == "fixed-grid") {
      for (double ratio : {0.0, 0.2, 0.4, 0.6}) {
        for (int rank : {4, 8}) {
          out.push_back(
              {absl::StrFormat("fixed:%.1f:%d", ratio, rank),
               {"--bandit=fixed", absl::StrFormat("--fixed_ratio=%.2f", ratio),
                absl::StrCat("--fixed_rank=", rank)}});
        }
      }
    } else if (absl::StartsWith(name, "fixed:")) {
      std::vector<std::string> parts = absl::StrSplit(name, ':');
      double ratio = 0;
      int rank = 0;
      if (parts.size() != 3 || !absl::SimpleAtod(parts[1], &ratio) ||
          !absl::SimpleAtoi(parts[2], &rank) || ratio < 0 || ratio >= 1 ||
          rank < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("strategy \"", name,
                         "\": expected fixed:RATIO:RANK, e.g. "
                         "fixed:0.4:8"));
      }
      out.push_back({name,
                     {"--bandit=fixed", absl::StrCat("--fixed_ratio=", ratio),
                      absl::StrCat("--fixed_rank=", rank)}});
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown strategy \"", name,
          "\" (fedspine, ucb1, discounted_ucb, sliding_window_ucb, thompson, "
          "exp3, random, static, fixed:RATIO:RANK, fixed-grid)"));
    }
  }
  if (out.empty()) return absl::InvalidArgumentError("no strategy given");
  return out;
}

absl::StatusOr<std::string> CheckLinks(const std::vector<std::string>& links,
                                       FILE* out) {
  std::vector<std::string> parts;
  std::set<std::string> seen;
  for (const std::string& spec : links) {
    if (!seen.insert(spec).second) continue;
    absl::StatusOr<transport::LinkProfile> link =
        transport::ParseLinkProfile(spec);
    if (!link.ok()) return link.status();
    absl::StatusOr<transport::LinkCheck> check = transport::MeasureLink(*link);
    if (!check.ok()) return check.status();
    const bool off = check->max_error > kLinkTolerance;
    parts.push_back(absl::StrFormat(
        "%s up %.0f -> %.0f, down %.0f -> %.0f Mbit/s (%.0f%% off%s)",
        check->link, check->uplink_mbps, check->achieved_uplink_mbps,
        check->downlink_mbps, check->achieved_downlink_mbps,
        100 * check->max_error, off ? ", OVER TOLERANCE" : ""));
    if (off) {
      std::fprintf(out,
                   "fedge-sim: WARNING: the %s link emulator is %.0f%% off "
                   "its profile on this machine (up %.0f of %.0f Mbit/s, "
                   "down %.0f of %.0f): transfer times in this run are "
                   "those of a different link\n",
                   check->link.c_str(), 100 * check->max_error,
                   check->achieved_uplink_mbps, check->uplink_mbps,
                   check->achieved_downlink_mbps, check->downlink_mbps);
    }
  }
  std::string line = absl::StrJoin(parts, "; ");
  std::fprintf(out, "fedge-sim: links measured: %s\n", line.c_str());
  std::fflush(out);
  return line;
}

absl::StatusOr<StrategyOutcome> RunStrategy(const SimConfig& config,
                                            const Strategy& strategy,
                                            std::FILE* progress) {
  namespace fs = std::filesystem;
  const int n = static_cast<int>(config.devices.size());
  if (n < 1 || config.links.size() != config.devices.size()) {
    return absl::InvalidArgumentError("one device profile and link per client");
  }
  const std::string run_dir =
      absl::StrCat(config.out_dir, "/", Slug(strategy.name));
  std::error_code error;
  fs::remove_all(run_dir, error);
  fs::create_directories(run_dir, error);
  if (error) {
    return absl::UnavailableError(
        absl::StrCat("cannot create ", run_dir, ": ", error.message()));
  }
  if (config.virtual_clock)
    return RunVirtual(config, strategy, run_dir, progress);
  absl::StatusOr<int> port = FreePort();
  if (!port.ok()) return port.status();

  std::vector<std::string> argv = {
      config.bin_dir + "/fedge-coordinator",
      "--insecure",
      absl::StrCat("--listen=127.0.0.1:", *port),
      "--run_dir=" + run_dir,
      "--threads=1",
      "--retry_after_ms=200",
      "--metrics_listen=",
  };
  const std::vector<std::string> rounds = RoundFlags(config);
  argv.insert(argv.end(), rounds.begin(), rounds.end());
  argv.insert(argv.end(), config.task_args.begin(), config.task_args.end());
  argv.insert(argv.end(), strategy.flags.begin(), strategy.flags.end());
  argv.insert(argv.end(), config.coordinator_flags.begin(),
              config.coordinator_flags.end());
  const std::string coordinator_log = run_dir + "/coordinator.log";
  const double start_unix =
      absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  absl::StatusOr<std::unique_ptr<ChildProcess>> coordinator =
      ChildProcess::Start(argv, coordinator_log);
  if (!coordinator.ok()) return coordinator.status();

  // Links, clients and their CPU caps.
  CpuLimit::RemoveStale("fedge-sim-");
  const double cores = config.usable_cores > 0
                           ? config.usable_cores
                           : 0.9 * std::thread::hardware_concurrency();
  const std::vector<double> shares = CpuShares(config.devices, cores);
  // How device speeds are emulated, decided before any client starts.
  std::vector<std::unique_ptr<CpuLimit>> limits;
  std::string cpu_mode;
  CpuEmulation emulation = config.cpu_emulation;
  if (emulation == CpuEmulation::kAuto || emulation == CpuEmulation::kCgroup) {
    for (int i = 0; i < n; ++i) {
      absl::StatusOr<std::unique_ptr<CpuLimit>> limit = CpuLimit::Create(
          absl::StrCat("fedge-sim-", ::getpid(), "-device-", i), shares[i]);
      if (!limit.ok()) {
        if (emulation == CpuEmulation::kCgroup) {
          return absl::FailedPreconditionError(
              absl::StrCat("--emulate_cpu=cgroup: ", limit.status().message(),
                           " (run as root, or --emulate_cpu=dilate)"));
        }
        limits.clear();
        emulation = CpuEmulation::kDilate;
        cpu_mode =
            absl::StrCat("no cgroups (", limit.status().message(), "), so ");
        break;
      }
      limits.push_back(*std::move(limit));
    }
  }
  if (!limits.empty()) {
    cpu_mode = absl::StrFormat(
        "%s: CPU shares %s of one core (relative speeds x %.3f to fit %.1f "
        "cores)",
        limits[0]->mechanism(),
        absl::StrJoin(shares, ", ",
                      [](std::string* out, double s) {
                        absl::StrAppendFormat(out, "%.3f", s);
                      }),
        shares[0] / config.devices[0].relative_speed, cores);
  } else if (emulation == CpuEmulation::kDilate) {
    absl::StrAppend(
        &cpu_mode,
        "time dilation: every device computes at this machine's speed and "
        "then waits until its measured compute time is stretched to 1 / its "
        "relative speed (fedge-client --compute_slowdown)");
  } else {
    cpu_mode =
        "off (--emulate_cpu=off): every device runs at this machine's "
        "speed";
  }
  std::vector<std::unique_ptr<transport::ShapingProxy>> proxies;
  std::vector<std::unique_ptr<ChildProcess>> clients;
  for (int i = 0; i < n; ++i) {
    absl::StatusOr<transport::LinkProfile> link =
        transport::ParseLinkProfile(config.links[i]);
    if (!link.ok()) return link.status();
    absl::StatusOr<std::unique_ptr<transport::ShapingProxy>> proxy =
        transport::ShapingProxy::Start(
            "127.0.0.1", *port, transport::ShapingOptions::FromProfile(*link));
    if (!proxy.ok()) return proxy.status();
    const std::string id = absl::StrCat("device-", i);
    std::vector<std::string> client = {
        config.bin_dir + "/fedge-client",
        "--insecure",
        "--coordinator=" + (*proxy)->address(),
        "--device_id=" + id,
        absl::StrCat("--shard=", i, "/", n),
        "--link=" + link->name,
        "--threads=1",
        absl::StrCat("--memory_budget_mb=", config.devices[i].memory_mb),
        "--cache_dir=" + config.cache_dir + "/" + id,
        "--benchmark=false",
        "--report_csv=" + run_dir + "/" + id + ".csv",
    };
    client.insert(client.end(), config.task_args.begin(),
                  config.task_args.end());
    if (emulation == CpuEmulation::kDilate) {
      client.push_back(absl::StrCat("--compute_slowdown=",
                                    1 / config.devices[i].relative_speed));
    }
    absl::StatusOr<std::unique_ptr<ChildProcess>> process =
        ChildProcess::Start(client, run_dir + "/" + id + ".log");
    if (!process.ok()) return process.status();
    if (!limits.empty()) {
      if (absl::Status s = limits[i]->Add((*process)->pid()); !s.ok()) {
        return absl::Status(
            s.code(), absl::StrCat("capping ", id, "'s CPU: ", s.message()));
      }
    }
    proxies.push_back(*std::move(proxy));
    clients.push_back(*std::move(process));
  }

  if (absl::Status s = WaitForCoordinator(
          config, strategy, run_dir, coordinator_log, **coordinator, progress);
      !s.ok()) {
    return s;
  }
  // Clients leave when told the federation finished.
  for (auto& c : clients) {
    if (!c->Wait(absl::Seconds(30)).ok()) c->Signal(SIGTERM);
    (void)c->Wait(absl::Seconds(5));
  }
  clients.clear();  // Kills any left before their cgroups go.
  limits.clear();

  absl::StatusOr<StrategyRun> run =
      LoadProfiledRun(config, strategy, run_dir, start_unix);
  if (!run.ok()) return run.status();
  return StrategyOutcome{*std::move(run), cpu_mode};
}

}  // namespace fedge::sim
