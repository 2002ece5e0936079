#include "coordinator/records.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include <glog/logging.h>

#include "model/file_io.h"

namespace fedge::coordinator {
namespace {

std::string F(double v) { return absl::StrFormat("%.6g", v); }
std::string I(int64_t v) { return std::to_string(v); }

}  // namespace

void DeclareMetrics(metrics::Registry& r) {
  r.DeclareGauge("fedge_round", "Current round number.");
  r.DeclareGauge("fedge_devices_registered", "Devices in the registry.");
  r.DeclareGauge("fedge_tensor_cache_bytes",
                 "Dense mode with --tensor_cache_mb: bytes of large tensors "
                 "by state (live: in tensors; cached: freed, kept for reuse).");
  r.DeclareGauge("fedge_devices_in_round",
                 "Devices invited to the current round.");
  r.DeclareCounter("fedge_rounds_total",
                   "Round attempts closed, by outcome (committed, retried).");
  r.DeclareCounter("fedge_updates_total",
                   "Device outcomes per round, by status (accepted, "
                   "straggler, dropped) and link.");
  r.DeclareCounter("fedge_rpc_total", "RPCs handled, by method and code.");
  r.DeclareCounter("fedge_updates_refused_total",
                   "SubmitUpdate calls refused, by status code "
                   "(refusals.csv has each one's device and reason).");
  r.DeclareHistogram("fedge_phase_seconds",
                     "Per-device phase time (download, train, upload, wait) "
                     "by link type.",
                     metrics::SecondsBuckets());
  r.DeclareHistogram("fedge_round_seconds", "Round time, open to close.",
                     metrics::SecondsBuckets());
  r.DeclareHistogram("fedge_engine_lock_hold_seconds",
                     "How long each operation held the round engine's lock, "
                     "by operation (get_task, submit, tick, close, ...).",
                     {1e-5, 1e-4, 1e-3, 0.005, 0.01, 0.05, 0.1, 1});
  r.DeclareCounter("fedge_engine_errors_total",
                   "Failed engine ticks: a commit or a checkpoint write that "
                   "failed (the coordinator retries, then stops).");
  r.DeclareHistogram("fedge_aggregate_seconds",
                     "Server aggregation time per committed round.",
                     metrics::SecondsBuckets());
  r.DeclareCounter("fedge_bytes_total",
                   "Bytes on the wire by direction (up, down) and link.");
  r.DeclareCounter("fedge_raw_bytes_total",
                   "Bytes before codec and compression, by direction.");
  r.DeclareGauge("fedge_global_accuracy",
                 "Test accuracy of the global model at its last evaluation.");
  r.DeclareGauge("fedge_global_loss",
                 "Test loss of the global model at its last evaluation.");
  r.DeclareGauge("fedge_global_bits_per_byte",
                 "Held-out bits per byte of the global model at its last "
                 "evaluation (text tasks).");
  r.DeclareGauge("fedge_global_exact_match",
                 "Share of held-out instruction records the global model "
                 "answers exactly (instruction tasks).");
  r.DeclareGauge("fedge_dp_epsilon",
                 "Differential privacy: epsilon spent so far, at the run's "
                 "delta (--dp_delta).");
  r.DeclareGauge("fedge_dp_clip_norm",
                 "Differential privacy: the clip of the last committed round.");
  r.DeclareGauge("fedge_global_prune_ratio",
                 "Share of block units the global schedule has removed.");
  r.DeclareCounter("fedge_arm_choices_total",
                   "Bandit choices, by rank and pruning-ratio band.");
  r.DeclareGauge("fedge_device_reward", "Last bandit reward per device.");
}

const std::vector<std::string>& RoundLog::ClientColumns() {
  static const auto* columns = new std::vector<std::string>{"round",
                                                            "attempt",
                                                            "device",
                                                            "link",
                                                            "status",
                                                            "arm_prune_ratio",
                                                            "prune_ratio",
                                                            "rank",
                                                            "download_s",
                                                            "train_s",
                                                            "upload_s",
                                                            "wait_s",
                                                            "elapsed_s",
                                                            "bytes_down",
                                                            "bytes_up",
                                                            "raw_bytes_down",
                                                            "raw_bytes_up",
                                                            "peak_rss_mb",
                                                            "loss_before",
                                                            "loss_after",
                                                            "update_norm",
                                                            "loss_improvement",
                                                            "pruning_progress",
                                                            "update_importance",
                                                            "time_over_pace",
                                                            "pruning_cost",
                                                            "reward",
                                                            "cut",
                                                            "split_bytes_up",
                                                            "split_bytes_down",
                                                            "split_s",
                                                            "max_steps",
                                                            "secagg_mask_s"};
  return *columns;
}

const std::vector<std::string>& RoundLog::RoundColumns() {
  static const auto* columns = new std::vector<std::string>{
      "round", "attempt", "committed", "global_prune_ratio", "invited",
      "accepted", "stragglers", "declined", "dropped", "round_s", "aggregate_s",
      "mean_loss_after", "accuracy", "test_loss", "test_bits_per_byte",
      "test_exact_match", "eval_s", "dp_epsilon", "dp_clip_norm",
      // Secure aggregation's phases (SecureRecord); empty without.
      "secagg_advertise_s", "secagg_share_keys_s", "secagg_mask_s",
      "secagg_unmask_s", "secagg_sum_s", "secagg_bytes_up", "secagg_bytes_down",
      "secagg_excluded", "unix_time"};
  return *columns;
}

absl::StatusOr<std::unique_ptr<RoundLog>> RoundLog::Open(
    const std::string& dir, int64_t next_round, metrics::Registry* metrics) {
  if (absl::Status s = model::MakeDirectories(dir); !s.ok()) return s;
  auto clients = metrics::CsvWriter::OpenTruncated(
      dir + "/clients.csv", ClientColumns(), "round", next_round);
  if (!clients.ok()) return clients.status();
  auto rounds = metrics::CsvWriter::OpenTruncated(
      dir + "/rounds.csv", RoundColumns(), "round", next_round);
  if (!rounds.ok()) return rounds.status();
  return std::unique_ptr<RoundLog>(
      new RoundLog(std::move(*clients), std::move(*rounds), metrics));
}

absl::Status RoundLog::RecordRound(const RoundRecord& round) {
  for (const ClientRecord& c : round.clients) {
    const Timings& t = c.timings;
    absl::Status s = clients_->Write({I(c.round),
                                      I(round.attempt),
                                      c.device_id,
                                      c.link,
                                      c.status,
                                      F(c.arm.prune_ratio),
                                      F(c.combined_ratio),
                                      I(c.rank),
                                      F(t.download_s),
                                      F(t.train_s),
                                      F(t.upload_s),
                                      F(c.wait_s),
                                      F(c.elapsed_s),
                                      I(t.bytes_down),
                                      I(t.bytes_up),
                                      I(t.raw_bytes_down),
                                      I(t.raw_bytes_up),
                                      F(t.peak_rss_bytes / 1048576.0),
                                      F(c.loss_before),
                                      F(c.loss_after),
                                      F(c.update_norm),
                                      F(c.terms.loss_improvement),
                                      F(c.terms.pruning_progress),
                                      F(c.terms.update_importance),
                                      F(c.terms.time_over_pace),
                                      F(c.terms.pruning_cost),
                                      F(c.reward),
                                      I(c.cut),
                                      I(t.split_bytes_up),
                                      I(t.split_bytes_down),
                                      F(t.split_s),
                                      I(c.max_steps),
                                      F(t.secagg_mask_s)});
    if (!s.ok()) return s;
    if (metrics_ == nullptr) continue;
    const std::string link = c.link.empty() ? "unknown" : c.link;
    metrics_->Increment("fedge_updates_total",
                        {{"status", c.status}, {"link", link}});
    if (c.status != "accepted") continue;
    for (const auto& [phase, seconds] :
         {std::pair<const char*, double>{"download", t.download_s},
          {"train", t.train_s},
          {"upload", t.upload_s},
          {"wait", c.wait_s}}) {
      metrics_->Observe("fedge_phase_seconds",
                        {{"phase", phase}, {"link", link}}, seconds);
    }
    metrics_->Increment("fedge_bytes_total",
                        {{"direction", "up"}, {"link", link}},
                        static_cast<double>(t.bytes_up));
    metrics_->Increment("fedge_bytes_total",
                        {{"direction", "down"}, {"link", link}},
                        static_cast<double>(t.bytes_down));
    metrics_->Increment("fedge_raw_bytes_total", {{"direction", "up"}},
                        static_cast<double>(t.raw_bytes_up));
    metrics_->Increment("fedge_raw_bytes_total", {{"direction", "down"}},
                        static_cast<double>(t.raw_bytes_down));
    metrics_->Increment(
        "fedge_arm_choices_total",
        {{"rank", I(c.rank)},
         {"ratio_band", absl::StrFormat("%.1f", c.arm.prune_ratio)}});
    metrics_->Set("fedge_device_reward", {{"device", c.device_id}}, c.reward);
  }
  if (metrics_ != nullptr) {
    metrics_->Increment(
        "fedge_rounds_total",
        {{"outcome", round.committed ? "committed" : "retried"}});
    metrics_->Observe("fedge_round_seconds", {}, round.round_s);
    if (round.committed) {
      metrics_->Observe("fedge_aggregate_seconds", {}, round.aggregate_s);
    }
    metrics_->Set("fedge_global_prune_ratio", {}, round.global_ratio);
  }
  return absl::OkStatus();
}

absl::Status RoundLog::RecordEvaluation(
    const RoundRecord& round, const std::optional<model::EvalResult>& eval,
    double eval_seconds, absl::Time recorded) {
  if (round.dp_clip_norm > 0 && metrics_ != nullptr) {
    metrics_->Set("fedge_dp_epsilon", {}, round.dp_epsilon);
    metrics_->Set("fedge_dp_clip_norm", {}, round.dp_clip_norm);
  }
  if (eval && metrics_ != nullptr) {
    metrics_->Set("fedge_global_accuracy", {}, eval->accuracy);
    metrics_->Set("fedge_global_loss", {}, eval->loss);
    if (eval->bits_per_byte > 0) {
      metrics_->Set("fedge_global_bits_per_byte", {}, eval->bits_per_byte);
    }
    if (eval->exact_match >= 0) {
      metrics_->Set("fedge_global_exact_match", {}, eval->exact_match);
    }
  }
  const std::optional<SecureRecord>& secure = round.secure;
  // Masking's critical path: the slowest accepted device's.
  double mask_s = 0;
  for (const ClientRecord& c : round.clients) {
    if (c.status == "accepted") {
      mask_s = std::max(mask_s, c.timings.secagg_mask_s);
    }
  }
  return rounds_->Write(
      {I(round.round),
       I(round.attempt),
       round.committed ? "1" : "0",
       F(round.global_ratio),
       I(round.invited),
       I(round.accepted),
       I(round.stragglers),
       I(round.declined),
       I(round.dropped),
       F(round.round_s),
       F(round.aggregate_s),
       F(round.mean_loss_after),
       eval ? F(eval->accuracy) : "",
       eval ? F(eval->loss) : "",
       eval && eval->bits_per_byte > 0 ? F(eval->bits_per_byte) : "",
       eval && eval->exact_match >= 0 ? F(eval->exact_match) : "",
       eval ? F(eval_seconds) : "",
       round.dp_clip_norm > 0 ? F(round.dp_epsilon) : "",
       round.dp_clip_norm > 0 ? F(round.dp_clip_norm) : "",
       secure ? F(secure->advertise_s) : "",
       secure ? F(secure->share_keys_s) : "",
       secure ? F(mask_s) : "",
       secure ? F(secure->unmask_s) : "",
       secure ? F(secure->sum_s) : "",
       secure ? I(secure->bytes_up) : "",
       secure ? I(secure->bytes_down) : "",
       secure ? I(static_cast<int64_t>(secure->excluded.size())) : "",
       absl::StrFormat("%.3f",
                       absl::ToDoubleSeconds(recorded - absl::UnixEpoch()))});
}

const std::vector<std::string>& RefusalLog::Columns() {
  static const auto* columns = new std::vector<std::string>{
      "unix_time", "device_id", "round", "code", "message"};
  return *columns;
}

absl::StatusOr<std::unique_ptr<RefusalLog>> RefusalLog::Open(
    const std::string& dir, metrics::Registry* metrics) {
  if (absl::Status s = model::MakeDirectories(dir); !s.ok()) return s;
  auto csv = metrics::CsvWriter::Open(dir + "/refusals.csv", Columns());
  if (!csv.ok()) return csv.status();
  return std::unique_ptr<RefusalLog>(new RefusalLog(std::move(*csv), metrics));
}

void RefusalLog::Record(const Refusal& refusal) {
  const std::string code = absl::StatusCodeToString(refusal.status.code());
  if (metrics_ != nullptr) {
    metrics_->Increment("fedge_updates_refused_total", {{"code", code}});
  }
  absl::MutexLock lock(&mu_);
  absl::Status s = csv_->Write(
      {absl::StrFormat("%.3f", absl::ToUnixMillis(refusal.time) / 1e3),
       refusal.device_id, I(refusal.round), code,
       std::string(refusal.status.message())});
  if (!s.ok()) LOG(WARNING) << "refusals.csv: " << s;
}

}  // namespace fedge::coordinator
