#include "client/participant.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include <glog/logging.h>
#include <nlohmann/json.hpp>

#include "client/device_probe.h"
#include "client/local_round.h"
#include "client/secure_update.h"
#include "model/file_io.h"
#include "model/safetensors.h"
#include "model/threads.h"
#include "model/trainer.h"
#include "strategies/flat_layout.h"
#include "transport/secure_proto.h"
#include "transport/sha256.h"
#include "transport/task_proto.h"
#include "transport/tensor_proto.h"
#include "transport/transfer.h"

namespace fedge::client {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

bool Transient(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) ||
         absl::IsAborted(s) || absl::IsResourceExhausted(s);
}

// Streams a download into a temporary file next to `path`; Commit()
// renames it into place once the transfer's digest has been verified.
class FileSink final : public transport::ChunkSink {
 public:
  explicit FileSink(std::string path)
      : path_(std::move(path)), temp_(path_ + ".partial") {
    out_.open(temp_, std::ios::binary | std::ios::trunc);
  }
  absl::Status Write(int64_t, absl::string_view data) override {
    out_.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!out_) return absl::UnavailableError("cannot write " + temp_);
    return absl::OkStatus();
  }
  absl::Status Commit() {
    out_.close();
    std::error_code error;
    std::filesystem::rename(temp_, path_, error);
    if (error) {
      return absl::UnavailableError(absl::StrCat("cannot move ", temp_, " to ",
                                                 path_, ": ", error.message()));
    }
    return absl::OkStatus();
  }

 private:
  const std::string path_;
  const std::string temp_;
  std::ofstream out_;
};

}  // namespace

Participant::Participant(ParticipantOptions options, CoordinatorLink* link,
                         model::Dataset data)
    : options_(std::move(options)), link_(link), data_(std::move(data)) {}

absl::Status Participant::Retry(
    const char* what, const std::function<absl::Status(absl::Time)>& rpc,
    const std::atomic<bool>* abandon) {
  const absl::Time give_up = absl::Now() + options_.give_up_after;
  absl::Duration backoff = options_.initial_backoff;
  while (true) {
    const absl::Status status = rpc(absl::Now() + options_.rpc_deadline);
    if (status.ok() || !Transient(status)) return status;
    if (stop_ || (abandon != nullptr && *abandon)) {
      return absl::CancelledError("stopped");
    }
    if (absl::Now() + backoff > give_up) {
      return absl::UnavailableError(
          absl::StrCat(what, ": coordinator unreachable for ",
                       absl::FormatDuration(options_.give_up_after), ": ",
                       status.message()));
    }
    LOG(INFO) << what << " failed (" << status << "); retrying in "
              << absl::FormatDuration(backoff);
    Pause(backoff, abandon);
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

void Participant::Pause(absl::Duration duration,
                        const std::atomic<bool>* abandon) const {
  const absl::Time until = absl::Now() + duration;
  while (!stop_ && !(abandon != nullptr && *abandon) && absl::Now() < until) {
    std::this_thread::sleep_for(absl::ToChronoMilliseconds(
        std::min(until - absl::Now(), absl::Milliseconds(50))));
  }
}

absl::Status Participant::Register() {
  const DeviceProbe probe = ProbeDevice(options_.run_benchmark);
  v1::RegisterRequest request;
  v1::DeviceInfo* d = request.mutable_device();
  d->set_device_id(options_.device_id);
  d->set_cores(probe.cores);
  d->set_memory_total_bytes(probe.memory_total_bytes);
  d->set_memory_available_bytes(probe.memory_available_bytes);
  d->set_memory_budget_bytes(options_.memory_budget_bytes);
  d->set_arch(probe.arch);
  d->set_cpu_model(probe.cpu_model);
  d->set_benchmark_gflops(probe.benchmark_gflops);
  d->set_link_type(transport::ParseLinkType(options_.link));
  d->set_software_version("fedge " FEDGE_VERSION);
  transport::IdentityToProto(options_.task, request.mutable_task());
  absl::Status status = Retry("Register", [&](absl::Time deadline) {
    return link_->Register(request, deadline, &registration_);
  });
  if (!status.ok()) return status;
  return task::CheckIdentity(transport::IdentityFromProto(registration_.task()),
                             options_.task);
}

absl::Status Participant::EnsureBase() {
  const std::string& digest = registration_.base_model_digest();
  if (base_ && digest == cached_digest_) return absl::OkStatus();
  if (absl::Status s = model::MakeDirectories(options_.cache_dir); !s.ok()) {
    return s;
  }
  const std::string path =
      absl::StrCat(options_.cache_dir, "/base-", digest, ".safetensors");
  absl::StatusOr<std::string> have = transport::Sha256OfFile(path);
  if (have.ok() && transport::ToHex(*have) != digest) {
    LOG(WARNING) << "cached base " << path
                 << " does not match its digest; fetching it again";
    Say("cache_corrupt", 0, {},
        "cached base model is corrupt; fetching it again");
    std::filesystem::remove(path);
    have = absl::NotFoundError("corrupt");
  }
  if (!have.ok()) {
    const auto start = Clock::now();
    FileSink sink(path);
    // Chunks of the coordinator's choosing (0), not its largest: each
    // stream holds one chunk twice there, and every device fetches the
    // base at once when a federation starts.
    absl::StatusOr<transport::TransferStats> stats =
        link_->Download(options_.device_id, registration_.base_transfer_id(),
                        /*chunk_bytes=*/0, &sink);
    if (!stats.ok()) return stats.status();
    if (absl::Status s = sink.Commit(); !s.ok()) return s;
    const double seconds = Since(start);
    Say("base_downloaded", 0,
        {{"bytes", static_cast<double>(stats->bytes)}, {"seconds", seconds}},
        absl::StrFormat("base model %.1f MB downloaded in %.1f s",
                        stats->bytes / 1e6, seconds));
  }
  // Only the header is read now; each round reads its kept slices.
  absl::StatusOr<std::unique_ptr<model::SafetensorsReader>> reader =
      model::SafetensorsReader::Open(path);
  if (!reader.ok()) return reader.status();
  base_ = *std::move(reader);
  cached_digest_ = digest;
  return absl::OkStatus();
}

absl::Status Participant::Decline(const v1::Task& task, int64_t estimate) {
  const std::string what = absl::StrFormat(
      "round %d needs about %.0f MiB (pruning %.2f, rank %d), over the "
      "memory budget of %.0f MiB",
      task.round(), estimate / 1048576.0, task.prune_ratio(),
      task.lora().rank(), options_.memory_budget_bytes / 1048576.0);
  Say("declined", task.round(),
      {{"estimated_bytes", static_cast<double>(estimate)},
       {"budget_bytes", static_cast<double>(options_.memory_budget_bytes)}},
      "declined " + what);
  v1::DeclineTaskRequest request;
  request.set_device_id(options_.device_id);
  request.set_round(task.round());
  request.set_nonce(task.nonce());
  request.set_reason(v1::DECLINE_REASON_MEMORY_BUDGET);
  request.set_estimated_bytes(estimate);
  request.set_budget_bytes(options_.memory_budget_bytes);
  absl::Status status = Retry("DeclineTask", [&](absl::Time deadline) {
    return link_->DeclineTask(request, deadline);
  });
  // FAILED_PRECONDITION: the round closed meanwhile; nothing to decline.
  if (!status.ok() && !absl::IsFailedPrecondition(status)) return status;
  return absl::OkStatus();
}

void Participant::Say(absl::string_view event, int64_t round,
                      const std::vector<std::pair<const char*, double>>& fields,
                      const std::string& text) const {
  using Progress = ParticipantOptions::Progress;
  if (options_.progress == Progress::kNone) return;
  if (options_.progress == Progress::kText) {
    std::printf("%s: %s\n", options_.device_id.c_str(), text.c_str());
  } else {
    nlohmann::json line = {{"time", absl::ToUnixMicros(absl::Now()) / 1e6},
                           {"device", options_.device_id},
                           {"event", std::string(event)},
                           {"message", text}};
    if (round > 0) line["round"] = round;
    for (const auto& [key, value] : fields) line[key] = value;
    std::printf("%s\n", line.dump().c_str());
  }
  std::fflush(stdout);
}

void Participant::ReleaseHeap() {
  model::ReleaseFreeHeap();
  heap_released_ = true;
}

void Participant::Heartbeat(int64_t round, const char* phase, double progress) {
  const absl::Duration interval = absl::Milliseconds(
      std::max<int64_t>(1000, registration_.heartbeat_interval_ms()));
  if (absl::Now() - last_heartbeat_ < interval) return;
  last_heartbeat_ = absl::Now();
  v1::HeartbeatRequest request;
  request.set_device_id(options_.device_id);
  request.set_round(round);
  request.set_phase(phase);
  request.set_progress(progress);
  // Best effort: a lost heartbeat is not an error.
  (void)link_->Heartbeat(request, absl::Now() + absl::Seconds(5));
}

absl::StatusOr<model::NamedTensors> Participant::DownloadPayload(
    const v1::Task& task, RoundReport& report) {
  const auto start = Clock::now();
  absl::StatusOr<model::NamedTensors> payload =
      absl::FailedPreconditionError("no compressed change to apply");
  if (!task.delta_transfer_id().empty() && held_.has_value() &&
      held_->sha256 == task.delta_base_sha256()) {
    payload = RebuildFromDelta(task, report);
    if (!payload.ok()) {
      if (stop_) return payload.status();
      // Still correct, only larger: the whole payload is always offered.
      Say("download", task.round(), {},
          absl::StrCat(
              "round ", task.round(), " compressed download unusable (",
              payload.status().message(), "); downloading the whole model"));
    }
  }
  if (!payload.ok()) {
    transport::TensorSink sink;
    absl::StatusOr<transport::TransferStats> down =
        link_->Download(options_.device_id, task.adapter_transfer_id(),
                        task.chunk_bytes(), &sink);
    if (!down.ok()) return down.status();
    payload = sink.Take();
    if (!payload.ok()) return payload.status();
    report.bytes_down += down->bytes;
    report.raw_bytes_down = down->bytes;
    report.transfer_resumes += down->resumes;
  }
  report.download_s =
      std::chrono::duration<double>(Clock::now() - start).count();
  held_.reset();
  if (task.dense() && !task.payload_sha256().empty()) {
    // Training copies the weights into its model; these stay as received.
    held_ = Held{task.payload_sha256(), *payload};
  }
  return payload;
}

absl::StatusOr<model::NamedTensors> Participant::RebuildFromDelta(
    const v1::Task& task, RoundReport& report) {
  transport::StringSink sink;
  absl::StatusOr<transport::TransferStats> down = link_->Download(
      options_.device_id, task.delta_transfer_id(), task.chunk_bytes(), &sink);
  if (!down.ok()) return down.status();
  report.bytes_down += down->bytes;
  report.transfer_resumes += down->resumes;
  absl::StatusOr<model::NamedTensors> change =
      transport::DecodeUpdate(sink.bytes());
  if (!change.ok()) return change.status();
  if (change->size() != held_->tensors.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the change has ", change->size(), " tensors, the model ",
                     held_->tensors.size()));
  }
  model::NamedTensors rebuilt;
  for (const auto& item : held_->tensors) {
    const at::Tensor* d = change->find(item.key());
    if (d == nullptr || d->sizes() != item.value().sizes()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the change lacks or reshapes tensor '", item.key(), "'"));
    }
    rebuilt.insert(item.key(), item.value() + *d);
  }
  // The coordinator applied the same decoded values to the same weights;
  // the digest proves it (a different float rounding would not match).
  absl::StatusOr<std::unique_ptr<transport::SafetensorsSource>> source =
      transport::SafetensorsSource::Create(rebuilt);
  if (!source.ok()) return source.status();
  absl::StatusOr<transport::TransferInfo> info = transport::DescribePayload(
      **source, "rebuilt", 0, transport::PayloadFormat::kSafetensors);
  if (!info.ok()) return info.status();
  if (info->sha256 != task.payload_sha256()) {
    return absl::FailedPreconditionError(
        "the rebuilt weights do not hash to the round's payload digest");
  }
  // What the whole payload would have moved.
  report.raw_bytes_down = (*source)->size();
  report.delta_download = true;
  return rebuilt;
}

Participant::KeyExchange::~KeyExchange() {
  abandon = true;
  if (done.valid()) done.wait();
}

absl::StatusOr<std::unique_ptr<Participant::KeyExchange>>
Participant::StartKeyExchange(const v1::Task& task) {
  auto keys = std::make_unique<KeyExchange>();
  KeyExchange* k = keys.get();
  absl::StatusOr<std::unique_ptr<SecureExchange>> exchange =
      SecureExchange::Create(
          options_.device_id, task,
          [this, k](const v1::SecureRequest& request,
                    v1::SecureResponse* reply) {
            return Retry(
                "Secure",
                [&](absl::Time deadline) {
                  return link_->Secure(request, deadline, reply);
                },
                &k->abandon);
          },
          [this, k](absl::Duration pause) {
            Pause(pause, &k->abandon);
            return !stop_ && !k->abandon;
          });
  if (!exchange.ok()) return exchange.status();
  keys->exchange = *std::move(exchange);
  keys->done = std::async(std::launch::async,
                          [k] { return k->exchange->ExchangeKeys(); });
  return keys;
}

absl::Status Participant::AwaitKeys(const v1::Task& task, KeyExchange& keys,
                                    RoundReport& report) {
  const auto start = Clock::now();
  while (keys.done.wait_for(std::chrono::milliseconds(50)) !=
         std::future_status::ready) {
    Heartbeat(task.round(), "secure", 1.0);
  }
  if (absl::Status s = keys.done.get(); !s.ok()) return s;
  report.secure_s = Since(start);
  const SecureExchange& e = *keys.exchange;
  Say("secure", task.round(),
      {{"wait_s", report.secure_s}, {"phase_wait_s", e.wait_s()}},
      absl::StrFormat("round %d secure aggregation: keys exchanged with %d "
                      "neighbours (phases %.2f s, %.2f s of it after "
                      "training)",
                      task.round(), e.spec().parameters.neighbours, e.wait_s(),
                      report.secure_s));
  return absl::OkStatus();
}

absl::StatusOr<std::string> Participant::MaskedChange(
    const v1::Task& task, SecureExchange& secure,
    const model::NamedTensors& update, const model::NamedTensors& sent,
    double* change_norm) {
  absl::StatusOr<strategies::FlatLayout> layout =
      strategies::FlatLayout::FromShapes(secure.spec().layout);
  if (!layout.ok()) return layout.status();
  absl::StatusOr<std::vector<float>> change =
      SecureChange(registration_.model_config_json(),
                   transport::PlanFromProto(task.plan()), task.lora().alpha(),
                   update, sent, *layout, secure.spec().clip_norm, change_norm);
  if (!change.ok()) return change.status();
  absl::StatusOr<std::vector<uint32_t>> masked = secure.Mask(*change);
  if (!masked.ok()) return masked.status();
  return transport::WordsToBytes(*masked);
}

absl::StatusOr<RoundReport> Participant::RunRound(const v1::Task& task) {
  RoundReport report;
  report.round = task.round();
  report.prune_ratio = task.prune_ratio();
  report.rank = task.lora().rank();
  const auto round_start = Clock::now();
  // LibTorch frees a round's activations into malloc's arenas, which keep
  // them resident (ParticipantOptions::release_memory_after).
  if (options_.release_memory_after <= absl::ZeroDuration()) {
    ReleaseHeap();
  }
  ResetPeakRss();

  auto enter = [&](const char* phase) {
    if (on_phase) on_phase(task.round(), phase);
  };
  // 0. Secure aggregation: the key exchange with the round's other
  // devices, beside the download and training.
  std::unique_ptr<KeyExchange> keys;
  if (task.has_secure()) {
    enter("secure");
    absl::StatusOr<std::unique_ptr<KeyExchange>> started =
        StartKeyExchange(task);
    if (!started.ok()) return started.status();
    keys = *std::move(started);
  }

  // 1. The payload: the sub-model's adapter (LoRA) or weights (dense).
  enter("download");
  absl::StatusOr<model::NamedTensors> payload = DownloadPayload(task, report);
  if (!payload.ok()) return payload.status();

  // 2-3. The physically pruned sub-model, trained locally.
  enter("build");
  LocalHooks hooks;
  // Refuse a task that would not fit rather than be killed by the OS.
  hooks.admit = [&](int64_t estimated_bytes) {
    const int64_t budget = options_.memory_budget_bytes;
    // The admission bound counts the kept free heap as if training could
    // not reuse it, since part of it may not be resident (an older
    // release); near the budget it gives that memory back first.
    if (budget > 0 && RssBytes() + estimated_bytes > budget) ReleaseHeap();
    const int64_t resident = RssBytes();
    // The prediction, reported, lets training take what was kept.
    report.estimated_peak_bytes = PredictedPeakBytes(
        resident, heap_released_ ? 0 : model::FreeHeapBytes(), estimated_bytes);
    return budget <= 0 || resident + estimated_bytes <= budget;
  };
  hooks.on_train_start = [&] {
    heap_released_ = false;
    enter("train");
  };
  hooks.on_progress = [&](const model::TrainProgress& p) {
    const double fraction =
        p.total_steps > 0 ? static_cast<double>(p.step) / p.total_steps : 0;
    Heartbeat(task.round(), "train", fraction);
    Say("train", task.round(), {{"progress", fraction}, {"loss", p.loss}},
        absl::StrFormat("round %d train %3.0f%% loss %.4f", task.round(),
                        100 * fraction, p.loss));
  };
  std::unique_ptr<DeviceSplitLink> split_link;
  if (task.split().cut_layer() > 0) {
    absl::StatusOr<std::unique_ptr<DeviceSplitLink>> link =
        link_->OpenSplit(options_.device_id, task,
                         absl::FromUnixMillis(task.deadline_unix_ms()));
    if (!link.ok()) return link.status();
    split_link = *std::move(link);
    hooks.split_link = split_link.get();
  }
  absl::StatusOr<LocalResult> local = TrainLocally(
      task, registration_.model_config_json(), *base_, *payload, data_, hooks);
  if (split_link != nullptr) {
    report.split_bytes_up = split_link->bytes_up();
    report.split_bytes_down = split_link->bytes_down();
    report.split_s = split_link->seconds();
  }
  if (!local.ok()) return local.status();
  if (local->declined) {
    if (absl::Status s = Decline(task, report.estimated_peak_bytes); !s.ok()) {
      return s;
    }
    report.declined = true;
    return report;
  }
  report.build_s = local->build_s;
  report.train_s = local->train_s;
  report.examples = local->examples;
  report.loss_before = local->loss_before;
  report.loss_after = local->loss_after;
  report.split_steps = local->split_steps;
  if (stop_) return absl::CancelledError("stopped after training");
  SecureExchange* secure = nullptr;
  if (keys != nullptr) {
    if (absl::Status s = AwaitKeys(task, *keys, report); !s.ok()) return s;
    secure = keys->exchange.get();
  }

  // 4. Encode the update: with the task's codec, or, under secure
  // aggregation, as the masked change.
  enter("encode");
  const auto phase = Clock::now();
  std::string upload_bytes;
  transport::PayloadFormat format = transport::PayloadFormat::kEncodedUpdate;
  double change_norm = 0;
  if (secure != nullptr) {
    absl::StatusOr<std::string> masked =
        MaskedChange(task, *secure, local->update, *payload, &change_norm);
    if (!masked.ok()) return masked.status();
    upload_bytes = *std::move(masked);
    format = transport::PayloadFormat::kMaskedWords;
    report.raw_bytes_up = static_cast<int64_t>(upload_bytes.size());
  } else {
    const transport::CodecOptions codec = transport::UploadCodecOptions(task);
    absl::StatusOr<model::NamedTensors> update =
        transport::UpdateToSend(local->update, *payload, codec.codec);
    if (!update.ok()) return update.status();
    absl::StatusOr<transport::EncodedPayload> encoded =
        transport::EncodeUpdate(*update, codec, &feedback_);
    if (!encoded.ok()) return encoded.status();
    upload_bytes = std::move(encoded->bytes);
    report.raw_bytes_up = encoded->raw_bytes;
  }
  report.encode_s = Since(phase);
  if (options_.compute_slowdown > 1) {
    report.dilation_s = (options_.compute_slowdown - 1) *
                        (report.build_s + report.train_s + report.encode_s);
    const absl::Time until = absl::Now() + absl::Seconds(report.dilation_s);
    while (!stop_ && absl::Now() < until) {
      Heartbeat(task.round(), "train", 1.0);
      Pause(std::min(absl::Seconds(1), until - absl::Now()));
    }
    if (stop_)
      return absl::CancelledError("stopped while emulating a slower board");
    report.train_s += report.dilation_s;
  }

  // 5. Upload and report.
  enter("upload");
  const transport::StringSource source(std::move(upload_bytes));
  absl::StatusOr<transport::TransferInfo> info = transport::DescribePayload(
      source, task.upload_transfer_id(), report.raw_bytes_up, format);
  if (!info.ok()) return info.status();
  absl::StatusOr<transport::TransferStats> up =
      link_->Upload(options_.device_id, *info, source, task.chunk_bytes());
  if (!up.ok()) return up.status();
  report.upload_s = up->seconds;
  report.transfer_resumes += up->resumes;
  report.bytes_up = source.size();
  report.peak_rss_bytes = PeakRssBytes();

  v1::SubmitUpdateRequest request;
  v1::UpdateReport* r = request.mutable_report();
  r->set_device_id(options_.device_id);
  r->set_round(task.round());
  r->set_nonce(task.nonce());
  r->set_upload_transfer_id(task.upload_transfer_id());
  r->set_num_examples(report.examples);
  r->set_loss_before(report.loss_before);
  r->set_loss_after(report.loss_after);
  v1::Timings* timings = r->mutable_timings();
  timings->set_download_s(report.download_s);
  // Building the sub-model and encoding are local compute: they count as
  // training time in the round breakdown.
  timings->set_train_s(report.build_s + report.train_s + report.encode_s);
  timings->set_upload_s(report.upload_s);
  timings->set_bytes_down(report.bytes_down);
  timings->set_bytes_up(report.bytes_up);
  timings->set_raw_bytes_down(report.raw_bytes_down);
  timings->set_raw_bytes_up(report.raw_bytes_up);
  timings->set_peak_rss_bytes(report.peak_rss_bytes);
  timings->set_split_bytes_up(report.split_bytes_up);
  timings->set_split_bytes_down(report.split_bytes_down);
  timings->set_split_s(report.split_s);
  // Under secure aggregation the encoding step is the masking (on an
  // emulated slower board, as slow as its training).
  if (secure != nullptr) {
    timings->set_secagg_mask_s(report.encode_s *
                               std::max(1.0, options_.compute_slowdown));
  }
  r->set_split_steps(report.split_steps);
  r->set_change_norm(change_norm);
  // Under secure aggregation the coordinator learns nothing of one
  // device's update beyond its change's norm: no importance scores.
  if (secure == nullptr && !local->importance.is_empty()) {
    if (absl::Status s =
            transport::ToProto(local->importance, r->mutable_importance());
        !s.ok()) {
      return s;
    }
  }
  enter("submit");
  v1::SubmitUpdateResponse response;
  absl::Status submitted = Retry("SubmitUpdate", [&](absl::Time deadline) {
    return link_->SubmitUpdate(request, deadline, &response);
  });
  // ALREADY_EXISTS after a retried call whose first answer was lost: the
  // coordinator has it.
  if (!submitted.ok() && !absl::IsAlreadyExists(submitted)) return submitted;
  report.accepted = true;
  if (secure != nullptr) {
    enter("unmask");
    // The update is in; a round that unmasks without this device's shares
    // still commits while enough neighbours answer.
    if (absl::Status s = secure->Unmask(); !s.ok()) {
      if (absl::IsCancelled(s)) return s;
      LOG(WARNING) << options_.device_id << ": round " << task.round()
                   << " unmasking shares not posted: " << s;
    }
    report.secure_phase_wait_s = secure->wait_s();
    report.secure_bytes_up = secure->bytes_up();
    report.secure_bytes_down = secure->bytes_down();
  }
  report.total_s = Since(round_start);
  return report;
}

absl::Status Participant::Run() {
  Say("start", 0, {{"examples", static_cast<double>(data_.size())}},
      absl::StrFormat("%d local examples; registering", data_.size()));
  if (absl::Status s = Register(); !s.ok()) return s;
  if (absl::Status s = EnsureBase(); !s.ok()) return s;
  int64_t done = 0;
  // The last task done, by nonce: a coordinator that restarted from a
  // checkpoint hands out the same round number again with a new nonce.
  std::string last_nonce;
  absl::Duration backoff = options_.initial_backoff;
  // Since when no round ran, and whether what rounds freed went back.
  absl::Time idle_since = absl::Now();
  bool released = false;
  while (!stop_) {
    v1::GetTaskRequest request;
    request.set_device_id(options_.device_id);
    request.set_session_id(registration_.session_id());
    v1::GetTaskResponse response;
    absl::Status status = Retry("GetTask", [&](absl::Time deadline) {
      return link_->GetTask(request, deadline, &response);
    });
    if (absl::IsOutOfRange(status)) {
      Say("finished", 0, {{"rounds", static_cast<double>(done)}},
          absl::StrFormat("the federation finished; %d rounds submitted",
                          done));
      return absl::OkStatus();
    }
    if (absl::IsNotFound(status)) {  // The coordinator forgot us: rejoin.
      if (absl::Status s = Register(); !s.ok()) return s;
      continue;
    }
    if (!status.ok()) return status;
    if (!response.has_task() || response.task().nonce() == last_nonce) {
      if (!released &&
          absl::Now() - idle_since >= options_.release_memory_after) {
        ReleaseHeap();
        released = true;
      }
      const int64_t wait_ms = std::max<int64_t>(response.retry_after_ms(), 50);
      Pause(absl::Milliseconds(wait_ms));
      continue;
    }
    absl::StatusOr<RoundReport> round = RunRound(response.task());
    idle_since = absl::Now();
    released = false;
    if (round.ok() && round->declined) {  // Over the budget: next round.
      last_nonce = response.task().nonce();
      if (on_decline) on_decline(round->round);
      continue;
    }
    if (!round.ok()) {
      if (absl::IsCancelled(round.status())) break;
      LOG(WARNING) << options_.device_id << ": round "
                   << response.task().round()
                   << " abandoned: " << round.status();
      Say("abandoned", response.task().round(), {},
          absl::StrCat("round ", response.task().round(),
                       " abandoned: ", round.status().ToString()));
      Pause(backoff);
      backoff = std::min(backoff * 2, options_.max_backoff);
      continue;
    }
    backoff = options_.initial_backoff;
    last_nonce = response.task().nonce();
    ++done;
    const RoundReport& r = *round;
    Say("submitted", r.round,
        {{"prune_ratio", r.prune_ratio},
         {"rank", static_cast<double>(r.rank)},
         {"download_s", r.download_s},
         {"train_s", r.build_s + r.train_s + r.encode_s},
         {"upload_s", r.upload_s},
         {"bytes_down", static_cast<double>(r.bytes_down)},
         {"bytes_up", static_cast<double>(r.bytes_up)},
         {"loss_before", r.loss_before},
         {"loss_after", r.loss_after},
         {"peak_rss_bytes", static_cast<double>(r.peak_rss_bytes)}},
        absl::StrFormat("round %d submitted: p=%.2f r=%d, down %.2f s, train "
                        "%.2f s, up %.2f s, %.1f kB up, loss %.4f -> %.4f",
                        r.round, r.prune_ratio, r.rank, r.download_s, r.train_s,
                        r.upload_s, r.bytes_up / 1e3, r.loss_before,
                        r.loss_after));
    if (on_round) on_round(*round);
    if (options_.max_rounds > 0 && done >= options_.max_rounds) {
      return absl::OkStatus();
    }
  }
  return absl::CancelledError("stopped");
}

}  // namespace fedge::client
