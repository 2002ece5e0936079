#include "coordinator/engine_types.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

#include "pruning/plan.h"
#include "transport/update_codec.h"

namespace fedge::coordinator {
namespace {

// EngineOptions::Validate's checks of differential privacy.
absl::Status ValidatePrivacy(const EngineOptions& o) {
  if (absl::Status s = strategies::ValidatePrivacyOptions(o.privacy); !s.ok()) {
    return s;
  }
  if (!o.privacy.enabled()) return absl::OkStatus();
  const auto refuse = [](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("differential privacy (--dp_noise_multiplier > 0) ", why));
  };
  if (!(o.aggregator.clip_norm > 0) && !o.secure.enabled) {
    return refuse("bounds each device's change: set --clip_norm > 0");
  }
  if (o.aggregator.kind != strategies::AggregatorKind::kMean) {
    return refuse(
        "noises a sum: it needs --aggregator=mean (median and trimmed mean "
        "have no bounded sensitivity to one device)");
  }
  const bool poisson =
      o.selection.kind == strategies::SelectionKind::kPoisson &&
      o.selection.sampling_rate == o.privacy.sampling_rate;
  const bool everyone = o.selection.kind == strategies::SelectionKind::kAll &&
                        o.privacy.sampling_rate == 1;
  if (!poisson && !everyone) {
    return refuse(
        "accounts for Poisson sampling: use --selection=poisson (or all, "
        "with --sampling_rate=1)");
  }
  if (o.bandit.kind != strategies::BanditKind::kFixed) {
    return refuse(
        "does not cover per-device arms, which bandits choose from each "
        "device's losses: use --bandit=fixed");
  }
  if (o.privacy.epsilon_budget > 0) {
    const double epsilon = strategies::SpentAfter(o.privacy, o.rounds).epsilon;
    if (epsilon > o.privacy.epsilon_budget) {
      return refuse(absl::StrCat(
          "would spend epsilon ", epsilon, " at delta ", o.privacy.delta,
          " in ", o.rounds, " rounds, over the budget of ",
          o.privacy.epsilon_budget, ", which allows ",
          strategies::RoundsWithin(o.privacy, o.privacy.epsilon_budget,
                                   o.rounds),
          " rounds: lower --rounds or --sampling_rate, or raise "
          "--dp_noise_multiplier"));
    }
  }
  return absl::OkStatus();
}

// EngineOptions::Validate's checks of secure aggregation.
absl::Status ValidateSecure(const EngineOptions& o) {
  if (absl::Status s = ValidateSecureOptions(o.secure); !s.ok()) return s;
  if (!o.secure.enabled) return absl::OkStatus();
  const auto refuse = [](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("secure aggregation (--secure_aggregation) ", why));
  };
  if (o.mode != Mode::kLora) return refuse("needs --mode=lora");
  if (o.aggregator.kind != strategies::AggregatorKind::kMean) {
    return refuse(
        "reveals only a sum: median and trimmed mean need each update; use "
        "--aggregator=mean");
  }
  if (o.aggregator.clip_norm > 0) {
    return refuse(
        "cannot clip a masked update on the coordinator; devices clip to "
        "--secure_clip_norm: leave --clip_norm at 0");
  }
  if (o.privacy.enabled() && o.privacy.target_quantile > 0) {
    return refuse(
        "with differential privacy noises on the devices at a fixed clip "
        "(--secure_clip_norm): adaptive clipping would need a second secure "
        "sum of who was clipped; use --dp_target_quantile=0");
  }
  if (o.split.mode != "off") {
    return refuse(
        "gives the coordinator no update in the clear, but a split round "
        "trains the tail on it: use --split=off");
  }
  if (o.min_devices < 2) {
    return refuse("needs at least two devices a round: --min_devices >= 2");
  }
  return absl::OkStatus();
}

}  // namespace

double TrainSpec::RoundLearningRate(int64_t round, int64_t rounds) const {
  if (round_schedule != "cosine" || rounds < 1) return learning_rate;
  const double progress =
      static_cast<double>(std::clamp<int64_t>(round, 1, rounds) - 1) /
      static_cast<double>(rounds);
  return learning_rate * 0.5 * (1 + std::cos(M_PI * progress));
}

absl::StatusOr<int64_t> ParseSplitMode(absl::string_view mode) {
  if (mode == "auto") return -1;
  if (mode == "off") return 0;
  int64_t cut = 0;
  if (!absl::SimpleAtoi(mode, &cut) || cut < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "split mode '", mode, "' is not off, auto or a block number >= 1"));
  }
  return cut;
}

absl::Status ValidateTimings(const Timings& t) {
  for (const auto& [name, seconds] :
       {std::pair<const char*, double>{"download_s", t.download_s},
        {"train_s", t.train_s},
        {"upload_s", t.upload_s},
        {"eval_s", t.eval_s},
        {"split_s", t.split_s},
        {"secagg_mask_s", t.secagg_mask_s}}) {
    if (!std::isfinite(seconds) || seconds < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "timings.", name, " must be finite and non-negative, not ", seconds));
    }
  }
  for (const auto& [name, count] :
       {std::pair<const char*, int64_t>{"bytes_down", t.bytes_down},
        {"bytes_up", t.bytes_up},
        {"raw_bytes_down", t.raw_bytes_down},
        {"raw_bytes_up", t.raw_bytes_up},
        {"peak_rss_bytes", t.peak_rss_bytes},
        {"split_bytes_up", t.split_bytes_up},
        {"split_bytes_down", t.split_bytes_down}}) {
    if (count < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("timings.", name, " must be non-negative, not ", count));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateDeviceFacts(const DeviceFacts& facts) {
  const std::string& id = facts.device_id;
  if (id.empty() || id.size() > 128) {
    return absl::InvalidArgumentError("device_id must be 1-128 characters");
  }
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' &&
        c != '-') {
      return absl::InvalidArgumentError(
          absl::StrCat("device_id '", absl::CHexEscape(id),
                       "' may only hold letters, digits, '.', '_' and '-'"));
    }
  }
  if (facts.cores < 0 || facts.memory_total_bytes < 0 ||
      facts.memory_available_bytes < 0 || facts.memory_budget_bytes < 0 ||
      !(facts.benchmark_gflops >= 0) ||
      !std::isfinite(facts.benchmark_gflops)) {
    return absl::InvalidArgumentError(
        absl::StrCat("device ", id, ": negative or non-finite hardware facts"));
  }
  if (facts.memory_total_bytes > 0 &&
      facts.memory_budget_bytes > facts.memory_total_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "device ", id, ": memory budget above the device's total memory"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<GlobalModel>> CreateGlobalModel(
    model::Model base, const EngineOptions& options) {
  absl::StatusOr<std::unique_ptr<GlobalModel>> global = GlobalModel::Create(
      std::move(base), options.mode, options.lora, options.server_optimizer);
  const int64_t rank = EffectiveGlobalRank(options);
  if (!global.ok() || rank == 0) return global;
  if (absl::Status s = (*global)->SetGlobalRank(rank); !s.ok()) return s;
  return global;
}

strategies::WorkShares TrainingWork(const model::ModelImpl& base,
                                    const EngineOptions& options) {
  strategies::WorkShares shares;
  shares.prunable = pruning::PrunableShare(base);
  if (options.mode != Mode::kLora) return shares;
  constexpr absl::string_view kWeight = ".weight";
  double all = 0, adapter = 0;
  for (const auto& item : base.named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    if (absl::StrContains(name, ".adapter.")) continue;
    all += static_cast<double>(item.value().numel());
    if (item.value().dim() == 2 && absl::EndsWith(name, kWeight) &&
        options.lora.Targets(name.substr(0, name.size() - kWeight.size()))) {
      adapter +=
          static_cast<double>(item.value().size(0) + item.value().size(1));
    }
  }
  shares.per_rank = all > 0 ? adapter / all : 0.0;
  return shares;
}

int64_t EffectiveGlobalRank(const EngineOptions& options) {
  if (options.mode != Mode::kLora) return 0;
  if (options.global_rank != kAutoGlobalRank) return options.global_rank;
  int64_t rank = options.bandit.kind == strategies::BanditKind::kFixed
                     ? options.bandit.fixed_arm.rank
                     : options.bandit.space.ranks.back();
  for (const auto& [id, arm] : options.device_arms) {
    rank = std::max(rank, arm.rank);
  }
  return rank;
}

strategies::BanditOptions BanditFor(const EngineOptions& options,
                                    const std::string& device_id) {
  strategies::BanditOptions bandit = options.bandit;
  if (auto it = options.device_arms.find(device_id);
      it != options.device_arms.end()) {
    bandit.fixed_arm = it->second;
  }
  return bandit;
}

absl::Status EngineOptions::Validate() const {
  if (rounds < 1) return absl::InvalidArgumentError("rounds must be >= 1");
  if (!device_arms.empty() && bandit.kind != strategies::BanditKind::kFixed) {
    return absl::InvalidArgumentError(
        "per-device arms (--device_arms) need --bandit=fixed");
  }
  for (const auto& [id, arm] : device_arms) {
    if (absl::Status s =
            strategies::CreateBandit(BanditFor(*this, id)).status();
        !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the arm of device ", id, " (",
                       strategies::ArmToString(arm), "): ", s.message()));
    }
  }
  if (min_devices < 1 || min_updates < 1 || max_attempts < 1) {
    return absl::InvalidArgumentError(
        "min_devices, min_updates and max_attempts must be >= 1");
  }
  if (round_deadline <= absl::ZeroDuration() ||
      heartbeat_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "round deadline and heartbeat timeout must be positive");
  }
  if (selection.clients_per_round < 0 || selection.overcommit < 1) {
    return absl::InvalidArgumentError(
        "clients_per_round must be >= 0 and overcommit >= 1");
  }
  if (selection.clients_per_round > 0 &&
      min_updates > selection.clients_per_round) {
    return absl::InvalidArgumentError(absl::StrCat(
        "min_updates (", min_updates, ") cannot exceed clients_per_round (",
        selection.clients_per_round, ")"));
  }
  if (selection.kind == strategies::SelectionKind::kPoisson &&
      !(selection.sampling_rate > 0 && selection.sampling_rate <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sampling rate must be in (0, 1]; got ", selection.sampling_rate));
  }
  if (absl::Status s = ValidatePrivacy(*this); !s.ok()) return s;
  if (absl::Status s = ValidateSecure(*this); !s.ok()) return s;
  if (!(train.local_dp_clip >= 0) || !std::isfinite(train.local_dp_clip) ||
      !(train.local_dp_noise_multiplier >= 0) ||
      !std::isfinite(train.local_dp_noise_multiplier) ||
      (train.local_dp_noise_multiplier > 0 && train.local_dp_clip == 0)) {
    return absl::InvalidArgumentError(
        "local differential privacy needs --local_dp_clip > 0 for its noise, "
        "and neither may be negative");
  }
  if (train.local_dp_clip > 0 && split.mode != "off") {
    return absl::InvalidArgumentError(
        "local differential privacy covers what a device uploads, not the "
        "activations split training streams: use --split=off or auto");
  }
  if (absl::Status s = schedule.Validate(); !s.ok()) return s;
  if (absl::Status s = lora.Validate(); !s.ok()) return s;
  if (absl::Status s = server_optimizer.Validate(); !s.ok()) return s;
  if (!(importance_ema >= 0 && importance_ema <= 1)) {
    return absl::InvalidArgumentError("importance_ema must be in [0, 1]");
  }
  if (!(train.fill_pace >= 1) || !std::isfinite(train.fill_pace) ||
      (train.fill_pace > 1 && train.max_steps == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "fill_pace must be a finite multiple >= 1 of max_steps, and needs "
        "max_steps > 0 above 1 (got fill_pace ",
        train.fill_pace, ", max_steps ", train.max_steps, ")"));
  }
  if (train.epochs < 1 || train.batch_size < 1 || train.max_steps < 0 ||
      !(train.learning_rate > 0) || !(train.fedprox_mu >= 0) ||
      (train.round_schedule != "constant" &&
       train.round_schedule != "cosine") ||
      (train.in_round_schedule != "constant" &&
       train.in_round_schedule != "cosine")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "training needs epochs >= 1, batch_size >= 1, max_steps >= 0, "
        "learning_rate > 0, fedprox_mu >= 0, and a round schedule and an "
        "in-round schedule of constant or cosine (got '",
        train.round_schedule, "' and '", train.in_round_schedule, "')"));
  }
  if (absl::StatusOr<transport::Codec> codec =
          transport::ParseCodec(upload_codec);
      !codec.ok()) {
    return codec.status();
  }
  if (absl::StatusOr<transport::Codec> codec =
          transport::ParseCodec(download_codec);
      !codec.ok() || *codec == transport::Codec::kTopK) {
    return absl::InvalidArgumentError(absl::StrCat(
        "download codec '", download_codec,
        "': float32, float16, bfloat16 or int8_row (topk's sparse change "
        "would leave most of a round's step to the next)"));
  }
  if (download_codec != "float32" && mode != Mode::kDense) {
    return absl::InvalidArgumentError(absl::StrCat(
        "download codec '", download_codec,
        "' is for dense mode (--mode=dense); LoRA payloads are small "
        "adapters, sent whole"));
  }
  if (global_rank < kAutoGlobalRank ||
      (global_rank > 0 && mode != Mode::kLora)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "global rank ", global_rank,
        ": auto, 0 (unbounded) or a positive rank, in LoRA mode only"));
  }
  if (absl::StatusOr<int64_t> cut = ParseSplitMode(split.mode); !cut.ok()) {
    return cut.status();
  }
  if (absl::StatusOr<transport::Codec> codec =
          transport::ParseCodec(split.activation_codec);
      !codec.ok() || *codec == transport::Codec::kTopK) {
    return absl::InvalidArgumentError(
        absl::StrCat("split activation codec '", split.activation_codec,
                     "' is not float32, float16, bfloat16 or int8_row"));
  }
  if (split.local_loss_steps < 0 ||
      !(split.keep_fraction > 0 && split.keep_fraction <= 1) ||
      (split.keep_fraction < 1 && split.local_loss_steps == 0)) {
    return absl::InvalidArgumentError(
        "split needs local_loss_steps >= 0 and keep_fraction in (0, 1], "
        "and dataset pruning (keep_fraction < 1) needs local-loss steps");
  }
  if (max_examples < 1 || max_devices < 1) {
    return absl::InvalidArgumentError(
        "max_examples and max_devices must be >= 1");
  }
  for (const std::string& id : allow_list) {
    DeviceFacts facts;
    facts.device_id = id;
    if (absl::Status s = ValidateDeviceFacts(facts); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("allow-list: ", s.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace fedge::coordinator
