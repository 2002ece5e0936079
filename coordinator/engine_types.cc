#include "coordinator/engine_types.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

#include "transport/update_codec.h"

namespace fedge::coordinator {

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

absl::Status EngineOptions::Validate() const {
  if (rounds < 1) return absl::InvalidArgumentError("rounds must be >= 1");
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
  if (absl::Status s = schedule.Validate(); !s.ok()) return s;
  if (absl::Status s = lora.Validate(); !s.ok()) return s;
  if (absl::Status s = server_optimizer.Validate(); !s.ok()) return s;
  if (!(importance_ema >= 0 && importance_ema <= 1)) {
    return absl::InvalidArgumentError("importance_ema must be in [0, 1]");
  }
  if (train.epochs < 1 || train.batch_size < 1 || train.max_steps < 0 ||
      !(train.learning_rate > 0) || !(train.fedprox_mu >= 0) ||
      (train.round_schedule != "constant" &&
       train.round_schedule != "cosine")) {
    return absl::InvalidArgumentError(
        "training needs epochs >= 1, batch_size >= 1, max_steps >= 0, "
        "learning_rate > 0, fedprox_mu >= 0 and a round schedule of "
        "constant or cosine");
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
