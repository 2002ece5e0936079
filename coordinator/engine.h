// The round engine: the coordinator's logic with no gRPC and no clock of its
// own (every call takes `now`), so tests drive deadlines, dropouts and
// over-commit deterministically.
//
// A round: when enough devices are registered, the engine selects devices
// (strategies/selection), and each invited device's first GetTask picks its
// arm (pruning ratio, LoRA rank) with its own bandit, cuts its plan from the
// global importance scores at the combined ratio (global schedule x arm) and
// publishes its payload. Updates are validated and folded into the round's
// streamed aggregate as they arrive. The round closes, at the next Tick,
// once the target count of updates arrived, every invited device has
// submitted or dropped, or the deadline passed (closing is never done
// inside the Submit that completed the round, so that device's upload is
// answered without waiting for aggregation, commit and checkpoint).
// Stragglers are dropped from the round but still feed their bandit a
// penalty. A round with fewer than min_updates updates is
// retried (same round number, new selection), never silently accepted.
// A closed round updates the global model, the bandits and the records,
// and is checkpointed before the next one opens.
//
// Thread-safe: every public method takes the engine's lock; none blocks on
// I/O except the checkpoint write at round close.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

#include "coordinator/global_model.h"
#include "coordinator/timed_lock.h"
#include "split/protocol.h"
#include "split/server.h"
#include "strategies/aggregator.h"
#include "strategies/bandit.h"
#include "strategies/reward.h"
#include "strategies/schedule.h"
#include "strategies/selection.h"
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
  int32_t epochs = 1;
  int64_t max_steps = 0;
  int32_t batch_size = 32;
  double learning_rate = 1e-3;  // docs/simulation.md: 3e-3 dipped.
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;
  double fedprox_mu = 0.0;
  // model::TrainOptions::balanced_softmax, on classifiers' devices.
  bool balanced_softmax = true;
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

// The cut `policy` gives a device with `budget_bytes` (0: none) for the
// sub-model of `base` that `plan` leaves, training batches of `batch_size`:
// 0 (no split) or 1..blocks. InvalidArgument for a bad mode.
absl::StatusOr<int64_t> ChooseCut(const SplitPolicy& policy,
                                  const model::ModelImpl& base,
                                  const pruning::PruningPlan& plan,
                                  int64_t budget_bytes, int64_t batch_size);

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
  strategies::RewardWeights reward;
  strategies::SparsitySchedule schedule;
  strategies::AggregatorOptions aggregator;
  lora::LoraOptions lora;  // alpha, dropout, targets; the rank is the arm's.
  TrainSpec train;
  SplitPolicy split;
  std::string upload_codec = "int8_row";
  bool upload_zstd = true;
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

struct Task {
  int64_t round = 0;
  std::string nonce;  // 16 random bytes, hex.
  // The device's local-training seed (shuffling, dropout): from
  // EngineOptions::seed, the device and the round, so a rerun with the same
  // seed trains the same way. Not the nonce, which is unpredictable.
  uint64_t train_seed = 0;
  strategies::Arm arm;
  // The reward's pruning cost of this task's plan (RewardTerms: the
  // measured one-shot cost times the device's share of the round), as the
  // task was made; 0 without EngineHooks::validation_loss.
  double pruning_cost = 0;
  // What the bandit was told of this arm's reward before it chose
  // (strategies::KnownReward): minus the weighted pruning cost and the
  // weighted time term its device's time model predicted. The bandit
  // learns the reward less this.
  double known_reward = 0;
  double global_ratio = 0;    // The schedule's ratio this round.
  double combined_ratio = 0;  // What the device's plan removes in all.
  pruning::PruningPlan plan;
  int64_t rank = 0;        // LoRA mode.
  int64_t cut = 0;         // Split before this block; 0: train locally.
  std::string payload_id;  // Transfer id of the payload.
  absl::Time issued;
  absl::Time deadline;
};

struct Timings {
  double download_s = 0, train_s = 0, upload_s = 0, eval_s = 0;
  int64_t bytes_down = 0, bytes_up = 0, raw_bytes_down = 0, raw_bytes_up = 0;
  int64_t peak_rss_bytes = 0;
  // Split rounds: the step messages both ways (part of train_s).
  int64_t split_bytes_up = 0, split_bytes_down = 0;
  double split_s = 0;  // Of train_s: waiting on the step exchanges.
};

struct Submission {
  std::string device_id;
  int64_t round = 0;
  std::string nonce;
  NamedTensors update;      // Decoded, in the sub-model's names.
  NamedTensors importance;  // Optional: "heads.N", "channels.N".
  int64_t num_examples = 0;
  double loss_before = 0, loss_after = 0;
  int64_t split_steps = 0;  // Split rounds: the steps the device applied.
  Timings timings;          // As the device measured them.
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
  double combined_ratio = 0;
  int64_t cut = 0;  // Split before this block; 0: trained locally.
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
  NamedTensors global;
};

// What the engine needs from its surroundings. All optional.
struct EngineHooks {
  // Makes `tensors` downloadable as `transfer_id`.
  std::function<void(const std::string& transfer_id,
                     const NamedTensors& tensors)>
      publish;
  // Called under the engine's lock after each closed round (committed or
  // retried) with the round's record and the engine's state right after it
  // (what to checkpoint); the place to write the checkpoint and queue an
  // evaluation. Must not call back into the engine. Its error is returned
  // by the call that closed the round; the round stays closed in memory,
  // and a restart resumes from the last checkpoint written, so nothing is
  // counted twice.
  std::function<absl::Status(const RoundRecord&, const EngineState&)>
      on_round_closed;
  // Monotonic seconds for measuring aggregation; default absl::Now().
  std::function<absl::Time()> clock;
  // The mean loss of `model` on held-out server data (e.g. the public
  // split). When set, and RewardWeights::pruning_cost > 0, the pruning
  // costs of the ratios the bandits may play are measured once per plan (a
  // failure is logged and costs 0), and the bandits are told each arm's
  // cost before they choose (strategies::KnownReward): it is the same for
  // every device and measured, so they need not learn it by playing it.
  // The costs for a round are measured during the round before, on its
  // model, once its tasks are out (Tick), so no round waits for them; only
  // the first round, or one after a restore, measures when it opens.
  // Called under the engine's lock.
  std::function<absl::StatusOr<double>(model::ModelImpl& model)>
      validation_loss;
  // Told how long each operation held the engine's lock ("register",
  // "get_task", "submit", "tick", "split_step", ...; coordinator/
  // timed_lock.h): for the metrics and bench/coordinator. Thread-safe.
  LockObserver lock_held;
};

class Engine {
 public:
  // `global` is owned. InvalidArgument for bad options.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(
      std::unique_ptr<GlobalModel> global, EngineOptions options,
      EngineHooks hooks);

  // Registers or re-registers a device (re-registration keeps its bandit
  // and history). InvalidArgument for bad facts; PermissionDenied if not
  // on the allow-list; ResourceExhausted if the registry is full.
  absl::StatusOr<std::string> Register(const DeviceFacts& facts,
                                       absl::Time now);

  // The device's task for the current round. NotFound: not registered.
  // Unavailable: not invited (yet), retry later. OutOfRange: the
  // federation finished.
  absl::StatusOr<Task> GetTask(const std::string& device_id, absl::Time now);

  // Folds the update into the round's aggregate. A round this completes
  // is closed by the next Tick, not here: call Tick after an accepted
  // update.
  // NotFound: unknown device. FailedPrecondition: no open round, wrong
  // round or nonce, device not invited or already dropped, or the round
  // already has its target count and is closing. AlreadyExists: second
  // update this round. InvalidArgument: names, shapes or values that do
  // not match the task, or non-finite losses.
  absl::Status Submit(const Submission& submission, absl::Time now);

  // Split rounds: one step of the coordinator's half of the device's
  // sub-model (split::SplitServer, built at the first step). Runs outside
  // the engine's lock, serialised per device. A first step (step 1, none
  // applied) starts the half afresh: the device restarted its round.
  // NotFound: unknown device.
  // FailedPrecondition: no open round, wrong round or nonce, no split in
  // the task, or the update was already accepted. The server's errors for
  // bad steps (InvalidArgument).
  absl::StatusOr<split::StepReply> SplitStep(const std::string& device_id,
                                             int64_t round,
                                             const std::string& nonce,
                                             const split::StepRequest& request,
                                             absl::Time now);
  // The device finished its split steps: settles the pending one.
  absl::Status SplitFinish(const std::string& device_id, int64_t round,
                           const std::string& nonce, int64_t applied_steps,
                           absl::Time now);

  // Liveness; true while the device's round is open for it.
  absl::StatusOr<bool> Heartbeat(const std::string& device_id, absl::Time now);

  // The device's connection broke: it is not waited for this round.
  void Disconnect(const std::string& device_id, absl::Time now);

  // The device refused its task this round (`reason`, e.g. its estimated
  // peak memory exceeds its budget): it is not waited for, and its bandit
  // gets the minimum reward for the arm, so it learns to avoid arms it
  // cannot run. NotFound: unknown device. FailedPrecondition: no open
  // round, wrong round or nonce, or the update was already accepted.
  absl::Status Decline(const std::string& device_id, int64_t round,
                       const std::string& nonce, const std::string& reason,
                       absl::Time now);

  // Opens, times out and closes rounds, and once every participant of the
  // open round has its task, measures the next round's pruning costs
  // (EngineHooks::validation_loss). Call periodically (the server does,
  // every 100 ms, and at once after an accepted update) and after each
  // event in tests.
  absl::Status Tick(absl::Time now);

  int64_t round() const;  // The current (or next) round number.
  bool finished() const;
  // Why the federation stopped early (a round failed max_attempts times);
  // OK while running or after all rounds.
  absl::Status failure() const;
  int64_t registered() const;
  std::vector<RoundRecord> history() const;  // Closed rounds, in order.
  int64_t rounds_closed() const;  // Attempts closed: history().size().

  using BanditPlay = coordinator::BanditPlay;
  using State = EngineState;
  State Snapshot() const;
  // Replays `state` into a fresh engine (before any Tick).
  absl::Status Restore(const State& state);

 private:
  struct Device {
    DeviceFacts facts;
    std::unique_ptr<strategies::Bandit> bandit;
    absl::Time last_seen;
    bool polled = false;           // GetTask called since registering.
    double expected_seconds = -1;  // EMA of task-to-submission seconds.
    // How long its tasks take under each arm.
    strategies::DeviceTimeModel times{1.0};
    int64_t plays = 0;  // Rewards fed to its bandit: its ramp's progress.
  };
  enum class Stage { kInvited, kAccepted, kDeclined, kDropped };
  struct SplitSession {
    absl::Mutex mu;
    std::unique_ptr<split::SplitServer> server ABSL_GUARDED_BY(mu);
  };
  struct Participant {
    std::optional<Task> task;
    // Names and shapes the update must have.
    std::map<std::string, std::vector<int64_t>> expected;
    // LoRA mode: the adapter it was sent (small), which its update is
    // measured against (GlobalModel::AddUpdate). Empty in dense mode.
    NamedTensors sent;
    // Split rounds: the coordinator's half, shared with steps in flight.
    std::shared_ptr<SplitSession> split;
    Stage stage = Stage::kInvited;
    absl::Time submitted;
    Submission report;  // Without tensors.
    double update_norm = 0;
  };
  struct Round {
    int64_t number = 0;
    int64_t attempt = 0;
    absl::Time opened;
    absl::Time deadline;
    double global_ratio = 0;
    int64_t target = 0;
    std::map<std::string, Participant> participants;
    RoundAggregate aggregate;
    int64_t accepted = 0;
    // Whether MeasureAhead ran for this round.
    bool measured_ahead = false;
    // The round's pace (strategies::RoundPace) over its participants'
    // predicted times, as the round opened; 0 before any prediction.
    double pace_s = 0;
    // BanditKind::kStatic: the capability rule's budget, the 75th
    // percentile of the participants' predicted times for the least
    // pruned arm at the highest rank; 0 before any prediction.
    double capability_budget_s = 0;
  };

  Engine(std::unique_ptr<GlobalModel> global, EngineOptions options,
         EngineHooks hooks);

  absl::Status OpenRound(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes room in a full registry: forgets the longest-silent device that
  // has not asked for work since registering, has been silent past the
  // heartbeat timeout and is not in the open round. False if none is.
  bool EvictOneSilent(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CloseRound(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Task> MakeTask(const std::string& device_id, Device& device,
                                Participant& participant, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ValidateUpdate(const Participant& participant,
                              const Submission& submission) const;
  std::mt19937_64 Rng(const std::string& device_id, int64_t salt) const;
  void Play(const std::string& device_id, const strategies::Arm& arm,
            double reward) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether no participant of the open round is still waited for.
  bool AllDone() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether every participant still waited for has its task.
  bool AllTasksOut() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether pruning costs are measured (EngineHooks::validation_loss).
  bool MeasuresPruningCost() const;
  // The one-shot cost of the global model pruned by Plan(ratio) (the loss
  // over the unpruned one's, minus 1, clipped to [0, 1]); 0 for ratio 0,
  // when not measured, or when the measurement fails.
  // Normally measured ahead, during the round before, on that round's
  // model (MeasureAhead); otherwise measured now on the current model.
  double PruningCost(double ratio) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The same, always measured on the current global model, once per plan
  // until the next commit (a failure is logged once and costs 0).
  double MeasurePruningCost(double ratio) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The combined ratios the bandits may ask about in a round at
  // `global_ratio` when the most-played device has played `plays` times.
  std::vector<double> CandidateCombinedRatios(double global_ratio,
                                              int64_t plays) const;
  // Measures, on the open round's model, the pruning costs the next
  // round's bandits may ask about, so that round opens without measuring.
  // Runs once the open round's tasks are out (Tick), while the devices
  // train; the costs a round's bandits are told are thus one round old.
  void MeasureAhead() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What is known of each arm's reward for `device` in the open round, for
  // the bandit's Choose(), which must run under mu_: the pruning cost at
  // the round's global ratio (when measured) and the time term at its pace
  // (once the device has a time model); empty when neither is known.
  strategies::KnownReward KnownReward(const Device& device)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // RewardTerms::pruning_cost of a task at `ratio` in the open round:
  // PruningCost(ratio) times a device's share of the round's aggregate,
  // 1 / the updates the round waits for.
  double ChargedPruningCost(double ratio) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The open round's pace from its participants' time models, each over
  // the arms it may play now.
  double Pace() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // BanditKind::kStatic: the open round's capability budget
  // (Round::capability_budget_s).
  double CapabilityBudget() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // BanditKind::kStatic: the arm the capability rule gives `device` in the
  // open round, or nullopt while it has no time model.
  std::optional<strategies::Arm> CapabilityArm(const Device& device) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The participant of the open round holding the task with `nonce`, not
  // yet accepted, marking the device seen. NotFound: unknown device;
  // FailedPrecondition otherwise.
  absl::StatusOr<Participant*> OpenTask(const std::string& device_id,
                                        int64_t round, const std::string& nonce,
                                        absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // OpenTask's participant if its task is split; the errors of SplitStep.
  absl::StatusOr<Participant*> SplitParticipant(const std::string& device_id,
                                                int64_t round,
                                                const std::string& nonce,
                                                absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The registered device, marked seen at `now`; NotFound if unknown.
  absl::StatusOr<Device*> Touch(const std::string& device_id, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  State SnapshotLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::unique_ptr<GlobalModel> global_ ABSL_PT_GUARDED_BY(mu_);
  const EngineOptions options_;
  const EngineHooks hooks_;
  // pruning::PrunableShare of the base, for the devices' time models.
  const double prunable_share_;

  mutable absl::Mutex mu_;
  std::map<std::string, Device> devices_ ABSL_GUARDED_BY(mu_);
  std::optional<Round> round_ ABSL_GUARDED_BY(mu_);
  int64_t next_round_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t attempt_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  std::vector<BanditPlay> plays_ ABSL_GUARDED_BY(mu_);
  std::vector<RoundRecord> history_ ABSL_GUARDED_BY(mu_);
  // Validation losses of the global model pruned by Plan(ratio), by the
  // plan's kept units, until the next commit; NaN where the measurement
  // failed.
  std::map<std::string, double> validation_losses_ ABSL_GUARDED_BY(mu_);
  // PruningCost by combined ratio, for the open round's tasks.
  std::map<double, double> pruning_costs_ ABSL_GUARDED_BY(mu_);
  // MeasureAhead's costs, for the round after the open one.
  std::map<double, double> next_pruning_costs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedge::coordinator
