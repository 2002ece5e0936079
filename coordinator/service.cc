#include "coordinator/service.h"

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#include "transport/secure_proto.h"
#include "transport/split_proto.h"
#include "transport/status_convert.h"
#include "transport/task_proto.h"
#include "transport/tensor_proto.h"

namespace fedge::coordinator {
namespace {

Timings TimingsFromProto(const v1::Timings& t) {
  Timings out;
  out.download_s = t.download_s();
  out.train_s = t.train_s();
  out.upload_s = t.upload_s();
  out.eval_s = t.eval_s();
  out.bytes_down = t.bytes_down();
  out.bytes_up = t.bytes_up();
  out.raw_bytes_down = t.raw_bytes_down();
  out.raw_bytes_up = t.raw_bytes_up();
  out.peak_rss_bytes = t.peak_rss_bytes();
  out.split_bytes_up = t.split_bytes_up();
  out.split_bytes_down = t.split_bytes_down();
  out.split_s = t.split_s();
  out.secagg_mask_s = t.secagg_mask_s();
  return out;
}

}  // namespace

// One device's split stream: step messages in, gradients out, strictly
// alternating; a `finish` message settles the last step and is answered
// with an acknowledgement. The first message's device, round and nonce
// bind the stream; later messages must repeat them.
class SplitReactor final
    : public grpc::ServerBidiReactor<v1::SplitMessage, v1::SplitMessage> {
 public:
  SplitReactor(CoordinatorService* service,
               grpc::CallbackServerContext* context)
      : service_(service),
        context_(context),
        watch_(service->watchdog().Watch(context)) {
    absl::StatusOr<transport::Codec> codec =
        transport::ParseCodec(service_->engine_options_.split.activation_codec);
    codec_.codec = codec.value_or(transport::Codec::kFloat16);
    codec_.zstd = false;
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    service_->watchdog().Touch(watch_);
    if (!ok) {  // The device closed its side without finishing.
      Finish(grpc::Status::OK);
      return;
    }
    // The step on a worker; the stream reads nothing until it answers, so
    // in_ and out_ are the worker's alone meanwhile.
    service_->update_workers_->Schedule([this] {
      absl::Status status = Handle();
      if (!status.ok()) {
        Finish(transport::ToGrpcStatus(status));
        return;
      }
      StartWrite(&out_);
    });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "split stream broken"));
    } else if (finished_) {
      Finish(grpc::Status::OK);
    } else {
      StartRead(&in_);
    }
  }

  void OnDone() override {
    service_->watchdog().Forget(watch_);
    delete this;
  }

 private:
  absl::Status Handle() {
    if (device_id_.empty()) {
      if (absl::Status s = service_->CheckIdentity(context_, in_.device_id());
          !s.ok()) {
        return s;
      }
      device_id_ = in_.device_id();
      round_ = in_.round();
      nonce_ = in_.nonce();
    } else if (in_.device_id() != device_id_ || in_.round() != round_ ||
               in_.nonce() != nonce_) {
      return absl::InvalidArgumentError(
          "a split stream carries one device's task only");
    }
    const absl::Time now = service_->options_.clock();
    out_.Clear();
    if (in_.finish()) {
      finished_ = true;
      out_.set_finish(true);
      return service_->engine_->SplitFinish(device_id_, round_, nonce_,
                                            in_.applied_steps(), now);
    }
    absl::StatusOr<split::StepRequest> request =
        transport::StepRequestFromProto(in_, service_->options_.decode_limits);
    if (!request.ok()) return request.status();
    absl::StatusOr<split::StepReply> reply =
        service_->engine_->SplitStep(device_id_, round_, nonce_, *request, now);
    if (!reply.ok()) return reply.status();
    out_.set_step(request->step);
    return transport::StepReplyToProto(*reply, codec_, &out_);
  }

  CoordinatorService* const service_;
  grpc::CallbackServerContext* const context_;
  const int64_t watch_;
  transport::CodecOptions codec_;
  std::string device_id_;
  int64_t round_ = 0;
  std::string nonce_;
  bool finished_ = false;
  v1::SplitMessage in_, out_;
};

grpc::ServerBidiReactor<v1::SplitMessage, v1::SplitMessage>*
CoordinatorService::Split(grpc::CallbackServerContext* context) {
  return new SplitReactor(this, context);
}

CoordinatorService::CoordinatorService(Engine* engine,
                                       transport::TransferStore* store,
                                       const EngineOptions& engine_options,
                                       ServiceOptions options,
                                       metrics::Registry* metrics)
    : TransferService(store, options.chunk_bytes, options.stream_idle_timeout),
      engine_(engine),
      store_(store),
      engine_options_(engine_options),
      options_([&] {
        if (!options.clock) options.clock = [] { return absl::Now(); };
        return std::move(options);
      }()),
      metrics_(metrics),
      registrations_(options_.max_registrations_per_s,
                     options_.registration_burst),
      decode_budget_(options_.decode_budget_bytes),
      task_workers_(std::make_unique<WorkerPool>(options_.workers)),
      update_workers_(std::make_unique<WorkerPool>(options_.workers)) {}

absl::Status CoordinatorService::AuthorizeUpload(
    grpc::CallbackServerContext* context, const std::string& owner) const {
  return CheckIdentity(context, owner);
}

absl::Status CoordinatorService::CheckIdentity(
    grpc::CallbackServerContext* context, const std::string& device_id) const {
  if (!options_.require_peer_identity) return absl::OkStatus();
  std::shared_ptr<const grpc::AuthContext> auth = context->auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) {
    return absl::PermissionDeniedError(
        "mutual TLS required: the peer presented no client certificate");
  }
  for (const grpc::string_ref& name :
       auth->FindPropertyValues("x509_common_name")) {
    if (std::string(name.data(), name.size()) == device_id) {
      return absl::OkStatus();
    }
  }
  return absl::PermissionDeniedError(
      absl::StrCat("the client certificate does not name device ", device_id));
}

void CoordinatorService::Answer(grpc::ServerUnaryReactor* reactor,
                                const char* method,
                                const absl::Status& status) {
  if (metrics_ != nullptr) {
    metrics_->Increment("fedge_rpc_total",
                        {{"method", method},
                         {"code", absl::StatusCodeToString(status.code())}});
  }
  reactor->Finish(transport::ToGrpcStatus(status));
}

grpc::ServerUnaryReactor* CoordinatorService::Finish(
    grpc::CallbackServerContext* context, const char* method,
    const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Answer(reactor, method, status);
  return reactor;
}

grpc::ServerUnaryReactor* CoordinatorService::Register(
    grpc::CallbackServerContext* context, const v1::RegisterRequest* request,
    v1::RegisterResponse* response) {
  const v1::DeviceInfo& d = request->device();
  absl::Status status = CheckIdentity(context, d.device_id());
  if (status.ok()) {
    status =
        request->has_task()
            ? task::CheckIdentity(options_.task,
                                  transport::IdentityFromProto(request->task()))
            : absl::FailedPreconditionError(
                  "the request carries no task identity "
                  "(RegisterRequest.task); the coordinator's task is '" +
                  options_.task.name + "'");
  }
  if (status.ok() && !registrations_.Allow(options_.clock())) {
    status = absl::ResourceExhaustedError(absl::StrFormat(
        "more than %g registrations a second; retry in a moment",
        options_.max_registrations_per_s));
  }
  if (status.ok()) {
    DeviceFacts facts;
    facts.device_id = d.device_id();
    facts.cores = d.cores();
    facts.memory_total_bytes = d.memory_total_bytes();
    facts.memory_available_bytes = d.memory_available_bytes();
    facts.memory_budget_bytes = d.memory_budget_bytes();
    facts.arch = d.arch();
    facts.cpu_model = d.cpu_model();
    facts.benchmark_gflops = d.benchmark_gflops();
    facts.link = transport::LinkName(d.link_type());
    facts.software_version = d.software_version();
    absl::StatusOr<std::string> session =
        engine_->Register(facts, options_.clock());
    status = session.status();
    if (session.ok()) {
      response->set_session_id(*session);
      response->set_heartbeat_interval_ms(options_.heartbeat_interval_ms);
      response->set_max_chunk_bytes(store_->limits().max_chunk_bytes);
      response->set_base_transfer_id(options_.base_transfer_id);
      response->set_base_model_digest(options_.base_digest);
      response->set_model_config_json(options_.model_config_json);
      transport::IdentityToProto(options_.task, response->mutable_task());
    }
  }
  return Finish(context, "Register", status);
}

transport::CodecOptions UploadCodec(const EngineOptions& engine) {
  transport::CodecOptions codec;
  // EngineOptions::Validate checked the codec name.
  codec.codec = transport::ParseCodec(engine.upload_codec)
                    .value_or(transport::Codec::kInt8Row);
  codec.zstd = engine.upload_zstd;
  codec.topk_fraction = engine.topk_fraction;
  return codec;
}

v1::Task TaskToProto(const Task& task, const EngineOptions& engine,
                     const std::string& base_digest, int64_t chunk_bytes) {
  v1::Task out;
  out.set_round(task.round);
  out.set_nonce(task.nonce);
  out.set_base_model_digest(base_digest);
  transport::PlanToProto(task.plan, out.mutable_plan());
  const bool dense = engine.mode == Mode::kDense;
  out.set_dense(dense);
  if (!dense) {
    v1::LoraSpec* lora = out.mutable_lora();
    lora->set_rank(static_cast<int32_t>(task.rank));
    lora->set_alpha(engine.lora.alpha);
    lora->set_dropout(engine.lora.dropout);
    for (const std::string& t : engine.lora.target_modules) {
      lora->add_target_modules(t);
    }
  }
  const TrainSpec& t = engine.train;
  v1::TrainConfig* train = out.mutable_train();
  train->set_epochs(t.epochs);
  train->set_max_steps(task.max_steps);
  train->set_batch_size(t.batch_size);
  train->set_learning_rate(task.learning_rate);
  train->set_weight_decay(t.weight_decay);
  train->set_max_grad_norm(t.max_grad_norm);
  train->set_fedprox_mu(t.fedprox_mu);
  train->set_balanced_softmax(t.balanced_softmax);
  train->set_constant_lr_in_round(t.in_round_schedule == "constant");
  train->set_local_dp_clip(t.local_dp_clip);
  train->set_local_dp_noise_multiplier(t.local_dp_noise_multiplier);
  train->set_seed(task.train_seed);
  const transport::CodecOptions codec = UploadCodec(engine);
  out.set_upload_codec(transport::CodecToProto(codec.codec));
  out.set_upload_compression(codec.zstd ? v1::COMPRESSION_ZSTD
                                        : v1::COMPRESSION_NONE);
  out.set_topk_fraction(codec.topk_fraction);
  out.set_deadline_unix_ms(absl::ToUnixMillis(task.deadline));
  out.set_adapter_transfer_id(task.payload_id);
  out.set_upload_transfer_id(task.payload_id + "/update");
  out.set_chunk_bytes(chunk_bytes);
  out.set_prune_ratio(task.combined_ratio);
  if (task.cut > 0) {
    v1::SplitSpec* split = out.mutable_split();
    split->set_cut_layer(static_cast<int32_t>(task.cut));
    // EngineOptions::Validate checked the codec name.
    split->set_activation_codec(transport::CodecToProto(
        transport::ParseCodec(engine.split.activation_codec)
            .value_or(transport::Codec::kFloat16)));
    split->set_local_loss_steps(
        static_cast<int32_t>(engine.split.local_loss_steps));
    split->set_dataset_keep_fraction(engine.split.keep_fraction);
  }
  if (task.secure) {
    transport::SecureSpec spec;
    spec.parameters = task.secure->parameters;
    spec.index = task.secure->index;
    spec.clip_norm = task.secure->clip_norm;
    spec.noise_stddev = task.secure->noise_stddev;
    spec.min_survivors = task.secure->min_survivors;
    spec.layout = task.secure->layout->shapes();
    transport::SecureSpecToProto(spec, out.mutable_secure());
  }
  return out;
}

grpc::ServerUnaryReactor* CoordinatorService::GetTask(
    grpc::CallbackServerContext* context, const v1::GetTaskRequest* request,
    v1::GetTaskResponse* response) {
  absl::Status status = CheckIdentity(context, request->device_id());
  if (!status.ok()) return Finish(context, "GetTask", status);
  // Request and response live until the reactor finishes.
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  task_workers_->Schedule([this, reactor, request, response] {
    Answer(reactor, "GetTask", DoGetTask(*request, response));
  });
  return reactor;
}

absl::Status CoordinatorService::DoGetTask(const v1::GetTaskRequest& request,
                                           v1::GetTaskResponse* response) {
  absl::Status status =
      engine_->CheckSession(request.device_id(), request.session_id());
  if (status.ok()) {
    absl::StatusOr<Task> task =
        engine_->GetTask(request.device_id(), options_.clock());
    if (task.ok()) {
      *response->mutable_task() = TaskToProto(
          *task, engine_options_, options_.base_digest, options_.chunk_bytes);
      // One upload per task, from this device only, no larger than twice
      // its payload (the update has the payload's tensors; any codec
      // but float32 is smaller) plus headers.
      absl::StatusOr<transport::TransferStore::Offered> payload =
          store_->Find(task->payload_id);
      const int64_t payload_bytes =
          payload.ok() ? payload->info.total_bytes : 0;
      // Under secure aggregation the update is the masked vector, of
      // exactly its length in words.
      const int64_t upload_bytes = task->secure
                                       ? 4 * task->secure->parameters.length
                                       : 2 * payload_bytes + (1 << 20);
      store_->ExpectUpload(response->task().upload_transfer_id(), upload_bytes,
                           request.device_id());
      if (payload.ok()) {
        response->mutable_task()->set_payload_sha256(payload->info.sha256);
        if (absl::Status s = OfferDelta(*task, payload->info.sha256,
                                        response->mutable_task());
            !s.ok()) {
          // The whole payload still serves: the device downloads it.
          LOG(ERROR) << "compressed download of round " << task->round
                     << " not offered: " << s;
        }
      }
    } else if (absl::IsUnavailable(task.status())) {
      response->set_retry_after_ms(options_.retry_after_ms);
      response->set_reason(std::string(task.status().message()));
    } else if (absl::IsNotFound(task.status()) ||
               absl::IsOutOfRange(task.status()) ||
               absl::IsFailedPrecondition(task.status())) {
      status = task.status();
    } else {
      // The coordinator's own failure, whatever code it came with.
      LOG(ERROR) << "task of device " << request.device_id()
                 << " not built: " << task.status();
      status = absl::InternalError(
          absl::StrCat("the coordinator could not build this device's task: ",
                       task.status().message()));
    }
  }
  return status;
}

absl::Status CoordinatorService::OfferDelta(const Task& task,
                                            const std::string& payload_sha256,
                                            v1::Task* out) {
  // With compressed downloads (dense mode only, EngineOptions::Validate),
  // only unpruned payloads have digests worth remembering: the delta's
  // base is the previous version's such payload.
  if (engine_options_.download_codec == "float32" || task.combined_ratio != 0) {
    return absl::OkStatus();
  }
  std::string base_sha256;
  {
    absl::MutexLock lock(&delta_mu_);
    full_digests_[task.model_version] = payload_sha256;
    while (full_digests_.size() > 2) full_digests_.erase(full_digests_.begin());
    auto base = full_digests_.find(task.model_version - 1);
    // No device got the previous version here (a restart): none holds it.
    if (task.delta == nullptr || base == full_digests_.end()) {
      return absl::OkStatus();
    }
    base_sha256 = base->second;
  }
  // "round-N.A/...": withdrawn with the round's other payloads.
  const std::string id =
      absl::StrCat(task.payload_id.substr(0, task.payload_id.find('/') + 1),
                   "delta-", task.model_version);
  if (!store_->Find(id).ok()) {
    auto source = std::make_shared<transport::StringSource>(*task.delta);
    absl::StatusOr<transport::TransferInfo> info = transport::DescribePayload(
        *source, id, source->size(), transport::PayloadFormat::kEncodedUpdate);
    if (!info.ok()) return info.status();
    // Two devices may describe it at once; either offer serves.
    store_->Offer(*info, std::move(source));
  }
  out->set_delta_transfer_id(id);
  out->set_delta_base_sha256(base_sha256);
  return absl::OkStatus();
}

absl::Status CoordinatorService::DoSubmit(const v1::UpdateReport& report) {
  // Upload ids are "<payload id>/update" and payload ids name the device:
  // a device can only submit what was uploaded under its own name.
  if (!absl::StrContains(report.upload_transfer_id(),
                         absl::StrCat("/", report.device_id(), "/"))) {
    return absl::PermissionDeniedError(
        absl::StrCat("upload '", report.upload_transfer_id(),
                     "' does not belong to device ", report.device_id()));
  }
  // The report's standing first: a stale or repeated report is refused
  // without touching the upload it names. The upload is dropped only once
  // its update is accepted.
  if (absl::Status s = engine_->CheckSubmission(report.device_id(),
                                                report.round(), report.nonce());
      !s.ok()) {
    return s;
  }
  Submission s;
  s.device_id = report.device_id();
  s.round = report.round();
  s.nonce = report.nonce();
  absl::StatusOr<NamedTensors> importance =
      transport::FromProto(report.importance());
  if (!importance.ok()) return importance.status();
  s.importance = std::move(*importance);
  // One budget of updates in hand at a time; the rest wait staged.
  absl::StatusOr<std::pair<int64_t, transport::TransferInfo>> progress =
      store_->UploadProgress(report.upload_transfer_id());
  if (!progress.ok()) return progress.status();
  const ByteBudget::Lease lease =
      decode_budget_.Acquire(progress->second.total_bytes);
  absl::StatusOr<std::shared_ptr<const transport::PayloadBytes>> bytes =
      store_->CompletedUpload(report.upload_transfer_id());
  if (!bytes.ok()) return bytes.status();
  // The wire size the coordinator itself received.
  const auto bytes_up = static_cast<int64_t>((*bytes)->view().size());
  if (engine_options_.secure.enabled) {
    // The masked vector; the engine refuses one of the wrong length (and
    // excludes its sender from the exchange).
    if (progress->second.format != transport::PayloadFormat::kMaskedWords) {
      return absl::InvalidArgumentError(
          "under secure aggregation an update is a masked vector "
          "(PAYLOAD_FORMAT_MASKED_WORDS)");
    }
    const absl::string_view view = (*bytes)->view();
    absl::StatusOr<std::vector<uint32_t>> words =
        transport::WordsFromBytes(view, static_cast<int64_t>(view.size() / 4));
    bytes->reset();
    if (!words.ok()) return words.status();
    s.masked = *std::move(words);
    s.change_norm = report.change_norm();
  } else {
    const transport::CodecOptions codec = UploadCodec(engine_options_);
    absl::StatusOr<NamedTensors> update =
        transport::DecodeUpdate(**bytes, options_.decode_limits, &codec);
    // Decoded: a staged upload's mapping goes now, not after the fold.
    bytes->reset();
    if (!update.ok()) return update.status();
    s.update = std::move(*update);
    s.carries_change = transport::CarriesChange(codec.codec);
  }
  s.num_examples = report.num_examples();
  s.loss_before = report.loss_before();
  s.loss_after = report.loss_after();
  s.split_steps = report.split_steps();
  s.timings = TimingsFromProto(report.timings());
  s.timings.bytes_up = bytes_up;
  absl::Status accepted = engine_->Submit(s, options_.clock());
  if (accepted.ok()) store_->DropUpload(report.upload_transfer_id());
  return accepted;
}

grpc::ServerUnaryReactor* CoordinatorService::SubmitUpdate(
    grpc::CallbackServerContext* context,
    const v1::SubmitUpdateRequest* request,
    v1::SubmitUpdateResponse* response) {
  const absl::Status identity =
      CheckIdentity(context, request->report().device_id());
  // Decoding, checking and folding on a worker; request and response live
  // until the reactor finishes.
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  update_workers_->Schedule([this, reactor, request, response, identity] {
    Answer(reactor, "SubmitUpdate",
           DoSubmitUpdate(*request, identity, response));
  });
  return reactor;
}

absl::Status CoordinatorService::DoSubmitUpdate(
    const v1::SubmitUpdateRequest& request, absl::Status status,
    v1::SubmitUpdateResponse* response) {
  if (status.ok()) status = DoSubmit(request.report());
  if (status.ok() && options_.on_update_accepted) options_.on_update_accepted();
  if (!status.ok()) {
    LOG(WARNING) << "update of device '"
                 << absl::CHexEscape(request.report().device_id())
                 << "' rejected: " << status;
    if (options_.on_update_refused) {
      options_.on_update_refused({options_.clock(),
                                  request.report().device_id(),
                                  request.report().round(), status});
    }
  }
  response->set_accepted(status.ok());
  return status;
}

grpc::ServerUnaryReactor* CoordinatorService::Heartbeat(
    grpc::CallbackServerContext* context, const v1::HeartbeatRequest* request,
    v1::HeartbeatResponse* response) {
  absl::Status status = CheckIdentity(context, request->device_id());
  if (status.ok()) {
    absl::StatusOr<bool> open =
        engine_->Heartbeat(request->device_id(), options_.clock());
    status = open.status();
    if (open.ok()) response->set_round_open(*open);
  }
  return Finish(context, "Heartbeat", status);
}

grpc::ServerUnaryReactor* CoordinatorService::DeclineTask(
    grpc::CallbackServerContext* context, const v1::DeclineTaskRequest* request,
    v1::DeclineTaskResponse*) {
  absl::Status status = CheckIdentity(context, request->device_id());
  if (status.ok()) {
    const std::string reason =
        request->reason() == v1::DECLINE_REASON_MEMORY_BUDGET
            ? absl::StrFormat("estimated peak %.0f MiB exceeds budget %.0f MiB",
                              request->estimated_bytes() / 1048576.0,
                              request->budget_bytes() / 1048576.0)
            : "unspecified";
    status = engine_->Decline(request->device_id(), request->round(),
                              request->nonce(), reason, options_.clock());
  }
  return Finish(context, "DeclineTask", status);
}

namespace {

v1::SecurePhase PhaseToProto(SecurePhase phase) {
  switch (phase) {
    case SecurePhase::kAdvertise:
      return v1::SECURE_PHASE_ADVERTISE;
    case SecurePhase::kShareKeys:
      return v1::SECURE_PHASE_SHARE_KEYS;
    case SecurePhase::kMaskedInput:
      return v1::SECURE_PHASE_MASKED_INPUT;
    case SecurePhase::kUnmask:
      return v1::SECURE_PHASE_UNMASK;
    case SecurePhase::kDone:
      return v1::SECURE_PHASE_DONE;
  }
  return v1::SECURE_PHASE_UNSPECIFIED;
}

absl::StatusOr<SecureRequest> SecureRequestFromProto(
    const v1::SecureRequest& proto) {
  SecureRequest request;
  request.device_id = proto.device_id();
  request.round = proto.round();
  request.nonce = proto.nonce();
  switch (proto.message_case()) {
    case v1::SecureRequest::kAdvertise: {
      absl::StatusOr<secagg::Advertisement> a =
          transport::AdvertisementFromProto(proto.advertise());
      if (!a.ok()) return a.status();
      request.advertise = *std::move(a);
      break;
    }
    case v1::SecureRequest::kShares: {
      absl::StatusOr<std::vector<secagg::SealedShares>> s =
          transport::SharesFromProto(proto.shares().shares());
      if (!s.ok()) return s.status();
      request.shares = *std::move(s);
      break;
    }
    case v1::SecureRequest::kUnmask: {
      absl::StatusOr<secagg::UnmaskShares> u =
          transport::UnmaskFromProto(proto.unmask());
      if (!u.ok()) return u.status();
      request.unmask = *std::move(u);
      break;
    }
    case v1::SecureRequest::MESSAGE_NOT_SET:
      break;
  }
  return request;
}

}  // namespace

grpc::ServerUnaryReactor* CoordinatorService::Secure(
    grpc::CallbackServerContext* context, const v1::SecureRequest* request,
    v1::SecureResponse* response) {
  absl::Status status = CheckIdentity(context, request->device_id());
  absl::StatusOr<SecureRequest> converted =
      status.ok() ? SecureRequestFromProto(*request) : status;
  absl::StatusOr<SecureReply> reply =
      converted.ok() ? engine_->Secure(*converted, options_.clock())
                     : converted.status();
  if (reply.ok()) {
    response->set_phase(PhaseToProto(reply->phase));
    for (const secagg::Advertisement& a : reply->advertisements) {
      transport::AdvertisementToProto(a, response->add_advertisements());
    }
    transport::SharesToProto(reply->shares, response->mutable_shares());
    for (int64_t s : reply->survivors) response->add_survivors(s);
  }
  return Finish(context, "Secure", reply.status());
}

}  // namespace fedge::coordinator
