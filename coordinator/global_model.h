// The coordinator's global state of the model being fine-tuned: the frozen
// base, what training changed (the LoRA product per target Linear, or the
// dense weights), and the global importance scores that drive
// prune-and-tune. It cuts each device's payload (its sub-model's adapter at
// its rank, or its sub-model's weights) and folds updates back in full
// coordinates. No gRPC, no threads.
//
// LoRA mode keeps, per target Linear "<path>", the accumulated update
// D = scale * B A in full coordinates as "<path>.weight" (zeros at the
// start). A device with plan P and rank r gets the truncated SVD of D
// sliced to P at rank r (components the SVD leaves empty get a fresh A, see
// lora::ReviveDeadComponents); its trained adapter's product is scattered
// back and averaged into D over the devices that hold each position
// (FlexLoRA-style, papers.md section 9). With a global rank R
// (SetGlobalRank) D is held at rank R, and a device of rank r < R also gets
// the rest of D (components r..R) as a frozen residual, so it trains from
// exactly the global model; without one it trains from D's rank-r
// truncation while its change is added to the whole D.
//
// Versioned: Commit and Restore install a new set of tensors (never
// changing the old ones in place), so every read works on one consistent
// version without holding a lock while it computes.
//
// Dense mode (classic FedAvg) keeps every weight and averages the devices'
// trained weights, scattered back from their sub-models.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

#include "lora/lora.h"
#include "lora/peft.h"
#include "model/model.h"
#include "pruning/importance.h"
#include "pruning/plan.h"
#include "strategies/aggregator.h"
#include "strategies/flat_layout.h"
#include "strategies/server_optimizer.h"

namespace fedge::coordinator {

using model::NamedTensors;

enum class Mode { kLora, kDense };

// "lora", "dense". InvalidArgument otherwise.
absl::StatusOr<Mode> ParseMode(absl::string_view name);

// One round's aggregation in progress.
struct RoundAggregate {
  std::unique_ptr<strategies::UpdateAggregator> updates;
  // Per block, sums of reported (normalised) scores and how many devices
  // reported each unit; float64.
  std::vector<at::Tensor> head_sums, head_counts;
  std::vector<at::Tensor> channel_sums, channel_counts;
};

// Dense mode with compressed downloads: a change of the dense weights as
// devices will reconstruct it from the compressed bytes they download
// (decode(encode(change)), so both sides apply the same values), and
// those bytes. Supplied by the caller, which owns the wire format.
struct RoundedChange {
  NamedTensors applied;
  std::shared_ptr<const std::string> bytes;
};
using DenseRounding =
    std::function<absl::StatusOr<RoundedChange>(const NamedTensors& change)>;

// The compressed change from version `from` to version `from` + 1.
struct DenseDelta {
  int64_t from = 0;
  std::shared_ptr<const std::string> bytes;
};

// Thread-safe. Reads (Plan, Payload, AddUpdate, AddScores, BeginRound,
// Materialize, State) may run concurrently with each other and with a
// Commit or Restore; each sees the version before or after it, never a
// mix. Commit and Restore must not run concurrently with each other (the
// engine's ticks are serialised). The RoundAggregate passed to AddUpdate
// and AddScores is the caller's to serialise.
class GlobalModel {
 public:
  // Takes the base model (without adapters). InvalidArgument for bad LoRA
  // or server optimizer options, or targets that match no Linear of the
  // base. `server` is the step Commit takes on each round's mean
  // (strategies/server_optimizer.h; FedAvg by default). Dense mode takes
  // the base's weights as version 0 without copying them and from then on
  // reads only the base's structure, so the caller may drop the base's
  // weights (model::DropWeights) once it needs them no more; Materialize
  // then still works. LoRA mode reads the base's weights throughout.
  static absl::StatusOr<std::unique_ptr<GlobalModel>> Create(
      model::Model base, Mode mode, const lora::LoraOptions& lora,
      const strategies::ServerOptimizerOptions& server = {});

  // Dense mode: every Commit moves the weights by `rounding`'s rounding
  // of its step plus what earlier roundings left out (error feedback on
  // the server), so the committed weights are exactly what a device holding
  // the previous version rebuilds from LastDelta's bytes, and no rounding
  // error is lost for good. Call before the first Commit; FailedPrecondition
  // in LoRA mode.
  absl::Status SetDenseRounding(DenseRounding rounding);
  // LoRA mode: every Commit truncates each Linear's global change D to its
  // best rank-`rank` approximation (SVD), and Payload sends a device of a
  // lower rank the rest of D as a frozen residual (lora::kResidualA), so
  // every device starts from exactly the global model. Without it (0, the
  // default) D's rank grows with the rounds and a device trains from its
  // rank-r truncation while its change is added to the whole D (AddUpdate):
  // what the truncation hid, the device partly learns again and D gets
  // twice (docs/architecture.md). Call before the first Commit;
  // FailedPrecondition in dense mode, InvalidArgument for a negative rank.
  absl::Status SetGlobalRank(int64_t rank);

  // The last Commit's compressed change, if SetDenseRounding is on and no
  // Restore came after it.
  std::optional<DenseDelta> LastDelta() const;

  Mode mode() const { return mode_; }
  const model::ModelImpl& base() const { return *base_; }
  const lora::LoraOptions& lora() const { return lora_; }

  // The plan removing `ratio` of every block's heads and channels, keeping
  // the globally most important. InvalidArgument for a ratio outside
  // [0, 1).
  absl::StatusOr<pruning::PruningPlan> Plan(double ratio) const;

  // What a device with `plan` (and `rank`, LoRA mode) downloads, in the
  // sub-model's names; its update must have the same names and shapes,
  // less the frozen residual's (lora::IsResidual) if the payload has one.
  // `seed` initialises revived adapter components. Dense mode: devices with
  // the same plan get the same tensors (one slice per plan and version,
  // shared until the next Commit); they must not be changed in place.
  absl::StatusOr<NamedTensors> Payload(const pruning::PruningPlan& plan,
                                       int64_t rank, uint64_t seed) const;

  // The physically pruned base for `plan` with LoRA adapters of `rank`
  // holding `payload` (what Payload gave a device): the device's starting
  // model, as the coordinator's half of a split round needs it. LoRA mode
  // only (FailedPrecondition otherwise); InvalidArgument for a payload that
  // does not fit.
  absl::StatusOr<model::Model> DeviceModel(const pruning::PruningPlan& plan,
                                           int64_t rank,
                                           const NamedTensors& payload) const;
  absl::StatusOr<RoundAggregate> BeginRound(
      const strategies::AggregatorOptions& options) const;

  // Folds a device's trained payload `update` (validated by the caller
  // against Payload's names and shapes) into `round`, weighted by `weight`.
  // `sent` is the payload it was given. LoRA mode folds in the device's
  // change, its adapter's product minus the product it was sent, on top of
  // the global change: what a low rank truncated away is kept rather than
  // lost from the average (it would be if the products themselves were
  // averaged). Dense mode folds in the weights (`sent` is not used).
  // Returns the norm of its change (the reward's update importance).
  // The same as AddPrepared(round, PrepareUpdate(plan, update, sent)).
  absl::StatusOr<double> AddUpdate(RoundAggregate& round,
                                   const pruning::PruningPlan& plan,
                                   const NamedTensors& update,
                                   const NamedTensors& sent,
                                   double weight) const;
  // AddUpdate in two steps, so that callers fold concurrently: the heavy
  // part (adapter products, the global change, the scatter to full shape)
  // touches no aggregate and runs in parallel with anything; adding it to
  // `round` is the only part the caller serialises.
  absl::StatusOr<pruning::Scattered> PrepareUpdate(
      const pruning::PruningPlan& plan, const NamedTensors& update,
      const NamedTensors& sent) const;
  absl::StatusOr<double> AddPrepared(RoundAggregate& round,
                                     const pruning::Scattered& prepared,
                                     double weight) const;

  // Secure aggregation (docs/privacy.md), LoRA mode: the layout in which
  // every device flattens its change (the global change's names and full
  // shapes, client::SecureChange), the same for every round.
  // FailedPrecondition in dense mode.
  absl::StatusOr<strategies::FlatLayout> UpdateLayout() const;
  // Folds into `round` the unmasked sum of the changes of the devices that
  // held `plans` (one each, weight 1), `sum` as UpdateLayout unflattens it:
  // each position's mean is over the devices whose plan held it, as
  // AddUpdate's is. The coverage comes from the plans, which the
  // coordinator chose. UpdateAggregator::AddSum's errors; InvalidArgument
  // for a plan that does not fit the base.
  absl::Status AddSecureSum(
      RoundAggregate& round, const NamedTensors& sum,
      const std::vector<pruning::PruningPlan>& plans) const;

  // Folds a device's importance report ("heads.N" [kept heads of block N],
  // "channels.N" [kept channels]) into `round`. InvalidArgument for names,
  // sizes or values (negative, non-finite) that do not fit `plan`.
  absl::Status AddScores(RoundAggregate& round,
                         const pruning::PruningPlan& plan,
                         const NamedTensors& importance) const;

  // Makes the round's aggregate, through the server optimizer's step, the
  // new global state (the optimizer's state changes with it); scores of
  // units that were reported move towards the round's mean by (1 - ema),
  // and a non-finite step is refused (nothing changes). The work
  // (the aggregate's mean, the scores' blend) is done before the new
  // version is installed, so readers wait for none of it.
  absl::Status Commit(const RoundAggregate& round, double ema);

  // Counts Commits and Restores: 0 at creation.
  int64_t version() const;

  // A standalone model for evaluation: the base with the global change
  // applied (merged), pruned by Plan(ratio). See MaterializeState.
  absl::StatusOr<model::Model> Materialize(double ratio) const;

  // The state to checkpoint and restore: the trained tensors, the scores
  // ("scores.heads.N", "scores.channels.N") and the server optimizer's
  // moments ("server_m.<name>", "server_v.<name>"). Restore checks names
  // and shapes against this model (InvalidArgument otherwise); a state
  // without moments (FedAvg's, or a checkpoint from before) restores with
  // the moments at zero; moments this model's optimizer does not keep are
  // refused.
  NamedTensors State() const;
  absl::Status Restore(const NamedTensors& state);

 private:
  GlobalModel(model::Model base, Mode mode, const lora::LoraOptions& lora,
              const strategies::ServerOptimizerOptions& server)
      : base_(std::move(base)), mode_(mode), lora_(lora), server_(server) {}

  // LoRA mode: the rank-`rank` factors of the sliced global delta of the
  // Linear at `path` (lora::AdapterForRank). Devices whose plans keep the
  // same rows and columns of a Linear (e.g. the same heads of q_proj) get
  // the same slice, so its SVD is computed once: memoised by content until
  // the next Commit. The SVD runs outside memo_mu_; concurrent callers
  // needing the same one wait for the first.
  absl::StatusOr<NamedTensors> Factorize(const std::string& path,
                                         const at::Tensor& delta,
                                         int64_t rank) const;
  // Dense mode: the weights `plan` keeps, sliced once per plan and version
  // (a round's GetTasks arrive together and mostly share one plan); the
  // others needing the same slice wait for the first, outside memo_mu_.
  absl::StatusOr<NamedTensors> DenseSlice(
      const pruning::PruningPlan& plan) const;
  // The current version's tensors (handles: cheap, never changed).
  NamedTensors Trained() const;
  pruning::GroupScores Scores() const;

  model::Model base_;  // Never changed: read without a lock.
  const Mode mode_;
  const lora::LoraOptions lora_;
  const strategies::ServerOptimizerOptions server_;
  mutable absl::Mutex mu_;
  // LoRA: "<path>.weight" -> D; dense: all weights.
  NamedTensors trained_ ABSL_GUARDED_BY(mu_);
  pruning::GroupScores scores_ ABSL_GUARDED_BY(mu_);  // Unit-norm per block.
  // The server optimizer's moments for trained_ (empty before the first
  // Commit and for FedAvg).
  NamedTensors server_state_ ABSL_GUARDED_BY(mu_);
  int64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  // Compressed downloads (SetDenseRounding): set before use, then read
  // only by Commit.
  DenseRounding rounding_;
  // SetGlobalRank's; set before use, then read only by Commit.
  int64_t global_rank_ = 0;
  // What the roundings left out so far, per trained_ tensor; not
  // checkpointed (a restored model starts without: one rounding error).
  NamedTensors residual_ ABSL_GUARDED_BY(mu_);
  std::optional<DenseDelta> last_delta_ ABSL_GUARDED_BY(mu_);
  // One SVD, computed once: the first device to need it computes it, the
  // others (a whole round's GetTasks arrive together) wait for it.
  struct Factorized {
    at::Tensor delta;  // The slice, to rule out hash collisions.
    absl::Notification done;
    absl::StatusOr<NamedTensors> factors;  // Set before done.
  };
  static constexpr size_t kMaxFactorized = 4096;
  struct Sliced {
    pruning::PruningPlan plan;
    absl::Notification done;
    absl::StatusOr<NamedTensors> tensors;  // Set before done.
  };
  // Distinct plans kept per version: a round's arms (a few ratios).
  static constexpr size_t kMaxSliced = 8;
  mutable absl::Mutex memo_mu_;
  mutable std::unordered_map<std::string, std::shared_ptr<Factorized>>
      factorized_ ABSL_GUARDED_BY(memo_mu_);
  // Dense slices of the current version; cleared by every Commit/Restore.
  mutable std::vector<std::shared_ptr<Sliced>> sliced_
      ABSL_GUARDED_BY(memo_mu_);
};

// Writes a LoRA-mode `state` (as GlobalModel::State() gave it) as a PEFT
// adapter for the unpruned base (lora/peft.h) into `dir`: each Linear's
// global change factored to `options.rank` by truncated SVD. Returns the
// largest relative Frobenius error of that truncation over the Linears
// (FlexLoRA's global change may have a higher rank than any device's).
// The config's target modules are those the state holds changes for.
// InvalidArgument for a tensor that is not a Linear's weight change; the
// writer's errors.
absl::StatusOr<double> WritePeftAdapter(const NamedTensors& state,
                                        const lora::PeftExportOptions& options,
                                        const std::string& dir);

// The base model in checkpoint directory `dir` (fedge-pretrain's output).
// Its loader's error, naming the directory and suggesting fedge-pretrain.
absl::StatusOr<model::Model> LoadBase(const std::string& dir);

// The base with `state` (as GlobalModel::State() gave it) applied and
// merged, pruned to `ratio` by the state's own scores. Dense mode takes
// every weight from `state` and only the structure from `base` (whose
// weights may have been dropped). Reads `base` only,
// so evaluation threads may call it while the engine goes on (the engine
// replaces its tensors rather than changing them in place).
// InvalidArgument for a state that does not fit the base, or a dense
// state that lacks one of its weights.
absl::StatusOr<model::Model> MaterializeState(const model::ModelImpl& base,
                                              Mode mode,
                                              const NamedTensors& state,
                                              double ratio);

}  // namespace fedge::coordinator
