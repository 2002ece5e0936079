// The round engine's vocabulary: its options, the facts a device reports,
// the task it gets, the update it submits, the records of a closed round
// and the state a checkpoint keeps. Plain structs; the engine
// (coordinator/engine.h) and its parts use them.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

#include "coordinator/global_model.h"
#include "coordinator/private_rounds.h"
#include "coordinator/secure_round.h"
#include "lora/lora.h"
#include "pruning/plan.h"
#include "secagg/protocol.h"
#include "strategies/aggregator.h"
#include "strategies/bandit.h"
#include "strategies/flat_layout.h"
#include "strategies/privacy.h"
#include "strategies/reward.h"
#include "strategies/schedule.h"
#include "strategies/selection.h"
#include "strategies/server_optimizer.h"
#include "strategies/time_model.h"

namespace fedge::coordinator {

struct DeviceFacts {
  std::string device_id;
  int32_t cores = 0;
  int64_t memory_total_bytes = 0;
  int64_t memory_available_bytes = 0;
  int64_t memory_budget_bytes = 0;
  std::string arch;
  std::string cpu_model;
  double benchmark_gflops = 0;
  std::string link;  // "ethernet", "wifi", "lte", "5g-sa" or "".
  std::string software_version;
};

// InvalidArgument unless the id is 1-128 characters of [A-Za-z0-9._-] and
// the facts are possible (non-negative, budget <= total when both given).
absl::Status ValidateDeviceFacts(const DeviceFacts& facts);

struct TrainSpec {
  // The peak local learning rate of round `round` of `rounds`.
  double RoundLearningRate(int64_t round, int64_t rounds) const;

  int32_t epochs = 1;
  int64_t max_steps = 0;
  // > 1 (with max_steps > 0): a device predicted to submit before the
  // round's pace trains up to this many times max_steps to fill the time
  // the round waits for its slowest device (strategies::FillPace); its
  // update still weighs its examples. 1: every task trains max_steps.
  double fill_pace = 1;
  int32_t batch_size = 32;
  // The flags' defaults are 3e-3 and "cosine" (docs/simulation.md).
  double learning_rate = 1e-3;
  // Across rounds: "constant", or "cosine" (round t of R trains at
  // learning_rate * (1 + cos(pi (t - 1) / R)) / 2).
  std::string round_schedule = "constant";
  // Within a device's round, after its warm-up: "cosine" (decays to 0 by
  // the round's last step) or "constant" (holds the round's rate; the
  // flag's default, docs/simulation.md).
  std::string in_round_schedule = "cosine";
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;
  double fedprox_mu = 0.0;
  // model::TrainOptions::balanced_softmax, on classifiers' devices.
  bool balanced_softmax = true;
  // Local differential privacy on the devices (strategies::
  // ApplyLocalPrivacy): the clip (> 0: on) and the noise multiplier.
  double local_dp_clip = 0;
  double local_dp_noise_multiplier = 0;
};

// Split fine-tuning (docs/split.md): which devices train only the first
// blocks of their sub-model while the coordinator trains the rest.
struct SplitPolicy {
  // "off": every device trains its whole sub-model. "auto": a device whose
  // memory budget is below the estimated peak of training its whole
  // sub-model is split at the largest cut whose head fits the budget (at
  // least 1). "1".."n": every device is split before that block.
  std::string mode = "auto";
  std::string activation_codec =
      "float16";                 // float32/float16/bfloat16/int8_row.
  int64_t local_loss_steps = 0;  // SFPrompt's local-loss updates per round.
  double keep_fraction = 1.0;    // EL2N data pruning; < 1 needs local steps.
};

// SplitPolicy::mode as a number: -1 for "auto", 0 for "off", k for a fixed
// cut before block k >= 1. InvalidArgument otherwise.
absl::StatusOr<int64_t> ParseSplitMode(absl::string_view mode);

// EngineOptions::global_rank: hold the global change at the largest rank a
// device may play.
inline constexpr int64_t kAutoGlobalRank = -1;

struct EngineOptions {
  Mode mode = Mode::kLora;
  int64_t rounds = 20;       // The federation stops after this many.
  int64_t min_devices = 1;   // Registered devices before round 1 opens.
  int64_t min_updates = 1;   // Fewer at close: the round is retried.
  int64_t max_attempts = 5;  // Tries per round before giving up.
  absl::Duration round_deadline = absl::Minutes(10);
  // A device silent (no RPC) for this long is dropped from its round.
  absl::Duration heartbeat_timeout = absl::Minutes(2);
  strategies::SelectionOptions selection;
  strategies::BanditOptions bandit;
  // --bandit=fixed only: arms by device id that replace bandit.fixed_arm
  // for those devices (an assignment by tier, a heuristic's, or one found
  // in hindsight as issue 22's oracle is); each is checked as a fixed arm
  // is, and the prune-and-tune pace caps its ratio as it caps the fixed
  // arm's. Devices not named play bandit.fixed_arm.
  std::map<std::string, strategies::Arm> device_arms;
  strategies::RewardWeights reward;
  strategies::SparsitySchedule schedule;
  strategies::AggregatorOptions aggregator;
  // User-level differential privacy (docs/privacy.md): with a noise
  // multiplier > 0, aggregator.clip_norm is the (initial) clip, devices
  // join by Poisson sampling at privacy.sampling_rate (selection kPoisson,
  // or kAll at rate 1), every update weighs the same, the mean is noised
  // over the expected count, and devices' importance reports are not used.
  strategies::PrivacyOptions privacy;
  // Secure aggregation (docs/privacy.md): the coordinator learns only the
  // sum of each round's changes (SecureRound). LoRA mode, the mean, no
  // split rounds, no central differential privacy; devices clip their
  // change to secure.clip_norm themselves, every update weighs the same,
  // and devices' importance reports are not used (prune-and-tune keeps the
  // scores it has).
  SecureOptions secure;
  // 0: every round's secret seeds (noise, sampling) come from the
  // operating system. Otherwise they derive from this, for repeatable
  // tests and benchmarks, and the noise is no secret.
  uint64_t privacy_seed = 0;
  // The step taken on each round's mean (FedAvg, FedAvgM or FedAdam).
  strategies::ServerOptimizerOptions server_optimizer;
  lora::LoraOptions lora;  // alpha, dropout, targets; the rank is the arm's.
  // LoRA mode, > 0: the global change is held at this rank
  // (GlobalModel::SetGlobalRank). 0: unbounded. kAutoGlobalRank: the
  // largest rank a device may play (EffectiveGlobalRank).
  int64_t global_rank = kAutoGlobalRank;
  TrainSpec train;
  SplitPolicy split;
  std::string upload_codec = "int8_row";
  bool upload_zstd = true;
  // Dense mode: how a device that holds last round's weights gets this
  // round's (GlobalModel::SetDenseRounding): float32 sends them whole;
  // float16, bfloat16 or int8_row send the change, through that codec (and
  // zstd with upload_zstd), rounded with error feedback on the server.
  std::string download_codec = "float32";
  double topk_fraction = 0.01;
  double importance_ema = 0.5;
  int64_t max_examples = 1000000;  // Cap on a device's claimed weight.
  // Registry size. When full, a device that never asked for work and has
  // been silent past heartbeat_timeout is forgotten to make room (so a
  // flood of fake registrations cannot lock out new honest devices);
  // with none such, Register is RESOURCE_EXHAUSTED.
  int64_t max_devices = 100000;
  // Invite (and count toward min_devices) only devices that have asked for
  // a task since they last registered: registrations that never ask for
  // work (a flood of fake devices) cannot be invited and stall a round.
  bool invite_only_polled = false;
  std::set<std::string> allow_list;  // Empty: any valid device id.
  uint64_t seed = 1;

  absl::Status Validate() const;
};

// The global rank `options` ask for, resolved: in LoRA mode with
// global_rank == kAutoGlobalRank, the largest rank any device may play
// (the bandit's ranks, or the fixed arms' for the fixed kind, and every
// --device_arms rank); 0 in dense mode; otherwise global_rank.
int64_t EffectiveGlobalRank(const EngineOptions& options);

// The parts of a task's training work on `base` (strategies::WorkShares):
// its prunable share, and in LoRA mode a rank-1 adapter on each of
// options.lora's targets.
strategies::WorkShares TrainingWork(const model::ModelImpl& base,
                                    const EngineOptions& options);

// The global model the options describe: their mode, LoRA options, server
// optimizer and effective global rank. Errors as GlobalModel::Create's.
absl::StatusOr<std::unique_ptr<GlobalModel>> CreateGlobalModel(
    model::Model base, const EngineOptions& options);

// The bandit options of the device `device_id`: options.bandit, with its
// fixed arm from device_arms where that names the device.
strategies::BanditOptions BanditFor(const EngineOptions& options,
                                    const std::string& device_id);

// What a device needs for its round's secure aggregation.
struct SecureTask {
  secagg::Parameters parameters;  // The round's, the same for every device.
  int64_t index = 0;              // The device's number in it.
  double clip_norm = 0;           // Of its change, before encoding.
  // Distributed DP (SecureRound::noise_stddev, min_survivors): the noise
  // it adds on the ring, and the fewest survivors it unmasks for.
  double noise_stddev = 0;
  int64_t min_survivors = 0;
  // The names and full shapes it flattens its change in
  // (GlobalModel::UpdateLayout); the same for every round.
  std::shared_ptr<const strategies::FlatLayout> layout;
};

// One step of a device's part in its round's secure aggregation
// (Engine::Secure): any message it posts, at most one of them.
struct SecureRequest {
  std::string device_id;
  int64_t round = 0;
  std::string nonce;
  std::optional<secagg::Advertisement> advertise;
  std::optional<std::vector<secagg::SealedShares>> shares;
  std::optional<secagg::UnmaskShares> unmask;
};

// The exchange's phase, and what the device needs to act in it, once the
// phase before it has closed (empty before): its neighbours' keys in
// kShareKeys, the sealed shares addressed to it in kMaskedInput, the
// survivors in kUnmask.
struct SecureReply {
  SecurePhase phase = SecurePhase::kAdvertise;
  std::vector<secagg::Advertisement> advertisements;
  std::vector<secagg::SealedShares> shares;
  std::set<int64_t> survivors;
};

struct Task {
  int64_t round = 0;
  std::string nonce;  // 16 random bytes, hex.
  // The device's local-training seed (shuffling, dropout): from
  // EngineOptions::seed, the device and the round, so a rerun with the same
  // seed trains the same way. Not the nonce, which is unpredictable.
  uint64_t train_seed = 0;
  // The round's peak local learning rate (TrainSpec::round_schedule).
  double learning_rate = 0;
  strategies::Arm arm;
  // The reward's pruning cost of this task's plan (RewardTerms: the
  // measured one-shot cost times the device's share of the round), as the
  // task was made; 0 without EngineHooks::validation_loss.
  double pruning_cost = 0;
  // What the bandit was told of this arm's reward before it chose
  // (strategies::KnownReward): minus the weighted pruning cost and the
  // weighted time term its device's time model predicted. The bandit
  // learns the reward less this (LearnedReward).
  double known_reward = 0;
  // Whether known_reward holds the time term: the device had a time model
  // and the round a pace when the task was made (TimeKnown).
  bool time_known = false;
  double global_ratio = 0;    // The schedule's ratio this round.
  double combined_ratio = 0;  // What the device's plan removes in all.
  pruning::PruningPlan plan;
  int64_t rank = 0;  // LoRA mode.
  int64_t cut = 0;   // Split before this block; 0: train locally.
  // The task's optimizer step cap: TrainSpec::max_steps, times what
  // TrainSpec::fill_pace grants a local task.
  int64_t max_steps = 0;
  std::string payload_id;  // Transfer id of the payload.
  // The global model's version the payload was cut from
  // (GlobalModel::version()).
  int64_t model_version = 0;
  // Dense mode with compressed downloads, an unpruned plan, and a model
  // that changed by one Commit since the last version: that change,
  // compressed (GlobalModel::LastDelta); null otherwise.
  std::shared_ptr<const std::string> delta;
  absl::Time issued;
  absl::Time deadline;
  // Secure aggregation: the device's part in its round's exchange.
  std::optional<SecureTask> secure;
};

struct Timings {
  double download_s = 0, train_s = 0, upload_s = 0, eval_s = 0;
  int64_t bytes_down = 0, bytes_up = 0, raw_bytes_down = 0, raw_bytes_up = 0;
  int64_t peak_rss_bytes = 0;
  // Split rounds: the step messages both ways (part of train_s).
  int64_t split_bytes_up = 0, split_bytes_down = 0;
  double split_s = 0;  // Of train_s: waiting on the step exchanges.
  // Secure rounds, of train_s: computing, clipping, encoding, noising and
  // masking the change.
  double secagg_mask_s = 0;
};

// InvalidArgument naming the first field that is negative or, for the
// seconds, not finite: a device's report feeds the bandits' time models
// and the records, so a NaN or negative value is refused, not stored.
absl::Status ValidateTimings(const Timings& timings);

struct Submission {
  std::string device_id;
  int64_t round = 0;
  std::string nonce;
  NamedTensors update;  // Decoded, in the sub-model's names.
  // `update` is the change from the payload sent (the top-k codec), not
  // the trained values (transport::CarriesChange).
  bool carries_change = false;
  NamedTensors importance;  // Optional: "heads.N", "channels.N".
  int64_t num_examples = 0;
  double loss_before = 0, loss_after = 0;
  int64_t split_steps = 0;  // Split rounds: the steps the device applied.
  Timings timings;          // As the device measured them.
  // Secure aggregation: the masked vector replaces `update` and
  // `importance`, and the device reports its change's norm before
  // clipping (the bandits' update importance; the one number of its own
  // the coordinator learns beyond its timings).
  std::vector<uint32_t> masked;
  double change_norm = 0;
};

// A SubmitUpdate the coordinator refused: who, for which round, and the
// status it answered (code and message).
struct Refusal {
  absl::Time time;
  std::string device_id;
  int64_t round = 0;  // The round the report named.
  absl::Status status;
};

// One device's row of a closed round.
struct ClientRecord {
  int64_t round = 0;
  std::string device_id;
  std::string link;
  // "accepted", "straggler", "declined" (the device refused the task:
  // over its memory budget) or "dropped".
  std::string status;
  strategies::Arm arm;
  int64_t rank = 0;  // The rank the device trained (0: dense mode).
  double combined_ratio = 0;
  int64_t cut = 0;        // Split before this block; 0: trained locally.
  int64_t max_steps = 0;  // The task's step cap (Task::max_steps).
  Timings timings;
  double wait_s = 0;     // From its submission to the round's close.
  double elapsed_s = 0;  // From its task to its submission (server clock).
  double loss_before = 0, loss_after = 0;
  double update_norm = 0;
  strategies::RewardTerms terms;
  double reward = 0;
};

struct RoundRecord {
  int64_t round = 0;
  int64_t attempt = 0;
  bool committed = false;  // False: too few updates, the round is retried.
  double global_ratio = 0;
  int64_t invited = 0, accepted = 0, stragglers = 0, declined = 0, dropped = 0;
  double round_s = 0;      // Open to close.
  double aggregate_s = 0;  // Finish + commit (measured by the caller's clock).
  double mean_loss_after = 0;
  // Differential privacy, committed rounds: epsilon spent so far (at
  // EngineOptions::privacy.delta) and the clip this round used; 0 without.
  double dp_epsilon = 0;
  double dp_clip_norm = 0;
  // Secure aggregation's phases and bytes; empty without.
  std::optional<SecureRecord> secure;
  std::vector<ClientRecord> clients;
};

struct BanditPlay {
  std::string device_id;
  strategies::Arm arm;
  double reward = 0;  // As fed to Bandit::Update(), less any known part.
};

// The engine's checkpointable state (see coordinator/state_checkpoint.h).
struct EngineState {
  int64_t next_round = 1;
  std::vector<DeviceFacts> devices;
  std::vector<BanditPlay> plays;  // Every bandit update, in order.
  std::map<std::string, double> expected_seconds;
  // Each device's time model (strategies/time_model.h).
  std::map<std::string, strategies::TimeModelState> time_models;
  // Differential privacy's accountant and clip; empty without.
  PrivacyState privacy;
  NamedTensors global;
};

}  // namespace fedge::coordinator
