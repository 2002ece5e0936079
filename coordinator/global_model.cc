#include "coordinator/global_model.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <string_view>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include <torch/types.h>

#include "lora/aggregate.h"
#include "model/checkpoint.h"
#include "model/layers.h"

namespace fedge::coordinator {
namespace {

constexpr absl::string_view kWeight = ".weight";

// Scales every block's scores to unit L2 norm (all-zero blocks stay zero),
// so magnitude scores and devices' LoRA-gradient scores mix on one scale.
at::Tensor UnitNorm(const at::Tensor& scores) {
  const double norm = scores.norm().item<double>();
  return norm > 0 ? scores / norm : scores;
}

// A fresh copy of `base` with `weights` loaded.
absl::StatusOr<model::Model> CloneWith(const model::ModelImpl& base,
                                       const NamedTensors& weights) {
  absl::StatusOr<model::Model> copy =
      model::CreateModelFromConfig(base.ConfigJson());
  if (!copy.ok()) return copy.status();
  if (absl::Status s = model::LoadWeights(**copy, weights); !s.ok()) return s;
  return copy;
}

}  // namespace

absl::StatusOr<Mode> ParseMode(absl::string_view name) {
  if (name == "lora") return Mode::kLora;
  if (name == "dense") return Mode::kDense;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown training mode '", name, "' (want lora or dense)"));
}

absl::StatusOr<std::unique_ptr<GlobalModel>> GlobalModel::Create(
    model::Model base, Mode mode, const lora::LoraOptions& lora,
    const strategies::ServerOptimizerOptions& server) {
  if (absl::Status s = lora.Validate(); !s.ok()) return s;
  if (absl::Status s = server.Validate(); !s.ok()) return s;
  torch::NoGradGuard no_grad;
  auto global = std::unique_ptr<GlobalModel>(
      new GlobalModel(std::move(base), mode, lora, server));
  NamedTensors trained;
  if (mode == Mode::kDense) {
    // Version 0 is the base's own weights, not a copy: nothing changes a
    // version in place, and the base's holder may drop its handles.
    for (const auto& item : global->base_->named_parameters(/*recurse=*/true)) {
      trained.insert(item.key(), item.value().detach());
    }
  } else {
    for (auto& [path, linear] : model::NamedLinears(*global->base_)) {
      if (!lora.Targets(path)) continue;
      trained.insert(path + std::string(kWeight),
                     torch::zeros_like(linear->weight));
    }
    if (trained.is_empty()) {
      return absl::InvalidArgumentError(
          "no Linear of the base model matches the LoRA target modules");
    }
  }
  pruning::GroupScores scores = pruning::MagnitudeScores(*global->base_);
  for (at::Tensor& h : scores.heads) h = UnitNorm(h.to(torch::kFloat64));
  for (at::Tensor& c : scores.channels) c = UnitNorm(c.to(torch::kFloat64));
  absl::MutexLock lock(&global->mu_);
  global->trained_ = std::move(trained);
  global->scores_ = std::move(scores);
  return global;
}

NamedTensors GlobalModel::Trained() const {
  absl::MutexLock lock(&mu_);
  return trained_;
}

pruning::GroupScores GlobalModel::Scores() const {
  absl::MutexLock lock(&mu_);
  return scores_;
}

int64_t GlobalModel::version() const {
  absl::MutexLock lock(&mu_);
  return version_;
}

absl::StatusOr<pruning::PruningPlan> GlobalModel::Plan(double ratio) const {
  return pruning::PlanFromScores(*base_, Scores(), ratio);
}

absl::StatusOr<NamedTensors> GlobalModel::Payload(
    const pruning::PruningPlan& plan, int64_t rank, uint64_t seed) const {
  if (mode_ == Mode::kDense) return DenseSlice(plan);
  torch::NoGradGuard no_grad;
  absl::StatusOr<NamedTensors> sliced =
      pruning::SliceTensors(*base_, plan, Trained());
  if (!sliced.ok()) return sliced.status();
  // One SVD per slice: at the global rank where it exceeds the device's,
  // whose leading components are the device's adapter (rescaled from
  // alpha / global_rank to alpha / rank) and whose rest is the residual
  // the device holds frozen; else at the device's rank.
  const int64_t factor_rank = std::max(rank, global_rank_);
  const double rescale =
      std::sqrt(static_cast<double>(rank) / static_cast<double>(factor_rank));
  NamedTensors adapters, residuals;
  for (const auto& item : *sliced) {
    const std::string path =
        item.key().substr(0, item.key().size() - kWeight.size());
    absl::StatusOr<NamedTensors> factors =
        Factorize(path, item.value(), factor_rank);
    if (!factors.ok()) return factors.status();
    const std::string a_name = absl::StrCat(path, ".", lora::kLoraA);
    const std::string b_name = absl::StrCat(path, ".", lora::kLoraB);
    const at::Tensor a = (*factors)[a_name];
    const at::Tensor b = (*factors)[b_name];
    // Copies: revival below changes them in place.
    adapters.insert(a_name, a.narrow(0, 0, rank) * rescale);
    adapters.insert(b_name, b.narrow(1, 0, rank) * rescale);
    if (factor_rank == rank) continue;
    const double scale = lora_.alpha / static_cast<double>(factor_rank);
    residuals.insert(absl::StrCat(path, ".", lora::kResidualA),
                     a.narrow(0, rank, factor_rank - rank).clone());
    residuals.insert(absl::StrCat(path, ".", lora::kResidualB),
                     b.narrow(1, rank, factor_rank - rank) * scale);
  }
  lora::ReviveDeadComponents(adapters, seed);
  for (const auto& item : residuals) adapters.insert(item.key(), item.value());
  return adapters;
}

absl::StatusOr<NamedTensors> GlobalModel::DenseSlice(
    const pruning::PruningPlan& plan) const {
  std::shared_ptr<Sliced> entry;
  bool mine = false;
  {
    absl::MutexLock lock(&memo_mu_);
    for (const std::shared_ptr<Sliced>& s : sliced_) {
      if (s->plan.blocks == plan.blocks) entry = s;
    }
    if (entry == nullptr) {
      if (sliced_.size() >= kMaxSliced) sliced_.clear();
      entry = std::make_shared<Sliced>();
      entry->plan = plan;
      sliced_.push_back(entry);
      mine = true;
    }
  }
  if (mine) {
    torch::NoGradGuard no_grad;
    // Commit replaces the tensors and then clears sliced_, and the engine
    // opens a round only after Commit returns: a round's tasks never
    // share a slice of an older version.
    // A plan that keeps every unit is the model as it is: shared, not
    // copied (Commit replaces trained_'s tensors and never writes to them).
    entry->tensors = plan.blocks == pruning::FullPlan(*base_).blocks
                         ? Trained()
                         : pruning::SliceTensors(*base_, plan, Trained());
    entry->done.Notify();
  } else {
    entry->done.WaitForNotification();
  }
  return entry->tensors;
}

absl::StatusOr<NamedTensors> GlobalModel::Factorize(const std::string& path,
                                                    const at::Tensor& delta,
                                                    int64_t rank) const {
  const at::Tensor bytes = delta.contiguous();
  const std::string key = absl::StrCat(
      path, "|", rank, "|", absl::StrJoin(bytes.sizes(), "x"), "|",
      std::hash<std::string_view>()(std::string_view(
          static_cast<const char*>(bytes.data_ptr()), bytes.nbytes())));
  std::shared_ptr<Factorized> entry;
  bool mine = false;
  {
    absl::MutexLock lock(&memo_mu_);
    if (auto it = factorized_.find(key); it != factorized_.end()) {
      entry = it->second;
    } else {
      if (factorized_.size() >= kMaxFactorized) factorized_.clear();
      entry = std::make_shared<Factorized>();
      entry->delta = bytes;
      factorized_[key] = entry;
      mine = true;
    }
  }
  auto factorize = [&]() -> absl::StatusOr<NamedTensors> {
    lora::GlobalAdapter global;
    global.method = lora::RankMethod::kSvd;
    global.alpha = lora_.alpha;
    global.deltas.insert(path, bytes);
    absl::StatusOr<lora::RankedAdapter> ranked =
        lora::AdapterForRank(global, rank);
    if (!ranked.ok()) return ranked.status();
    return std::move(ranked->adapters);
  };
  if (mine) {
    entry->factors = factorize();
    entry->done.Notify();
  } else {
    entry->done.WaitForNotification();
  }
  // A hash collision: another slice under the same key.
  if (!torch::equal(entry->delta, bytes)) return factorize();
  return entry->factors;
}

absl::StatusOr<RoundAggregate> GlobalModel::BeginRound(
    const strategies::AggregatorOptions& options) const {
  RoundAggregate round;
  auto updates = strategies::UpdateAggregator::Create(Trained(), options);
  if (!updates.ok()) return updates.status();
  round.updates = std::move(*updates);
  const pruning::GroupScores scores = Scores();
  for (size_t b = 0; b < scores.heads.size(); ++b) {
    round.head_sums.push_back(torch::zeros_like(scores.heads[b]));
    round.head_counts.push_back(torch::zeros_like(scores.heads[b]));
    round.channel_sums.push_back(torch::zeros_like(scores.channels[b]));
    round.channel_counts.push_back(torch::zeros_like(scores.channels[b]));
  }
  return round;
}

absl::StatusOr<double> GlobalModel::AddUpdate(RoundAggregate& round,
                                              const pruning::PruningPlan& plan,
                                              const NamedTensors& update,
                                              const NamedTensors& sent,
                                              double weight) const {
  absl::StatusOr<pruning::Scattered> prepared =
      PrepareUpdate(plan, update, sent);
  if (!prepared.ok()) return prepared.status();
  return AddPrepared(round, *prepared, weight);
}

absl::StatusOr<double> GlobalModel::AddPrepared(
    RoundAggregate& round, const pruning::Scattered& prepared,
    double weight) const {
  torch::NoGradGuard no_grad;
  return round.updates->Add(prepared.tensors, prepared.coverage, weight);
}

absl::StatusOr<pruning::Scattered> GlobalModel::PrepareUpdate(
    const pruning::PruningPlan& plan, const NamedTensors& update,
    const NamedTensors& sent) const {
  torch::NoGradGuard no_grad;
  NamedTensors sub;
  if (mode_ == Mode::kDense) {
    sub = update;
  } else {
    absl::StatusOr<NamedTensors> change =
        lora::AdapterChange(update, sent, lora_.alpha);
    if (!change.ok()) return change.status();
    absl::StatusOr<NamedTensors> global =
        pruning::SliceTensors(*base_, plan, Trained());
    if (!global.ok()) return global.status();
    for (const auto& item : *change) {
      const std::string name = item.key() + std::string(kWeight);
      const at::Tensor* current = global->find(name);
      if (current == nullptr || current->sizes() != item.value().sizes()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "update '", item.key(), "' does not match the payload sent"));
      }
      sub.insert(name, *current + item.value());
    }
  }
  return pruning::ScatterTensors(*base_, plan, sub);
}

absl::StatusOr<strategies::FlatLayout> GlobalModel::UpdateLayout() const {
  if (mode_ != Mode::kLora) {
    return absl::FailedPreconditionError(
        "secure aggregation needs LoRA mode (--mode=lora)");
  }
  return strategies::FlatLayout::Create(Trained());
}

absl::Status GlobalModel::AddSecureSum(
    RoundAggregate& round, const NamedTensors& sum,
    const std::vector<pruning::PruningPlan>& plans) const {
  torch::NoGradGuard no_grad;
  const NamedTensors trained = Trained();
  NamedTensors ones;
  for (const auto& item : trained) {
    ones.insert(item.key(), torch::ones_like(item.value()));
  }
  // Per name, how many of the devices held each position: a scalar while
  // every plan kept the tensor whole.
  std::map<std::string, at::Tensor> counts;
  for (const auto& item : trained) {
    counts[item.key()] = torch::zeros({}, torch::kFloat64);
  }
  for (const pruning::PruningPlan& plan : plans) {
    absl::StatusOr<NamedTensors> held =
        pruning::SliceTensors(*base_, plan, ones);
    if (!held.ok()) return held.status();
    absl::StatusOr<pruning::Scattered> cover =
        pruning::ScatterTensors(*base_, plan, *held);
    if (!cover.ok()) return cover.status();
    for (auto& [name, count] : counts) {
      const at::Tensor* partial = cover->coverage.find(name);
      count = partial != nullptr ? count + partial->to(torch::kFloat64)
                                 : count + 1.0;
    }
  }
  NamedTensors coverage;
  for (auto& [name, count] : counts) coverage.insert(name, count);
  return round.updates->AddSum(sum, coverage,
                               static_cast<int64_t>(plans.size()));
}

absl::Status GlobalModel::AddScores(RoundAggregate& round,
                                    const pruning::PruningPlan& plan,
                                    const NamedTensors& importance) const {
  torch::NoGradGuard no_grad;
  const size_t blocks = plan.blocks.size();
  if (blocks != round.head_sums.size()) {
    return absl::InvalidArgumentError("importance: plan has the wrong blocks");
  }
  // Validate all, then fold.
  struct Entry {
    bool heads;
    size_t block;
    at::Tensor values;
  };
  std::vector<Entry> entries;
  for (const auto& item : importance) {
    const std::string& name = item.key();
    const bool heads = absl::StartsWith(name, "heads.");
    if (!heads && !absl::StartsWith(name, "channels.")) {
      return absl::InvalidArgumentError(
          absl::StrCat("importance: unknown entry '", name, "'"));
    }
    size_t block = 0;
    if (!absl::SimpleAtoi(name.substr(name.find('.') + 1), &block) ||
        block >= blocks) {
      return absl::InvalidArgumentError(
          absl::StrCat("importance: bad block in '", name, "'"));
    }
    const std::vector<int64_t>& kept =
        heads ? plan.blocks[block].heads : plan.blocks[block].channels;
    const at::Tensor& v = item.value();
    if (v.dim() != 1 || v.size(0) != static_cast<int64_t>(kept.size()) ||
        !v.is_floating_point() || !torch::isfinite(v).all().item<bool>() ||
        (v < 0).any().item<bool>()) {
      return absl::InvalidArgumentError(
          absl::StrCat("importance '", name, "' must be ", kept.size(),
                       " finite, non-negative scores"));
    }
    entries.push_back({heads, block, UnitNorm(v.to(torch::kFloat64))});
  }
  for (const Entry& e : entries) {
    const std::vector<int64_t>& kept =
        e.heads ? plan.blocks[e.block].heads : plan.blocks[e.block].channels;
    const at::Tensor index = torch::tensor(kept, torch::kLong);
    at::Tensor& sums =
        e.heads ? round.head_sums[e.block] : round.channel_sums[e.block];
    at::Tensor& counts =
        e.heads ? round.head_counts[e.block] : round.channel_counts[e.block];
    sums.index_add_(0, index, e.values);
    counts.index_add_(0, index, torch::ones_like(e.values));
  }
  return absl::OkStatus();
}

absl::Status GlobalModel::Commit(const RoundAggregate& round, double ema) {
  torch::NoGradGuard no_grad;
  absl::StatusOr<NamedTensors> mean = round.updates->Finish();
  if (!mean.ok()) return mean.status();
  NamedTensors current, server_state;
  {
    absl::MutexLock lock(&mu_);
    current = trained_;
    server_state = server_state_;
  }
  absl::StatusOr<strategies::ServerStepResult> next =
      strategies::ServerStep(server_, current, *mean, server_state);
  if (!next.ok()) return next.status();
  NamedTensors residual;
  std::optional<DenseDelta> delta;
  if (rounding_) {
    // The step as devices will rebuild it, plus what earlier roundings
    // left out; what this one leaves out waits for the next.
    NamedTensors step;
    {
      absl::MutexLock lock(&mu_);
      residual = residual_;
    }
    for (const auto& item : current) {
      at::Tensor change = next->next[item.key()] - item.value();
      if (const at::Tensor* left = residual.find(item.key())) change += *left;
      step.insert(item.key(), std::move(change));
    }
    absl::StatusOr<RoundedChange> rounded = rounding_(step);
    if (!rounded.ok()) return rounded.status();
    for (auto& item : step) {
      const at::Tensor* applied = rounded->applied.find(item.key());
      if (applied == nullptr || applied->sizes() != item.value().sizes()) {
        return absl::InternalError(absl::StrCat(
            "the download rounding lost or reshaped '", item.key(), "'"));
      }
      next->next[item.key()] = current[item.key()] + *applied;
      item.value() -= *applied;
    }
    residual = std::move(step);
    delta = DenseDelta{0, std::move(rounded->bytes)};
  }
  if (global_rank_ > 0) {
    for (auto& item : next->next) {
      at::Tensor& d = item.value();
      if (d.dim() != 2 || std::min(d.size(0), d.size(1)) <= global_rank_) {
        continue;
      }
      auto [u, s, vh] = at::linalg_svd(d.to(torch::kFloat64), false);
      const int64_t r = global_rank_;
      d = (u.narrow(1, 0, r) * s.narrow(0, 0, r))
              .matmul(vh.narrow(0, 0, r))
              .to(d.scalar_type());
    }
  }
  pruning::GroupScores scores = Scores();
  auto blend = [ema](at::Tensor& global, const at::Tensor& sums,
                     const at::Tensor& counts) {
    const at::Tensor held = counts > 0;
    if (!held.any().item<bool>()) return;
    const at::Tensor mean = UnitNorm(torch::where(
        held, sums / counts.clamp_min(1), torch::zeros_like(sums)));
    // Units no device held keep their score, relative to the block's scale.
    global =
        UnitNorm(torch::where(held, ema * global + (1 - ema) * mean, global));
  };
  for (size_t b = 0; b < scores.heads.size(); ++b) {
    blend(scores.heads[b], round.head_sums[b], round.head_counts[b]);
    blend(scores.channels[b], round.channel_sums[b], round.channel_counts[b]);
  }
  {
    absl::MutexLock lock(&mu_);
    trained_ = std::move(next->next);
    server_state_ = std::move(next->state);
    scores_ = std::move(scores);
    if (delta.has_value()) {
      residual_ = std::move(residual);
      delta->from = version_;
      last_delta_ = std::move(delta);
    }
    ++version_;
  }
  absl::MutexLock lock(&memo_mu_);
  factorized_.clear();
  sliced_.clear();
  return absl::OkStatus();
}

absl::Status GlobalModel::SetDenseRounding(DenseRounding rounding) {
  if (mode_ != Mode::kDense) {
    return absl::FailedPreconditionError(
        "compressed downloads of the weights are for dense mode; LoRA "
        "payloads are adapters");
  }
  rounding_ = std::move(rounding);
  return absl::OkStatus();
}

absl::Status GlobalModel::SetGlobalRank(int64_t rank) {
  if (mode_ != Mode::kLora) {
    return absl::FailedPreconditionError(
        "a global rank is for LoRA mode; dense mode has no adapters");
  }
  if (rank < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("global rank ", rank, " is negative"));
  }
  global_rank_ = rank;
  return absl::OkStatus();
}

std::optional<DenseDelta> GlobalModel::LastDelta() const {
  absl::MutexLock lock(&mu_);
  return last_delta_;
}

absl::StatusOr<model::Model> GlobalModel::Materialize(double ratio) const {
  return MaterializeState(*base_, mode_, State(), ratio);
}

absl::StatusOr<model::Model> LoadBase(const std::string& dir) {
  absl::StatusOr<model::Model> base = model::LoadCheckpoint(dir);
  if (!base.ok()) {
    return absl::Status(
        base.status().code(),
        absl::StrCat("base model in ", dir, ": ", base.status().message(),
                     " (run fedge-pretrain first)"));
  }
  return base;
}

absl::StatusOr<model::Model> MaterializeState(const model::ModelImpl& base,
                                              Mode mode,
                                              const NamedTensors& state,
                                              double ratio) {
  torch::NoGradGuard no_grad;
  // Dense: every weight comes from the state, and the base gives only the
  // names and shapes (its weights may have been dropped); LoRA: the state's
  // changes are added to copies of the base's weights.
  NamedTensors weights = mode == Mode::kDense
                             ? base.named_parameters(/*recurse=*/true)
                             : model::CopyWeights(base);
  size_t from_state = 0;
  pruning::GroupScores scores;
  for (const auto& item : state) {
    const std::string& name = item.key();
    if (absl::StartsWith(name, "scores.heads.")) {
      scores.heads.push_back(item.value());
      continue;
    }
    if (absl::StartsWith(name, "scores.channels.")) {
      scores.channels.push_back(item.value());
      continue;
    }
    if (strategies::IsServerOptimizerState(name)) continue;
    at::Tensor* w = weights.find(name);
    if (w == nullptr || w->sizes() != item.value().sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "global state tensor '", name, "' does not fit the base model"));
    }
    // LoadWeights copies the dense weights into the new model.
    *w = mode == Mode::kDense ? item.value() : *w + item.value();
    ++from_state;
  }
  if (mode == Mode::kDense && from_state != weights.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("a dense global state holds ", from_state, " of the ",
                     weights.size(), " weights of the base model"));
  }
  absl::StatusOr<model::Model> merged = CloneWith(base, weights);
  if (!merged.ok() || ratio <= 0) return merged;
  absl::StatusOr<pruning::PruningPlan> plan =
      pruning::PlanFromScores(base, scores, ratio);
  if (!plan.ok()) return plan.status();
  return pruning::ApplyPlan(**merged, *plan);
}

absl::StatusOr<double> WritePeftAdapter(const NamedTensors& state,
                                        const lora::PeftExportOptions& options,
                                        const std::string& dir) {
  constexpr absl::string_view kWeight = ".weight";
  lora::GlobalAdapter global;
  global.method = lora::RankMethod::kSvd;
  global.alpha = options.alpha;
  global.max_rank = options.rank;
  for (const auto& item : state) {
    const std::string& name = item.key();
    if (absl::StartsWith(name, "scores.") ||
        strategies::IsServerOptimizerState(name)) {
      continue;
    }
    if (!absl::EndsWith(name, kWeight) || item.value().dim() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "global state tensor '", name, "' is not a Linear's weight change"));
    }
    global.deltas.insert(name.substr(0, name.size() - kWeight.size()),
                         item.value());
  }
  absl::StatusOr<lora::RankedAdapter> ranked =
      lora::AdapterForRank(global, options.rank);
  if (!ranked.ok()) return ranked.status();
  // The config names the modules the adapter has (the default targets list
  // names, such as gate_proj, that a ViT lacks).
  lora::PeftExportOptions written = options;
  written.target_modules.clear();
  for (const auto& item : global.deltas) {
    const std::string& path = item.key();
    const std::string module = path.substr(path.rfind('.') + 1);
    if (std::find(written.target_modules.begin(), written.target_modules.end(),
                  module) == written.target_modules.end()) {
      written.target_modules.push_back(module);
    }
  }
  if (absl::Status s = lora::ExportPeft(dir, ranked->adapters, written);
      !s.ok()) {
    return s;
  }
  return ranked->max_truncation_error;
}

absl::StatusOr<model::Model> GlobalModel::DeviceModel(
    const pruning::PruningPlan& plan, int64_t rank,
    const NamedTensors& payload) const {
  if (mode_ != Mode::kLora) {
    return absl::FailedPreconditionError(
        "a device's LoRA model exists in LoRA mode only");
  }
  absl::StatusOr<model::Model> sub = pruning::ApplyPlan(*base_, plan);
  if (!sub.ok()) return sub.status();
  lora::LoraOptions options = lora_;
  options.rank = rank;
  if (absl::StatusOr<std::vector<std::string>> injected =
          lora::Inject(**sub, options);
      !injected.ok()) {
    return injected.status();
  }
  const lora::SeparatedPayload parts = lora::SeparateResiduals(payload);
  if (absl::Status s = lora::AddResiduals(**sub, parts.residuals); !s.ok()) {
    return s;
  }
  if (absl::Status s = lora::LoadAdapters(**sub, parts.adapters); !s.ok()) {
    return s;
  }
  return sub;
}

NamedTensors GlobalModel::State() const {
  absl::MutexLock lock(&mu_);
  NamedTensors state;
  for (const auto& item : trained_) state.insert(item.key(), item.value());
  for (size_t b = 0; b < scores_.heads.size(); ++b) {
    state.insert(absl::StrCat("scores.heads.", b), scores_.heads[b]);
    state.insert(absl::StrCat("scores.channels.", b), scores_.channels[b]);
  }
  for (const auto& item : server_state_) state.insert(item.key(), item.value());
  return state;
}

absl::Status GlobalModel::Restore(const NamedTensors& state) {
  // What this model's own state holds, and the server optimizer's part.
  NamedTensors current, server_state;
  for (const auto& item : State()) {
    if (!strategies::IsServerOptimizerState(item.key())) {
      current.insert(item.key(), item.value());
    }
  }
  for (const auto& item : state) {
    if (strategies::IsServerOptimizerState(item.key())) {
      server_state.insert(item.key(), item.value().to(torch::kFloat32).clone());
    }
  }
  if (state.size() - server_state.size() != current.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint state has ", state.size() - server_state.size(),
        " model tensors; this model needs ", current.size()));
  }
  for (const auto& item : current) {
    const at::Tensor* t = state.find(item.key());
    if (t == nullptr || t->sizes() != item.value().sizes() ||
        !torch::isfinite(*t).all().item<bool>()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint state tensor '", item.key(),
          "' is missing, mis-shaped or not finite for this base model"));
    }
  }
  NamedTensors trained = Trained();
  for (auto& item : trained) {
    item.value() = state[item.key()].to(item.value().scalar_type()).clone();
  }
  if (absl::Status s =
          strategies::ValidateServerState(server_, trained, server_state);
      !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint: ", s.message()));
  }
  pruning::GroupScores scores = Scores();
  for (size_t b = 0; b < scores.heads.size(); ++b) {
    scores.heads[b] =
        state[absl::StrCat("scores.heads.", b)].to(torch::kFloat64).clone();
    scores.channels[b] =
        state[absl::StrCat("scores.channels.", b)].to(torch::kFloat64).clone();
  }
  {
    absl::MutexLock lock(&mu_);
    trained_ = std::move(trained);
    server_state_ = std::move(server_state);
    scores_ = std::move(scores);
    // No device holds the restored weights' predecessor for sure.
    residual_ = NamedTensors();
    last_delta_.reset();
    ++version_;
  }
  absl::MutexLock lock(&memo_mu_);
  factorized_.clear();
  sliced_.clear();
  return absl::OkStatus();
}

}  // namespace fedge::coordinator
