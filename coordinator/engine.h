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
// Under secure aggregation (EngineOptions::secure) the round also runs its
// devices' SecAgg+ exchange (SecureRound, advanced by Tick): devices that
// miss the key exchange are dropped, an update is a masked vector, and once
// collecting stops the round waits for the survivors' unmasking shares
// before it closes; a sum that cannot be unmasked retries the round.
//
// The engine composes its parts, each in its own file:
// - DeviceRegistry (device_registry.h): devices, bandits, time models;
// - task_builder.h: the plan, cut and payload of a task;
// - update_intake.h: the checks on an update;
// - SplitSession (split_session.h): the coordinator's half of a split round;
// - PruningCostMeter and PruningCostTable (pruning_costs.h);
// - rewards.h: what the bandits are told and paid, the capability rule;
// - SecureRound (secure_round.h): a round's secure aggregation.
// What stays here is the round's lifecycle and who may do what when.
//
// Thread-safe. The engine's lock (mu_) is held only to read and change the
// round's bookkeeping: building a payload (SVDs) and publishing it,
// checking and folding an update, split steps, measuring pruning costs,
// committing the aggregate and the on_round_closed hook (the checkpoint)
// all run outside it. Ticks are serialised by their own lock (tick_mu_),
// which nothing else takes, so a long close never holds up GetTask or
// Submit. docs/architecture.md ("The engine and its lock") says why.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

#include "coordinator/device_registry.h"
#include "coordinator/engine_types.h"
#include "coordinator/global_model.h"
#include "coordinator/pruning_costs.h"
#include "coordinator/secure_round.h"
#include "coordinator/split_session.h"
#include "coordinator/timed_lock.h"
#include "split/protocol.h"
#include "strategies/bandit.h"

namespace fedge::coordinator {

// What the engine needs from its surroundings. All optional.
struct EngineHooks {
  // Makes `tensors` downloadable as `transfer_id`. Called outside the
  // engine's lock, concurrently for different devices.
  std::function<void(const std::string& transfer_id,
                     const NamedTensors& tensors)>
      publish;
  // Takes back what publish offered for a task that was never handed out
  // (its round closed while it was built). Outside the engine's lock.
  std::function<void(const std::string& transfer_id)> withdraw;
  // Called after each closed round (committed or retried) and the opening
  // of the next, outside the engine's lock but before the next Tick (so
  // no later round has closed), with the round's record and
  // the engine's state right after it (what to checkpoint); the place to
  // write the checkpoint and queue an evaluation. Calls come one at a
  // time, in the order of the rounds. Its error is returned by the Tick
  // that closed the round; the round stays closed in memory, and a
  // restart resumes from the last checkpoint written, so nothing is
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
  // the first round, or one after a restore, measures before it opens.
  // Called outside the engine's lock, one call at a time (from Tick). A
  // measurement ahead is told to stop (ValidationLossFn) as soon as its
  // round can close, so a close waits for at most one batch of it.
  ValidationLossFn validation_loss;
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
  // and history) and returns its new session id, which replaces any
  // earlier one. InvalidArgument for bad facts; PermissionDenied if not
  // on the allow-list; ResourceExhausted if the registry is full.
  absl::StatusOr<std::string> Register(const DeviceFacts& facts,
                                       absl::Time now);

  // OK if `session` is the device's latest registration's. NotFound (the
  // device must register again) if the device is unknown, was restored
  // from a checkpoint, or registered again since (another process with
  // its id, or its own restart).
  absl::Status CheckSession(const std::string& device_id,
                            const std::string& session) const;

  // What Submit would refuse before looking at the update: its errors
  // other than InvalidArgument, so a refused report never touches the
  // upload it names.
  absl::Status CheckSubmission(const std::string& device_id, int64_t round,
                               const std::string& nonce) const;

  // The device's task for the current round, built (payload and publish)
  // outside the engine's lock at the device's first call. NotFound: not
  // registered. Unavailable: not invited (yet), its task is being built by
  // another call, or the round closed meanwhile; retry later. OutOfRange:
  // the federation finished. FailedPrecondition: it failed (failure()).
  // Anything else: building the task failed.
  absl::StatusOr<Task> GetTask(const std::string& device_id, absl::Time now);

  // Checks the update and folds it into the round's aggregate, both
  // outside the engine's lock (a round does not close while an update is
  // being folded). A round this completes is closed by the next Tick, not
  // here: call Tick after an accepted update.
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

  // Secure aggregation (EngineOptions::secure): one step of the device's
  // part in its round's exchange (SecureRound, whose phases Tick
  // advances). Posts the request's message, if any, and replies with the
  // phase and what the device needs to act in it. The masked vector goes
  // up through Submit. Outside the engine's lock. FailedPrecondition: no
  // secure round open, wrong round or nonce, or the message does not
  // belong to the phase (or the device was excluded); InvalidArgument:
  // more than one message, or one the protocol refuses (the device is
  // excluded from the round, with the reason in its record).
  absl::StatusOr<SecureReply> Secure(const SecureRequest& request,
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
  // event in tests. Calls are serialised; the heavy parts (measuring,
  // committing, the on_round_closed hook) run outside the engine's lock.
  // The error of a failed commit (the round stays open, and the next Tick
  // tries again) or of the on_round_closed hook.
  absl::Status Tick(absl::Time now);

  // The open round's secure-aggregation phase; none without an open
  // round or secure aggregation.
  std::optional<SecurePhase> secure_phase() const;
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
  enum class Stage { kInvited, kAccepted, kDeclined, kDropped };
  struct Participant {
    std::optional<Task> task;
    // A GetTask is building its task outside the lock.
    bool preparing = false;
    // A Submit is checking and folding its update outside the lock.
    bool folding = false;
    // Names and shapes the update must have.
    std::map<std::string, std::vector<int64_t>> expected;
    // LoRA mode: the adapter it was sent (small), which its update is
    // measured against (GlobalModel::AddUpdate). Empty in dense mode.
    NamedTensors sent;
    // Split rounds: the coordinator's half, shared with calls in flight.
    std::shared_ptr<SplitSession> split;
    Stage stage = Stage::kInvited;
    absl::Time submitted;
    Submission report;  // Without tensors.
    double update_norm = 0;
  };
  // The round's streamed aggregate, folded into outside the engine's lock.
  struct Fold {
    absl::Mutex mu;
    RoundAggregate aggregate ABSL_GUARDED_BY(mu);
  };
  struct Round {
    int64_t number = 0;
    int64_t attempt = 0;
    int64_t serial = 0;  // Counts opened rounds: tells attempts apart.
    // Seeds this attempt's choices and payloads (DeviceSeed), and its
    // privacy noise and sample; SaltOf is the same before the round exists.
    static int64_t SaltOf(int64_t number, int64_t attempt) {
      return number * 1000 + attempt;
    }
    int64_t salt() const { return SaltOf(number, attempt); }
    absl::Time opened;
    absl::Time deadline;
    double global_ratio = 0;
    int64_t target = 0;
    std::map<std::string, Participant> participants;
    std::shared_ptr<Fold> fold;
    int64_t accepted = 0;
    int64_t folding = 0;  // Updates being folded; the round waits for them.
    // Whether the next round's pruning costs were measured.
    bool measured_ahead = false;
    // The round's pace (strategies::RoundPace) over its participants'
    // predicted times, as the round opened; 0 before any prediction.
    double pace_s = 0;
    // BanditKind::kStatic: the capability rule's budget (rewards.h); 0
    // before any prediction.
    double capability_budget_s = 0;
    // Differential privacy: what the round's aggregate was told.
    std::optional<PrivateRound> privacy;
    // Secure aggregation: the round's exchange (shared with calls in
    // flight), and whether its sum is already in the aggregate (a failed
    // commit is retried without unmasking again).
    std::shared_ptr<SecureRound> secure;
    bool secure_folded = false;
  };

  Engine(std::unique_ptr<GlobalModel> global, EngineOptions options,
         EngineHooks hooks,
         std::shared_ptr<const strategies::FlatLayout> secure_layout);

  // The devices a round may invite now, or none while fewer than
  // min_devices are.
  std::vector<strategies::Candidate> Candidates() const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tick's steps; each takes the engine's lock only for bookkeeping.
  absl::Status OpenRound(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(tick_mu_)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status CloseRound(absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(tick_mu_) ABSL_LOCKS_EXCLUDED(mu_);
  // Measures, on the open round's model, the pruning costs the next
  // round's bandits may ask about, so that round opens without measuring.
  // Runs once the open round's tasks are out, while the devices train, one
  // ratio at a time, and stops as soon as the round can close: its close
  // waits for one evaluation at most, and what is left is measured before
  // the next round opens. The costs a round's bandits are told are thus
  // one round old.
  void MeasureAhead(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(tick_mu_)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Under differential privacy, as a round opens: its aggregator options
  // (`aggregator` changed in place) and what they were told (`round`), or
  // why the federation must stop (FailedPrecondition: the budget is spent,
  // or adaptive clipping cannot run at this many devices).
  absl::Status OpenPrivately(strategies::AggregatorOptions& aggregator,
                             std::optional<PrivateRound>& round)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Under secure aggregation, as a round opens: its exchange among the
  // invited devices, or why the federation must stop (FailedPrecondition:
  // fewer than two devices invited).
  absl::Status OpenSecurely(Round& round) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Secure aggregation, as `round` commits: unmasks its sum and folds it
  // into its aggregate. Sum's error (too few shares: the round is retried).
  absl::Status FoldSecureSum(Round& round) ABSL_LOCKS_EXCLUDED(mu_);
  // Whether the open round can close at `now`: its deadline passed, it has
  // its target count of updates, or no participant is waited for.
  bool RoundDone(absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The combined ratios the round after `round` may ask about that are not
  // measured yet.
  std::vector<double> AheadRatios(int64_t round) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The round's record and the bandits' rewards, once `round` has closed.
  RoundRecord RecordRound(const Round& round, absl::Time now, bool committed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The arm, ratios and identity of `device_id`'s task in the open round
  // (cheap: the bandit's choice); BuildTask does the rest.
  Task DraftTask(const std::string& device_id, Device& device, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether no participant of the open round is still waited for.
  bool AllDone() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether every participant still waited for has its task.
  bool AllTasksOut() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // RewardTerms::pruning_cost of a task at combined `ratio` in the open
  // round: its one-shot cost (pruning_costs.h) times a device's share of
  // the round's aggregate, 1 / the updates the round waits for.
  double ChargedPruningCost(double ratio) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<const Device*> ParticipantDevices() const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Submit's and CheckSubmission's checks of the device's standing.
  absl::Status SubmittableLocked(const std::string& device_id, int64_t round,
                                 const std::string& nonce) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The participant of the open round holding the task with `nonce`, not
  // yet accepted, marking the device seen. NotFound: unknown device;
  // FailedPrecondition otherwise.
  absl::StatusOr<Participant*> OpenTask(const std::string& device_id,
                                        int64_t round, const std::string& nonce,
                                        absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // OpenTask's participant's split session; the errors of SplitStep.
  absl::StatusOr<std::shared_ptr<SplitSession>> SplitOf(
      const std::string& device_id, int64_t round, const std::string& nonce,
      absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  State SnapshotLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Thread-safe itself (versioned); never replaced.
  const std::unique_ptr<GlobalModel> global_;
  const EngineOptions options_;
  const EngineHooks hooks_;
  PruningCostMeter meter_;  // Thread-safe; used from Tick.
  // Secure aggregation: GlobalModel::UpdateLayout; null without.
  const std::shared_ptr<const strategies::FlatLayout> secure_layout_;

  // Serialises Tick (opening, closing, measuring). Taken before mu_.
  absl::Mutex tick_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  DeviceRegistry registry_ ABSL_GUARDED_BY(mu_);
  std::optional<Round> round_ ABSL_GUARDED_BY(mu_);
  int64_t serial_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_round_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t attempt_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  std::vector<RoundRecord> history_ ABSL_GUARDED_BY(mu_);
  PruningCostTable costs_ ABSL_GUARDED_BY(mu_);
  // Set when EngineOptions::privacy is enabled.
  std::optional<PrivateRounds> privacy_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedge::coordinator
