// fedge-coordinator: the server of a fedge federation. Every flag is
// documented in --help; any flag may also come from a file with
// --flagfile=FILE (one --name=value per line; see deploy/coordinator.flags).
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

#include "coordinator/server.h"
#include "model/dataset.h"
#include "model/threads.h"

ABSL_FLAG(std::string, base_dir, "runs/base",
          "Base model: config.json + model.safetensors (fedge-pretrain).");
ABSL_FLAG(std::string, data_dir, fedge::model::kFashionMnistDir,
          "Fashion-MNIST directory whose test split evaluates the global "
          "model; empty disables evaluation.");
ABSL_FLAG(int64_t, eval_examples, 0, "Test images to evaluate on (0: all).");
ABSL_FLAG(int64_t, eval_every, 1, "Evaluate every N committed rounds.");
ABSL_FLAG(std::string, run_dir, "runs/coordinator",
          "Where clients.csv, rounds.csv and checkpoint/ go.");
ABSL_FLAG(bool, resume, false,
          "Continue the federation checkpointed in --run_dir (an error if "
          "there is no checkpoint).");
ABSL_FLAG(bool, resume_if_present, false,
          "Continue the checkpointed federation if there is one, else start "
          "a new one (for service managers that restart the coordinator).");
ABSL_FLAG(std::string, listen, "0.0.0.0:7070",
          "gRPC address (port 0 picks a free one and prints it).");
ABSL_FLAG(bool, insecure, false,
          "Serve without TLS (development only). Without it, --tls_cert and "
          "--tls_key are required.");
ABSL_FLAG(std::string, tls_cert, "", "Server certificate chain (PEM).");
ABSL_FLAG(std::string, tls_key, "", "Server private key (PEM).");
ABSL_FLAG(std::string, tls_ca, "",
          "CA of client certificates; with --mtls, required.");
ABSL_FLAG(bool, mtls, false,
          "Mutual TLS: clients must present a certificate whose common name "
          "is their device id.");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9464",
          "Prometheus /metrics address; empty disables it.");
ABSL_FLAG(std::string, mode, "lora",
          "lora (FedSpine: pruned sub-models + LoRA) or dense (classic "
          "FedAvg of all weights).");
ABSL_FLAG(int64_t, rounds, 20, "Rounds to run.");
ABSL_FLAG(int64_t, min_devices, 2, "Registered devices before round 1.");
ABSL_FLAG(int64_t, min_updates, 1,
          "Fewer updates than this at the deadline: the round is retried.");
ABSL_FLAG(int64_t, max_attempts, 5, "Tries per round before giving up.");
ABSL_FLAG(double, deadline_s, 600, "Round deadline in seconds.");
ABSL_FLAG(double, heartbeat_timeout_s, 120,
          "A silent device is dropped from its round after this.");
ABSL_FLAG(std::string, selection, "all",
          "Client selection: all, random (k per round) or deadline "
          "(deadline-aware with over-commit).");
ABSL_FLAG(int, clients_per_round, 0, "k for random/deadline; 0: all.");
ABSL_FLAG(double, overcommit, 1.3, "Invite k * overcommit (deadline).");
ABSL_FLAG(std::string, bandit, "fedspine",
          "Per-device arm choice: fedspine, ucb1, discounted_ucb, "
          "sliding_window_ucb, thompson, exp3, fixed, random.");
ABSL_FLAG(double, min_ratio, 0.0, "Smallest pruning ratio an arm may have.");
ABSL_FLAG(double, max_ratio, 0.6, "Largest pruning ratio an arm may have.");
ABSL_FLAG(int, ratio_steps, 4, "Ratios in the grid of grid bandits.");
ABSL_FLAG(std::string, ranks, "2,4,8,16", "LoRA ranks arms may have.");
ABSL_FLAG(double, discount, 0.97, "Bandit discount per play (drift).");
ABSL_FLAG(double, exploration, 0.2, "Bandit exploration weight.");
ABSL_FLAG(double, fixed_ratio, 0.0, "--bandit=fixed: the pruning ratio.");
ABSL_FLAG(int64_t, fixed_rank, 8, "--bandit=fixed: the LoRA rank.");
ABSL_FLAG(double, reward_loss, 1.0, "Reward weight of loss improvement.");
ABSL_FLAG(double, reward_pruning, 0.3, "Reward weight of pruning progress.");
ABSL_FLAG(double, reward_importance, 0.1, "Reward weight of update norm.");
ABSL_FLAG(double, reward_time, 0.5,
          "Reward weight of completion time over the round median.");
ABSL_FLAG(double, target_sparsity, 0.0,
          "Global prune-and-tune target ratio (0: no global pruning).");
ABSL_FLAG(int64_t, sparsity_start_round, 0, "Global pruning starts here.");
ABSL_FLAG(int64_t, sparsity_end_round, 10, "... and reaches its target here.");
ABSL_FLAG(std::string, aggregator, "mean",
          "mean (FedAvg), median or trimmed_mean.");
ABSL_FLAG(double, trim_fraction, 0.1, "trimmed_mean: share cut per end.");
ABSL_FLAG(double, clip_norm, 0.0, "Clip each update's delta norm (0: off).");
ABSL_FLAG(double, lora_alpha, 16.0, "LoRA alpha (scale alpha / rank).");
ABSL_FLAG(std::string, lora_targets, "q_proj,v_proj",
          "Linears that get adapters (last path component).");
ABSL_FLAG(int, epochs, 1, "Local epochs per round.");
ABSL_FLAG(int64_t, max_steps, 0, "Local optimizer steps cap (0: none).");
ABSL_FLAG(int, batch_size, 32, "Local batch size.");
ABSL_FLAG(double, lr, 1e-3,
          "Local learning rate (3e-3 made round 1 dip on the default task).");
ABSL_FLAG(double, weight_decay, 0.0, "Local AdamW weight decay.");
ABSL_FLAG(double, fedprox_mu, 0.0, "FedProx proximal weight (0: off).");
ABSL_FLAG(std::string, upload_codec, "int8_row",
          "Update codec: float32, float16, bfloat16, int8_row or topk.");
ABSL_FLAG(bool, zstd, true, "zstd on top of the codec.");
ABSL_FLAG(double, topk_fraction, 0.01, "topk: share of entries sent.");
ABSL_FLAG(std::string, allow_list, "",
          "Comma-separated device ids allowed to register (empty: any).");
ABSL_FLAG(int64_t, retry_after_ms, 500,
          "How long a device without a task waits before asking again.");
ABSL_FLAG(int, threads, 0, "LibTorch threads for evaluation (0: all).");
ABSL_FLAG(uint64_t, seed, 1, "Seed of arm choices and selection.");
ABSL_FLAG(bool, quiet, false, "No per-round progress lines.");

namespace {

std::atomic<bool> g_stop{false};
std::atomic<bool> g_signalled{false};
extern "C" void OnSignal(int) {
  g_signalled = true;
  g_stop = true;
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "fedge-coordinator: %s\n", status.ToString().c_str());
  return 1;
}

absl::Status FlagError(const char* flag, const absl::Status& status) {
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, ": ", status.message()));
}

absl::StatusOr<fedge::coordinator::ServerConfig> ConfigFromFlags() {
  namespace fc = fedge::coordinator;
  namespace fs = fedge::strategies;
  fc::ServerConfig c;
  c.base_dir = absl::GetFlag(FLAGS_base_dir);
  c.data_dir = absl::GetFlag(FLAGS_data_dir);
  c.eval_examples = absl::GetFlag(FLAGS_eval_examples);
  c.eval_every = absl::GetFlag(FLAGS_eval_every);
  if (c.eval_every < 1) {
    return absl::InvalidArgumentError("--eval_every must be >= 1");
  }
  c.run_dir = absl::GetFlag(FLAGS_run_dir);
  c.resume = absl::GetFlag(FLAGS_resume);
  c.resume_if_present = absl::GetFlag(FLAGS_resume_if_present);
  c.listen = absl::GetFlag(FLAGS_listen);
  c.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  c.quiet = absl::GetFlag(FLAGS_quiet);
  c.tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  c.tls.key_file = absl::GetFlag(FLAGS_tls_key);
  c.tls.ca_file = absl::GetFlag(FLAGS_tls_ca);
  c.tls.require_client_cert = absl::GetFlag(FLAGS_mtls);
  if (absl::GetFlag(FLAGS_insecure)) {
    if (!c.tls.insecure() || c.tls.require_client_cert) {
      return absl::InvalidArgumentError(
          "--insecure cannot be combined with --tls_* or --mtls");
    }
  } else if (c.tls.cert_file.empty() || c.tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS is the default: pass --tls_cert and --tls_key (and --tls_ca "
        "with --mtls), or --insecure for local development");
  } else if (c.tls.require_client_cert && c.tls.ca_file.empty()) {
    return absl::InvalidArgumentError("--mtls needs --tls_ca");
  }

  fc::EngineOptions& e = c.engine;
  auto mode = fc::ParseMode(absl::GetFlag(FLAGS_mode));
  if (!mode.ok()) return FlagError("mode", mode.status());
  e.mode = *mode;
  e.rounds = absl::GetFlag(FLAGS_rounds);
  e.min_devices = absl::GetFlag(FLAGS_min_devices);
  e.min_updates = absl::GetFlag(FLAGS_min_updates);
  e.max_attempts = absl::GetFlag(FLAGS_max_attempts);
  e.round_deadline = absl::Seconds(absl::GetFlag(FLAGS_deadline_s));
  e.heartbeat_timeout = absl::Seconds(absl::GetFlag(FLAGS_heartbeat_timeout_s));
  auto selection = fs::ParseSelectionKind(absl::GetFlag(FLAGS_selection));
  if (!selection.ok()) return FlagError("selection", selection.status());
  e.selection.kind = *selection;
  e.selection.clients_per_round = absl::GetFlag(FLAGS_clients_per_round);
  e.selection.overcommit = absl::GetFlag(FLAGS_overcommit);
  auto bandit = fs::ParseBanditKind(absl::GetFlag(FLAGS_bandit));
  if (!bandit.ok()) return FlagError("bandit", bandit.status());
  if (*bandit == fs::BanditKind::kOracle) {
    return absl::InvalidArgumentError(
        "--bandit=oracle needs each arm's expected reward; only fedge-sim, "
        "which knows its profiles, can run it");
  }
  e.bandit.kind = *bandit;
  e.bandit.space.min_ratio = absl::GetFlag(FLAGS_min_ratio);
  e.bandit.space.max_ratio = absl::GetFlag(FLAGS_max_ratio);
  e.bandit.space.ratio_steps = absl::GetFlag(FLAGS_ratio_steps);
  e.bandit.space.ranks.clear();
  for (absl::string_view r : absl::StrSplit(absl::GetFlag(FLAGS_ranks), ',')) {
    int64_t rank = 0;
    if (!absl::SimpleAtoi(r, &rank)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ranks: '", r, "' is not an integer"));
    }
    e.bandit.space.ranks.push_back(rank);
  }
  if (absl::Status s = fs::ValidateArmSpace(e.bandit.space); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--min_ratio/--max_ratio/--ratio_steps/--ranks: ", s.message()));
  }
  e.bandit.discount = absl::GetFlag(FLAGS_discount);
  e.bandit.exploration = absl::GetFlag(FLAGS_exploration);
  e.bandit.fixed_arm = {absl::GetFlag(FLAGS_fixed_ratio),
                        absl::GetFlag(FLAGS_fixed_rank)};
  e.reward = {
      absl::GetFlag(FLAGS_reward_loss), absl::GetFlag(FLAGS_reward_pruning),
      absl::GetFlag(FLAGS_reward_importance), absl::GetFlag(FLAGS_reward_time)};
  e.schedule = {absl::GetFlag(FLAGS_target_sparsity),
                absl::GetFlag(FLAGS_sparsity_start_round),
                absl::GetFlag(FLAGS_sparsity_end_round)};
  auto aggregator = fs::ParseAggregatorKind(absl::GetFlag(FLAGS_aggregator));
  if (!aggregator.ok()) return FlagError("aggregator", aggregator.status());
  e.aggregator = {*aggregator, absl::GetFlag(FLAGS_trim_fraction),
                  absl::GetFlag(FLAGS_clip_norm)};
  e.lora.alpha = absl::GetFlag(FLAGS_lora_alpha);
  e.lora.target_modules =
      absl::StrSplit(absl::GetFlag(FLAGS_lora_targets), ',');
  e.train.epochs = absl::GetFlag(FLAGS_epochs);
  e.train.max_steps = absl::GetFlag(FLAGS_max_steps);
  e.train.batch_size = absl::GetFlag(FLAGS_batch_size);
  e.train.learning_rate = absl::GetFlag(FLAGS_lr);
  e.train.weight_decay = absl::GetFlag(FLAGS_weight_decay);
  e.train.fedprox_mu = absl::GetFlag(FLAGS_fedprox_mu);
  if (auto codec =
          fedge::transport::ParseCodec(absl::GetFlag(FLAGS_upload_codec));
      !codec.ok()) {
    return FlagError("upload_codec", codec.status());
  }
  e.upload_codec = absl::GetFlag(FLAGS_upload_codec);
  e.upload_zstd = absl::GetFlag(FLAGS_zstd);
  e.topk_fraction = absl::GetFlag(FLAGS_topk_fraction);
  for (absl::string_view id : absl::StrSplit(absl::GetFlag(FLAGS_allow_list),
                                             ',', absl::SkipEmpty())) {
    e.allow_list.insert(std::string(id));
  }
  e.seed = absl::GetFlag(FLAGS_seed);
  if (absl::Status s = e.Validate(); !s.ok()) return s;
  c.service.retry_after_ms = absl::GetFlag(FLAGS_retry_after_ms);
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Runs a fedge coordinator: rounds, the FedSpine bandit, aggregation, "
      "checkpoints and metrics.\nUsage: fedge-coordinator [--flag=value...] "
      "[--flagfile=FILE]");
  const std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "unexpected argument '", rest[1], "' (flags are --name=value)")));
  }
  absl::StatusOr<fedge::coordinator::ServerConfig> config = ConfigFromFlags();
  if (!config.ok()) return Fail(config.status());
  fedge::model::ConfigureRuntime(absl::GetFlag(FLAGS_threads));
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  auto server = fedge::coordinator::CoordinatorServer::Start(*config);
  if (!server.ok()) return Fail(server.status());
  std::printf(
      "fedge-coordinator: serving on port %d (%s), base %s, digest "
      "%.12s..., metrics %s, run dir %s\n",
      (*server)->port(), config->tls.insecure() ? "insecure" : "TLS",
      config->base_dir.c_str(), (*server)->base_digest().c_str(),
      (*server)->metrics_port() > 0
          ? absl::StrCat("port ", (*server)->metrics_port()).c_str()
          : "off",
      config->run_dir.c_str());
  std::fflush(stdout);
  std::thread watcher([&] {
    while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!g_signalled) return;
    std::printf(
        "fedge-coordinator: stopping (the last completed round is "
        "checkpointed; --resume continues)\n");
    std::fflush(stdout);
    (*server)->Stop();
  });
  const absl::Status status = (*server)->Wait();
  g_stop = true;
  watcher.join();
  if (!status.ok()) return Fail(status);
  std::printf("fedge-coordinator: done; records in %s\n",
              config->run_dir.c_str());
  return 0;
}
