#include "coordinator/engine_flags.h"

#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

#include "transport/update_codec.h"

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
          "Client selection: all, random (k per round), deadline "
          "(deadline-aware with over-commit) or poisson (each device with "
          "probability --sampling_rate).");
ABSL_FLAG(double, sampling_rate, 1.0,
          "--selection=poisson: the probability that a device joins a "
          "round; differential privacy's accountant assumes it.");
ABSL_FLAG(int, clients_per_round, 0, "k for random/deadline; 0: all.");
ABSL_FLAG(double, overcommit, 1.3, "Invite k * overcommit (deadline).");
ABSL_FLAG(std::string, bandit, "auto",
          "Per-device arm choice: auto (fedspine in lora mode; fixed in "
          "dense mode, so dense is plain FedAvg of every weight at "
          "--fixed_ratio, 0 by default), fedspine, ucb1, discounted_ucb, "
          "sliding_window_ucb, thompson, exp3, fixed, random, or static "
          "(not learnt: per device the least pruning and then the highest "
          "rank whose predicted time is within the round's 75th-percentile "
          "device's time at the least pruned arm and highest rank).");
ABSL_FLAG(double, min_ratio, 0.0, "Smallest pruning ratio an arm may have.");
ABSL_FLAG(double, max_ratio, 0.6, "Largest pruning ratio an arm may have.");
ABSL_FLAG(int, ratio_steps, 4, "Ratios in the grid of grid bandits.");
ABSL_FLAG(std::string, ranks, "2,4,8,16", "LoRA ranks arms may have.");
ABSL_FLAG(double, discount, 0.97, "Bandit discount per play (drift).");
ABSL_FLAG(double, exploration, 0.2, "Bandit exploration weight.");
ABSL_FLAG(bool, capacity_ties, true,
          "FedSpine: of the arms that keep the round on pace and whose "
          "index is within one play's exploration bonus of the best, play "
          "the highest rank's least pruned (docs/architecture.md). false: "
          "the best index.");
ABSL_FLAG(int, ratio_ramp_plays, 10,
          "Prune-and-tune pace: a device's pruning ratio may reach "
          "--max_ratio only after this many of its rounds, rising linearly "
          "from --min_ratio (every kind, fixed too; 0: the whole range "
          "from round 1).");
ABSL_FLAG(double, fixed_ratio, 0.0, "--bandit=fixed: the pruning ratio.");
ABSL_FLAG(int64_t, fixed_rank, 8, "--bandit=fixed: the LoRA rank.");
ABSL_FLAG(std::string, device_arms, "",
          "--bandit=fixed: arms of named devices, which then play them "
          "instead of --fixed_ratio/--fixed_rank, as "
          "ID=RATIO:RANK,ID=RATIO:RANK (e.g. device-0=0.4:4,device-1=0.4:4), "
          "each a ratio in [0, 1) and a rank >= 1 as a fixed arm's.");
ABSL_FLAG(double, reward_loss, 1.0, "Reward weight of loss improvement.");
ABSL_FLAG(double, reward_pruning, 0.3,
          "Reward weight of pruning progress: how far a device's ratio goes "
          "towards what the model still lacks of --target_sparsity (so 0 "
          "without a target: pruning then pays only in time).");
ABSL_FLAG(double, reward_importance, 0.1, "Reward weight of update norm.");
ABSL_FLAG(double, reward_time, 0.5,
          "Reward weight of completion time over the round median.");
ABSL_FLAG(double, reward_pruning_cost, 1.0,
          "Reward weight of what a task's pruning costs the global model "
          "(its validation loss pruned over unpruned, minus 1); measured "
          "where the binary holds validation data (--validation_examples), "
          "else 0. Bandits are told it before they choose.");
ABSL_FLAG(double, target_sparsity, 0.0,
          "Global prune-and-tune target ratio (0: no global pruning).");
ABSL_FLAG(int64_t, sparsity_start_round, 0, "Global pruning starts here.");
ABSL_FLAG(int64_t, sparsity_end_round, 10, "... and reaches its target here.");
ABSL_FLAG(std::string, aggregator, "mean",
          "mean (FedAvg), median or trimmed_mean.");
ABSL_FLAG(double, trim_fraction, 0.1, "trimmed_mean: share cut per end.");
ABSL_FLAG(double, clip_norm, 0.0,
          "Clip each update's delta norm (0: off); with "
          "--dp_noise_multiplier, the (initial) clip.");
ABSL_FLAG(bool, secure_aggregation, false,
          "Secure aggregation (SecAgg+, docs/privacy.md): the coordinator "
          "learns only the sum of each round's changes, every device "
          "weighing the same. Needs --mode=lora, --aggregator=mean, "
          "--clip_norm=0 and --min_devices >= 2, and turns automatic "
          "splitting off. Devices run the key exchange through the Secure "
          "RPC and upload only their masked change. With "
          "--dp_noise_multiplier the devices add the noise (distributed DP, "
          "clip --secure_clip_norm, fixed).");
ABSL_FLAG(double, secure_clip_norm, 1.0,
          "Secure aggregation: each device clips its change to this L2 norm "
          "before masking (it also sets the ring's scale).");
ABSL_FLAG(double, secure_dropout, 0.3,
          "Secure aggregation: the share of a round's devices that may drop "
          "after masking with the round still unmasking; sizes the "
          "neighbour graph. Under distributed DP each device's noise is "
          "calibrated for this share dropping, and a round with fewer "
          "masked vectors is retried, not unmasked.");
ABSL_FLAG(double, secure_phase_timeout_s, 60,
          "Secure aggregation: how long the key exchange's two phases and "
          "the unmasking each wait for devices at most.");
ABSL_FLAG(double, dp_noise_multiplier, 0.0,
          "User-level differential privacy (docs/privacy.md): Gaussian noise "
          "of this many clip norms on each round's sum (0: off; or set "
          "--dp_epsilon). Needs "
          "--clip_norm, --aggregator=mean, --bandit=fixed and Poisson "
          "sampling (--selection=poisson, or all with --sampling_rate=1).");
ABSL_FLAG(double, dp_epsilon, 0.0,
          "Differential privacy calibrated to a target: the smallest "
          "--dp_noise_multiplier whose --rounds rounds at --sampling_rate "
          "spend at most this epsilon at --dp_delta (0: use "
          "--dp_noise_multiplier as given).");
ABSL_FLAG(double, local_dp_clip, 0.0,
          "Local differential privacy (docs/privacy.md): each device clips "
          "its change to this L2 norm and noises it itself before upload, "
          "for a coordinator it does not trust (0: off; needs --split=off).");
ABSL_FLAG(double, local_dp_noise_multiplier, 0.0,
          "Local differential privacy: the device's noise, in clips.");
ABSL_FLAG(double, dp_delta, 1e-5,
          "Differential privacy: the delta epsilon is reported at (keep it "
          "below 1 / devices).");
ABSL_FLAG(double, dp_epsilon_budget, 0.0,
          "Differential privacy: refuse a run whose --rounds would spend "
          "more epsilon than this, and stop one that would (0: no budget).");
ABSL_FLAG(double, dp_target_quantile, 0.0,
          "Differential privacy: adaptive clipping towards this quantile of "
          "the devices' change norms, e.g. 0.5 (0: the clip stays at "
          "--clip_norm).");
ABSL_FLAG(double, dp_clip_learning_rate, 0.2,
          "Adaptive clipping: the clip moves by exp(-rate * (unclipped share "
          "- quantile)) each round.");
ABSL_FLAG(double, dp_clipped_count_stddev, 0.0,
          "Adaptive clipping: the noise on the count of unclipped devices "
          "(0: expected devices per round / 20).");
ABSL_FLAG(uint64_t, dp_seed, 0,
          "Differential privacy: 0 draws each round's noise and sample from "
          "the operating system; anything else repeats them (tests and "
          "benchmarks only: the noise is then no secret).");
ABSL_FLAG(std::string, server_optimizer, "auto",
          "The step on each round's mean change: none (FedAvg), momentum "
          "(FedAvgM) or adam (FedAdam); docs/architecture.md. auto: "
          "momentum for image classification in LoRA mode (0.2-0.4 points "
          "over FedAvg in 10 rounds of the default task), none for text "
          "tasks (it gained less there) and in dense mode (plain FedAvg of "
          "every weight); docs/simulation.md.");
ABSL_FLAG(double, server_lr, 1.0, "Server optimizer learning rate.");
ABSL_FLAG(double, server_momentum, 0.5,
          "momentum: its factor (0.9 overshot on text and on images).");
ABSL_FLAG(double, server_beta1, 0.9, "adam: beta1.");
ABSL_FLAG(double, server_beta2, 0.99, "adam: beta2.");
ABSL_FLAG(double, server_epsilon, 1e-3, "adam: epsilon (tau).");
ABSL_FLAG(double, lora_alpha, 16.0, "LoRA alpha (scale alpha / rank).");
ABSL_FLAG(std::string, global_rank, "auto",
          "LoRA mode: hold each Linear's global change at this rank (SVD "
          "after every round) and send devices of a lower rank the rest as "
          "a frozen residual, so every device trains from exactly the "
          "global model. auto: the largest rank a device may play (of "
          "--ranks, the fixed arms' or --device_arms'). 0: unbounded, and a "
          "device of a lower rank trains from its rank's truncation, which "
          "aggregation then partly counts twice (docs/architecture.md).");
ABSL_FLAG(std::string, lora_targets,
          "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
          "Linears that get adapters (last path component; names a model "
          "lacks are skipped, e.g. the ViT has no gate_proj). Every "
          "projection by default: q and v alone learn less "
          "(docs/simulation.md).");
ABSL_FLAG(int, epochs, 1, "Local epochs per round.");
ABSL_FLAG(int64_t, max_steps, 0, "Local optimizer steps cap (0: none).");
ABSL_FLAG(double, fill_pace, 1,
          "Up to this many times --max_steps for a device predicted to "
          "submit before the round's pace (the slowest device's fastest "
          "predicted time): it trains while the round waits anyway, "
          "instead of idling. 1: every task trains --max_steps "
          "(docs/simulation.md).");
ABSL_FLAG(int, batch_size, 32, "Local batch size.");
ABSL_FLAG(double, lr, 3e-3,
          "Peak local learning rate (round 1's under --lr_rounds=cosine). "
          "On the default task 3e-3 with cosine gained more than 1e-3 in "
          "every run tried (docs/simulation.md); held constant, 3e-3 made "
          "round 1 dip.");
ABSL_FLAG(std::string, lr_rounds, "cosine",
          "The local learning rate across rounds: constant, or cosine "
          "(round t of R at lr * (1 + cos(pi (t - 1) / R)) / 2).");
ABSL_FLAG(std::string, lr_in_round, "constant",
          "The local learning rate within a device's round, after its "
          "warm-up (5% of the steps): constant (the round's rate, from "
          "--lr and --lr_rounds), or cosine (decays to 0 by the round's "
          "last step). constant gained more on the default task "
          "(docs/simulation.md).");
ABSL_FLAG(double, weight_decay, 0.0, "Local AdamW weight decay.");
ABSL_FLAG(double, fedprox_mu, 0.0, "FedProx proximal weight (0: off).");
ABSL_FLAG(bool, balanced_softmax, true,
          "Image classification: devices train on logits plus the log of "
          "their own label frequencies (balanced softmax, FedLC's logit "
          "adjustment), so label-skewed shards do not pull the shared model "
          "towards their labels (docs/simulation.md measures it). Text "
          "tasks' devices train plain.");
ABSL_FLAG(std::string, upload_codec, "int8_row",
          "Update codec: float32, float16, bfloat16, int8_row or topk.");
ABSL_FLAG(bool, zstd, true, "zstd on top of the codec.");
ABSL_FLAG(std::string, download_codec, "float32",
          "Dense mode: float32 sends each round's weights whole; float16, "
          "bfloat16 or int8_row send a device that holds last round's "
          "weights only their change, in that codec (with --zstd), rounded "
          "with error feedback on the coordinator (docs/architecture.md, "
          "large payloads). Devices that hold something else get the "
          "weights whole.");
ABSL_FLAG(double, topk_fraction, 0.01, "topk: share of entries sent.");
ABSL_FLAG(std::string, split, "auto",
          "Split fine-tuning (LoRA mode): off; auto (a device whose memory "
          "budget cannot hold training its whole sub-model trains only the "
          "first blocks that fit, the coordinator the rest; off under "
          "--local_dp_clip, which does not cover streamed activations); or a "
          "block number N (every device runs blocks [0, N)).");
ABSL_FLAG(std::string, split_codec, "float16",
          "Split activations and gradients: float32, float16, bfloat16 or "
          "int8_row.");
ABSL_FLAG(int64_t, split_local_steps, 0,
          "Split: SFPrompt local-loss steps per round before split training "
          "(no traffic).");
ABSL_FLAG(double, split_keep, 1.0,
          "Split: EL2N dataset pruning, the share of hardest samples kept "
          "(< 1 needs --split_local_steps > 0).");
ABSL_FLAG(std::string, allow_list, "",
          "Comma-separated device ids allowed to register (empty: any).");
ABSL_FLAG(int64_t, max_devices, 100000,
          "Devices the registry holds; when full, a new device is refused "
          "(RESOURCE_EXHAUSTED) unless one that never asked for work has "
          "been silent past --heartbeat_timeout_s and can be forgotten.");
ABSL_FLAG(bool, invite_only_polled, true,
          "Invite a device to a round only once it has asked for a task "
          "since registering, so registrations that never ask for work "
          "(a flood of fake devices) cannot stall rounds.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of arm choices and selection.");

namespace fedge::coordinator {
namespace {

absl::Status FlagError(const char* flag, const absl::Status& status) {
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, ": ", status.message()));
}

}  // namespace

absl::StatusOr<std::map<std::string, strategies::Arm>> ParseDeviceArms(
    absl::string_view spec) {
  std::map<std::string, strategies::Arm> arms;
  for (absl::string_view item : absl::StrSplit(spec, ',', absl::SkipEmpty())) {
    const std::vector<absl::string_view> id_arm =
        absl::StrSplit(item, absl::MaxSplits('=', 1));
    std::vector<absl::string_view> parts;
    if (id_arm.size() == 2) parts = absl::StrSplit(id_arm[1], ':');
    strategies::Arm arm;
    if (id_arm.size() != 2 || id_arm[0].empty() || parts.size() != 2 ||
        !absl::SimpleAtod(parts[0], &arm.prune_ratio) ||
        !absl::SimpleAtoi(parts[1], &arm.rank)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", item, "' is not ID=RATIO:RANK (e.g. device-0=0.4:4)"));
    }
    if (!arms.emplace(std::string(id_arm[0]), arm).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("device '", id_arm[0], "' is named twice"));
    }
  }
  return arms;
}

absl::StatusOr<EngineOptions> EngineOptionsFromFlags(
    task::Objective objective) {
  namespace fs = fedge::strategies;
  EngineOptions e;
  auto mode = ParseMode(absl::GetFlag(FLAGS_mode));
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
  e.selection.sampling_rate = absl::GetFlag(FLAGS_sampling_rate);
  std::string bandit_name = absl::GetFlag(FLAGS_bandit);
  if (bandit_name == "auto") {
    bandit_name = e.mode == Mode::kDense ? "fixed" : "fedspine";
  }
  auto bandit = fs::ParseBanditKind(bandit_name);
  if (!bandit.ok()) return FlagError("bandit", bandit.status());
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
  e.bandit.capacity_ties = absl::GetFlag(FLAGS_capacity_ties);
  e.bandit.ramp_plays = absl::GetFlag(FLAGS_ratio_ramp_plays);
  e.bandit.fixed_arm = {absl::GetFlag(FLAGS_fixed_ratio),
                        absl::GetFlag(FLAGS_fixed_rank)};
  auto device_arms = ParseDeviceArms(absl::GetFlag(FLAGS_device_arms));
  if (!device_arms.ok()) return FlagError("device_arms", device_arms.status());
  e.device_arms = *std::move(device_arms);
  e.reward = {
      absl::GetFlag(FLAGS_reward_loss), absl::GetFlag(FLAGS_reward_pruning),
      absl::GetFlag(FLAGS_reward_importance), absl::GetFlag(FLAGS_reward_time),
      absl::GetFlag(FLAGS_reward_pruning_cost)};
  e.schedule = {absl::GetFlag(FLAGS_target_sparsity),
                absl::GetFlag(FLAGS_sparsity_start_round),
                absl::GetFlag(FLAGS_sparsity_end_round)};
  auto aggregator = fs::ParseAggregatorKind(absl::GetFlag(FLAGS_aggregator));
  if (!aggregator.ok()) return FlagError("aggregator", aggregator.status());
  e.aggregator = {*aggregator, absl::GetFlag(FLAGS_trim_fraction),
                  absl::GetFlag(FLAGS_clip_norm)};
  e.privacy.noise_multiplier = absl::GetFlag(FLAGS_dp_noise_multiplier);
  e.privacy.sampling_rate = absl::GetFlag(FLAGS_sampling_rate);
  e.privacy.delta = absl::GetFlag(FLAGS_dp_delta);
  e.secure.enabled = absl::GetFlag(FLAGS_secure_aggregation);
  e.secure.clip_norm = absl::GetFlag(FLAGS_secure_clip_norm);
  e.secure.dropout = absl::GetFlag(FLAGS_secure_dropout);
  e.secure.phase_timeout =
      absl::Seconds(absl::GetFlag(FLAGS_secure_phase_timeout_s));
  e.privacy.epsilon_budget = absl::GetFlag(FLAGS_dp_epsilon_budget);
  e.privacy.target_quantile = absl::GetFlag(FLAGS_dp_target_quantile);
  e.privacy.clip_learning_rate = absl::GetFlag(FLAGS_dp_clip_learning_rate);
  e.privacy.clipped_count_stddev = absl::GetFlag(FLAGS_dp_clipped_count_stddev);
  e.privacy_seed = absl::GetFlag(FLAGS_dp_seed);
  if (const double epsilon = absl::GetFlag(FLAGS_dp_epsilon); epsilon != 0) {
    if (e.privacy.noise_multiplier > 0) {
      return absl::InvalidArgumentError(
          "--dp_epsilon calibrates the noise: give it or "
          "--dp_noise_multiplier, not both");
    }
    absl::StatusOr<double> z =
        fs::NoiseMultiplierFor(e.privacy, e.rounds, epsilon);
    if (!z.ok()) return FlagError("dp_epsilon", z.status());
    e.privacy.noise_multiplier = *z;
  }
  std::string server_name = absl::GetFlag(FLAGS_server_optimizer);
  if (server_name == "auto") {
    server_name =
        e.mode == Mode::kDense || task::IsText(objective) ? "none" : "momentum";
  }
  auto server = fs::ParseServerOptimizerKind(server_name);
  if (!server.ok()) return FlagError("server_optimizer", server.status());
  e.server_optimizer = {*server,
                        absl::GetFlag(FLAGS_server_lr),
                        absl::GetFlag(FLAGS_server_momentum),
                        absl::GetFlag(FLAGS_server_beta1),
                        absl::GetFlag(FLAGS_server_beta2),
                        absl::GetFlag(FLAGS_server_epsilon)};
  e.lora.alpha = absl::GetFlag(FLAGS_lora_alpha);
  if (const std::string rank = absl::GetFlag(FLAGS_global_rank);
      rank == "auto") {
    e.global_rank = kAutoGlobalRank;
  } else if (!absl::SimpleAtoi(rank, &e.global_rank) || e.global_rank < 0) {
    return FlagError("global_rank",
                     absl::InvalidArgumentError(absl::StrCat(
                         "'", rank, "' is not auto, 0 or a positive rank")));
  }
  e.lora.target_modules =
      absl::StrSplit(absl::GetFlag(FLAGS_lora_targets), ',');
  e.train.epochs = absl::GetFlag(FLAGS_epochs);
  e.train.max_steps = absl::GetFlag(FLAGS_max_steps);
  e.train.fill_pace = absl::GetFlag(FLAGS_fill_pace);
  e.train.batch_size = absl::GetFlag(FLAGS_batch_size);
  e.train.learning_rate = absl::GetFlag(FLAGS_lr);
  e.train.round_schedule = absl::GetFlag(FLAGS_lr_rounds);
  e.train.in_round_schedule = absl::GetFlag(FLAGS_lr_in_round);
  e.train.weight_decay = absl::GetFlag(FLAGS_weight_decay);
  e.train.fedprox_mu = absl::GetFlag(FLAGS_fedprox_mu);
  e.train.balanced_softmax = absl::GetFlag(FLAGS_balanced_softmax);
  e.train.local_dp_clip = absl::GetFlag(FLAGS_local_dp_clip);
  e.train.local_dp_noise_multiplier =
      absl::GetFlag(FLAGS_local_dp_noise_multiplier);
  if (auto codec =
          fedge::transport::ParseCodec(absl::GetFlag(FLAGS_upload_codec));
      !codec.ok()) {
    return FlagError("upload_codec", codec.status());
  }
  e.upload_codec = absl::GetFlag(FLAGS_upload_codec);
  e.upload_zstd = absl::GetFlag(FLAGS_zstd);
  e.download_codec = absl::GetFlag(FLAGS_download_codec);
  e.topk_fraction = absl::GetFlag(FLAGS_topk_fraction);
  e.max_devices = absl::GetFlag(FLAGS_max_devices);
  for (absl::string_view id : absl::StrSplit(absl::GetFlag(FLAGS_allow_list),
                                             ',', absl::SkipEmpty())) {
    e.allow_list.insert(std::string(id));
  }
  e.split.mode = absl::GetFlag(FLAGS_split);
  // Neither local DP nor secure aggregation covers split rounds: automatic
  // splitting is off under them; an explicit cut is refused by Validate.
  if ((e.train.local_dp_clip > 0 || e.secure.enabled) &&
      e.split.mode == "auto") {
    e.split.mode = "off";
  }
  e.split.activation_codec = absl::GetFlag(FLAGS_split_codec);
  e.split.local_loss_steps = absl::GetFlag(FLAGS_split_local_steps);
  e.split.keep_fraction = absl::GetFlag(FLAGS_split_keep);
  e.invite_only_polled = absl::GetFlag(FLAGS_invite_only_polled);
  e.seed = absl::GetFlag(FLAGS_seed);
  if (absl::Status s = e.Validate(); !s.ok()) return s;
  return e;
}

std::string PrivacySummary(const EngineOptions& o) {
  std::string local;
  if (o.train.local_dp_clip > 0) {
    local = absl::StrFormat(
        "local differential privacy: each device clips its change to %.4g "
        "and adds noise of %.4g clips, spending epsilon %.3g at delta %.3g "
        "each round it joins (%.3g if it joins all %d rounds)",
        o.train.local_dp_clip, o.train.local_dp_noise_multiplier,
        strategies::LocalSpent(o.train.local_dp_noise_multiplier, 1,
                               o.privacy.delta)
            .epsilon,
        o.privacy.delta,
        strategies::LocalSpent(o.train.local_dp_noise_multiplier, o.rounds,
                               o.privacy.delta)
            .epsilon,
        static_cast<int>(o.rounds));
  }
  if (!o.privacy.enabled()) return local;
  if (!local.empty()) local = "; " + local;
  return absl::StrFormat(
             "differential privacy: noise multiplier %.4g, clip %.4g (%s), "
             "devices sampled at %.4g a round; epsilon %.3g at delta %.3g "
             "after all %d rounds%s",
             o.privacy.noise_multiplier,
             o.secure.enabled ? o.secure.clip_norm : o.aggregator.clip_norm,
             o.secure.enabled ? "fixed; the devices clip and add the noise "
                                "under secure aggregation"
             : o.privacy.target_quantile > 0
                 ? absl::StrCat("adaptive, towards quantile ",
                                o.privacy.target_quantile)
                 : "fixed",
             o.privacy.sampling_rate,
             strategies::SpentAfter(o.privacy, o.rounds).epsilon,
             o.privacy.delta, static_cast<int>(o.rounds),
             o.privacy_seed != 0
                 ? " (repeatable noise: --dp_seed is set, so it is "
                   "no secret)"
                 : "") +
         local;
}

}  // namespace fedge::coordinator
