#include "coordinator/server.h"

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include <glog/logging.h>
#include <grpcpp/grpcpp.h>

#include "coordinator/state_checkpoint.h"
#include "coordinator/tick_failures.h"
#include "coordinator/validation.h"
#include "model/block_cache.h"
#include "model/checkpoint.h"
#include "model/dataset.h"
#include "model/file_io.h"
#include "model/safetensors.h"
#include "model/threads.h"
#include "transport/file_sink.h"
#include "transport/sha256.h"
#include "transport/transfer.h"
#include "transport/update_codec.h"

namespace fedge::coordinator {

namespace {

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(
    const std::string& address, const std::string& what) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " '", address, "' is not host:port"));
  }
  return std::make_pair(address.substr(0, colon), port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    ServerConfig config) {
  auto server = std::unique_ptr<CoordinatorServer>(new CoordinatorServer());
  CoordinatorServer& s = *server;
  s.config_ = std::move(config);
  const ServerConfig& c = s.config_;
  if (absl::Status st = c.channel.Validate(); !st.ok()) return st;
  if (c.service.workers < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the service needs at least one worker, not ", c.service.workers));
  }

  absl::StatusOr<model::Model> base = LoadBase(c.task.base_dir);
  if (!base.ok()) return base.status();
  s.base_ = *base;
  task::TaskSpec spec = c.task;
  if (c.eval_examples > 0) spec.evaluation.examples = c.eval_examples;
  absl::StatusOr<std::unique_ptr<task::TaskData>> data =
      task::TaskData::Create(spec);
  if (!data.ok()) return data.status();
  if (absl::Status st = task::CheckModelFitsTask(**data, **base); !st.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("base ", c.task.base_dir, ": ", st.message()));
  }
  s.identity_ = (*data)->Identity();
  if (c.evaluate) {
    absl::StatusOr<model::Dataset> test = (*data)->Eval();
    if (!test.ok()) return test.status();
    s.test_ = *std::move(test);
    if (c.validation_examples > 0) {
      absl::StatusOr<model::Dataset> pub = (*data)->Public();
      if (!pub.ok()) {
        return absl::Status(
            pub.status().code(),
            absl::StrCat("validation data (--validation_examples; 0 does "
                         "without): ",
                         pub.status().message()));
      }
      s.validation_ = model::Head(*pub, c.validation_examples);
    }
  }

  // The base is served from memory as safetensors; its digest is the
  // devices' cache key and binds checkpoints to it.
  // Uploads only under the ids of tasks handed out (the service announces
  // each with its size bound and owner).
  // Large uploads wait on disk: each is kept until its update is accepted,
  // and dense ones are the size of the model.
  transport::UploadStaging staging;
  if (c.upload_staging_min_bytes >= 0) {
    staging.dir = c.upload_staging_dir.empty() ? c.run_dir + "/uploads"
                                               : c.upload_staging_dir;
    staging.min_bytes = c.upload_staging_min_bytes;
    std::error_code error;
    std::filesystem::create_directories(staging.dir, error);
    if (error) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create the upload staging directory ",
                       staging.dir, ": ", error.message()));
    }
  }
  const std::string staging_dir = staging.dir;
  s.store_ = std::make_unique<transport::TransferStore>(
      transport::AssemblerLimits(), /*expected_uploads_only=*/true,
      std::move(staging));
  // Served from the base's own tensors, not a copy (a base-sized saving):
  // nothing changes the base in place (GlobalModel's contract), and if
  // anything did, devices would see the digest fail, not wrong weights.
  absl::StatusOr<std::unique_ptr<transport::SafetensorsSource>> source =
      transport::SafetensorsSource::Create(
          s.base_->named_parameters(/*recurse=*/true));
  if (!source.ok()) return source.status();
  std::shared_ptr<const transport::PayloadSource> base_source =
      std::move(*source);
  // Dense mode with staging: the same bytes are served from a file in the
  // staging directory, so that the base's weights can go once the global
  // model holds them (version 0 is them; see below). The coordinator then
  // holds the model once, not twice. LoRA mode reads the base throughout.
  const bool base_on_disk =
      c.engine.mode == Mode::kDense && !staging_dir.empty();
  if (base_on_disk) {
    absl::StatusOr<std::unique_ptr<transport::PayloadSource>> staged =
        transport::StageOnDisk(*base_source, staging_dir);
    if (!staged.ok()) {
      return absl::Status(staged.status().code(),
                          absl::StrCat("staging the base model to serve it: ",
                                       staged.status().message()));
    }
    base_source = std::move(*staged);
  }
  absl::StatusOr<transport::TransferInfo> base_info =
      transport::DescribePayload(*base_source, c.service.base_transfer_id,
                                 base_source->size(),
                                 transport::PayloadFormat::kSafetensors);
  if (!base_info.ok()) return base_info.status();
  s.base_digest_ = transport::ToHex(base_info->sha256);
  s.store_->Offer(*base_info, base_source);

  absl::StatusOr<std::unique_ptr<GlobalModel>> global =
      CreateGlobalModel(s.base_, c.engine);
  if (!global.ok()) return global.status();
  if (base_on_disk) model::DropWeights(*s.base_);
  if (c.engine.download_codec != "float32") {
    // EngineOptions::Validate checked the name (and dense mode).
    transport::CodecOptions codec;
    codec.codec = *transport::ParseCodec(c.engine.download_codec);
    codec.zstd = c.engine.upload_zstd;
    if (absl::Status st = (*global)->SetDenseRounding(
            [codec](
                const NamedTensors& change) -> absl::StatusOr<RoundedChange> {
              absl::StatusOr<transport::EncodedPayload> encoded =
                  transport::EncodeUpdate(change, codec);
              if (!encoded.ok()) return encoded.status();
              // What a device decodes: the same function on the same bytes.
              absl::StatusOr<NamedTensors> decoded =
                  transport::DecodeUpdate(encoded->bytes);
              if (!decoded.ok()) return decoded.status();
              return RoundedChange{*std::move(decoded),
                                   std::make_shared<const std::string>(
                                       std::move(encoded->bytes))};
            });
        !st.ok()) {
      return st;
    }
  }
  DeclareMetrics(s.metrics_);
  EngineHooks hooks;
  hooks.validation_loss = ValidationLoss(&s.validation_);
  transport::TransferStore* store = s.store_.get();
  // Dense mode sends the same tensors (one slice per plan) to many
  // devices: they share one source and one digest (transport::TensorOffers).
  s.offers_ = std::make_unique<transport::TensorOffers>(
      /*share=*/c.engine.mode == Mode::kDense);
  transport::TensorOffers* offers = s.offers_.get();
  hooks.publish = [store, offers](const std::string& id,
                                  const NamedTensors& tensors) {
    absl::StatusOr<transport::TensorOffers::Offer> offer =
        offers->Make(id, tensors);
    CHECK(offer.ok()) << offer.status();  // Our own float tensors.
    store->Offer(offer->info, std::move(offer->source));
  };
  hooks.withdraw = [store](const std::string& id) { store->Withdraw(id); };
  hooks.on_round_closed = [&s](const RoundRecord& r, const EngineState& st) {
    return s.OnRoundClosed(r, st);
  };
  metrics::Registry* lock_metrics = &s.metrics_;
  hooks.lock_held = [lock_metrics](absl::string_view op, absl::Duration held) {
    lock_metrics->Observe("fedge_engine_lock_hold_seconds",
                          {{"op", std::string(op)}},
                          absl::ToDoubleSeconds(held));
  };
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(std::move(*global), c.engine, std::move(hooks));
  if (!engine.ok()) return engine.status();
  s.engine_ = std::move(*engine);

  const std::string checkpoint_dir = c.run_dir + "/checkpoint";
  absl::StatusOr<Checkpoint> checkpoint = LoadCheckpoint(checkpoint_dir);
  const bool have_checkpoint = checkpoint.ok();
  if (c.resume || (c.resume_if_present && have_checkpoint)) {
    if (!checkpoint.ok()) {
      return absl::Status(
          checkpoint.status().code(),
          absl::StrCat("--resume: ", checkpoint.status().message()));
    }
    if (checkpoint->base_digest != s.base_digest_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--resume: the checkpoint in ", checkpoint_dir,
          " was made with another base model (digest ", checkpoint->base_digest,
          ", this base ", s.base_digest_, ")"));
    }
    if (absl::Status st = s.engine_->Restore(checkpoint->state); !st.ok()) {
      return st;
    }
    LOG(INFO) << "resumed from " << CheckpointPath(checkpoint_dir)
              << " at round " << checkpoint->state.next_round;
  } else if (checkpoint.ok() || !absl::IsNotFound(checkpoint.status())) {
    return absl::FailedPreconditionError(
        absl::StrCat(c.run_dir,
                     " already holds a checkpoint: pass --resume to continue "
                     "that federation, or choose another --run_dir"));
  }
  absl::StatusOr<std::unique_ptr<RoundLog>> log =
      RoundLog::Open(c.run_dir, s.engine_->round(), &s.metrics_);
  if (!log.ok()) return log.status();
  s.log_ = std::move(*log);
  absl::StatusOr<std::unique_ptr<RefusalLog>> refusals =
      RefusalLog::Open(c.run_dir, &s.metrics_);
  if (!refusals.ok()) return refusals.status();
  s.refusals_ = std::move(*refusals);
  s.evaluator_ = std::make_unique<Evaluator>(
      s.base_.get(), c.engine.mode, &s.test_,
      [&s](const RoundRecord& r, const std::optional<model::EvalResult>& e,
           double seconds) { s.OnEvaluated(r, e, seconds); });

  ServiceOptions service = c.service;
  service.base_digest = s.base_digest_;
  service.task = s.identity_;
  service.model_config_json = s.base_->ConfigJson();
  service.chunk_bytes =
      std::min<int64_t>(service.chunk_bytes, c.channel.max_message_bytes / 2);
  service.require_peer_identity = c.tls.require_client_cert;
  service.on_update_accepted = [&s] { s.WakeTicker(); };
  service.on_update_refused = [&s](const Refusal& r) {
    s.refusals_->Record(r);
  };
  s.service_ = std::make_unique<CoordinatorService>(
      s.engine_.get(), s.store_.get(), c.engine, service, &s.metrics_);

  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      transport::ServerCredentials(c.tls);
  if (!credentials.ok()) return credentials.status();
  grpc::ServerBuilder builder;
  transport::ConfigureServer(c.channel, builder);
  builder.AddListeningPort(c.listen, *credentials, &s.port_);
  builder.RegisterService(s.service_.get());
  s.server_ = builder.BuildAndStart();
  if (s.server_ == nullptr || s.port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", c.listen, " (in use?)"));
  }
  if (!c.metrics_listen.empty()) {
    auto host_port = SplitHostPort(c.metrics_listen, "--metrics_listen");
    if (!host_port.ok()) return host_port.status();
    metrics::Registry* registry = &s.metrics_;
    auto http =
        metrics::HttpServer::Start(host_port->first, host_port->second,
                                   [registry] { return registry->Render(); });
    if (!http.ok()) return http.status();
    s.http_ = std::move(*http);
  }
  s.ticker_ = std::thread([&s] { s.TickLoop(); });
  return server;
}

CoordinatorServer::~CoordinatorServer() {
  Stop();
  if (ticker_.joinable()) ticker_.join();
  if (server_) server_->Shutdown(std::chrono::system_clock::now());
  evaluator_.reset();  // Finishes queued evaluations.
}

std::shared_ptr<grpc::Channel> CoordinatorServer::InProcessChannel() {
  return server_->InProcessChannel(
      transport::ClientChannelArguments(config_.channel));
}

void CoordinatorServer::TickLoop() {
  absl::Time last_trim = absl::Now();
  TickFailures failures(kMaxTickFailures, engine_->rounds_closed());
  while (!stop_) {
    // The tick first: woken by an update that completed its round, close
    // it now (trimming the heap can take tens of ms).
    const absl::Status tick = engine_->Tick(absl::Now());
    if (!tick.ok()) {
      metrics_.Increment("fedge_engine_errors_total");
      LOG(ERROR) << "round engine (failure " << failures.failures() + 1
                 << " of " << kMaxTickFailures
                 << " before the coordinator stops): " << tick;
    }
    if (std::optional<absl::Status> stop =
            failures.Record(tick, engine_->rounds_closed())) {
      std::fprintf(stderr, "fedge-coordinator: %s\n", stop->ToString().c_str());
      {
        absl::MutexLock lock(&failure_mu_);
        failure_ = *stop;
      }
      Stop();
      break;
    }
    // Issuing tasks and folding updates churn model-sized temporaries
    // between small long-lived allocations; without giving the freed pages
    // back, RSS grew by ~0.7 MB per device per round (bench/coordinator).
    // Still once a second: trimming only when a round closes spared dense
    // rounds a third of their page faults, but let 500 LoRA devices' round
    // peak at 903 MiB instead of 622 (docs/architecture.md, large
    // payloads). In dense mode only with the block cache, which keeps the
    // model-sized buffers rounds free and allocate again out of the heap:
    // trimming them away made each round's first update take several
    // times as long to decode and fold, faulting them in again, while the
    // others waited for the decode budget (docs/architecture.md).
    model::BlockCache* cache = model::InstalledBlockCache();
    if ((config_.engine.mode != Mode::kDense || cache != nullptr) &&
        absl::Now() - last_trim > absl::Seconds(1)) {
      model::ReleaseFreeHeap();
      last_trim = absl::Now();
    }
    if (cache != nullptr) {
      const model::BlockCacheStats blocks = cache->stats();
      metrics_.Set("fedge_tensor_cache_bytes", {{"state", "live"}},
                   static_cast<double>(blocks.live_bytes));
      metrics_.Set("fedge_tensor_cache_bytes", {{"state", "cached"}},
                   static_cast<double>(blocks.cached_bytes));
    }
    metrics_.Set("fedge_round", {}, static_cast<double>(engine_->round()));
    metrics_.Set("fedge_devices_registered", {},
                 static_cast<double>(engine_->registered()));
    if (engine_->finished()) break;
    absl::MutexLock lock(&wake_mu_);
    wake_mu_.AwaitWithTimeout(absl::Condition(&wake_), config_.tick);
    wake_ = false;
  }
}

void CoordinatorServer::WakeTicker() {
  absl::MutexLock lock(&wake_mu_);
  wake_ = true;
}

absl::Status CoordinatorServer::OnRoundClosed(const RoundRecord& round,
                                              const EngineState& state) {
  // The round's payloads and unfinished uploads are no longer needed.
  store_->Withdraw(
      absl::StrCat("round-", round.round, ".", round.attempt, "/"));
  const ClientRecord* slowest = nullptr;
  for (const ClientRecord& c : round.clients) {
    if (c.status == "accepted" &&
        (slowest == nullptr || c.elapsed_s > slowest->elapsed_s)) {
      slowest = &c;
    }
  }
  if (!config_.quiet) {
    std::string line = absl::StrFormat(
        "round %d/%d%s: %d/%d updates (%d late, %d declined, %d dropped), "
        "%.1f s",
        round.round, config_.engine.rounds,
        round.committed ? "" : " (too few updates, retrying)", round.accepted,
        round.invited, round.stragglers, round.declined, round.dropped,
        round.round_s);
    if (slowest != nullptr) {
      const Timings& t = slowest->timings;
      absl::StrAppendFormat(
          &line, "; slowest %s (%s) %.1f s = down %.1f + train %.1f + up %.1f",
          slowest->device_id, slowest->link.empty() ? "?" : slowest->link,
          slowest->elapsed_s, t.download_s, t.train_s, t.upload_s);
    }
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }
  if (absl::Status s = log_->RecordRound(round); !s.ok()) return s;
  bool evaluate = false;
  if (round.committed) {
    ++committed_;
    evaluate = test_.size() > 0 && (committed_ % config_.eval_every == 0 ||
                                    round.round == config_.engine.rounds);
  }
  // The federation's result: the last round's model, merged and pruned, in
  // the Hugging Face layout with the task's tokenizer (docs/tasks.md).
  evaluator_->Submit(
      round, state.global, evaluate,
      FinalExport(round, config_.task, config_.engine, config_.run_dir));
  return SaveCheckpoint(
      config_.run_dir + "/checkpoint",
      {state, base_digest_,
       config_.engine.mode == Mode::kDense ? "dense" : "lora"});
}

void CoordinatorServer::OnEvaluated(
    const RoundRecord& round, const std::optional<model::EvalResult>& eval,
    double seconds) {
  if (eval && !config_.quiet) {
    if (eval->bits_per_byte > 0) {
      std::printf(
          "round %d: held-out %.4f bits per byte, loss %.4f, perplexity "
          "%.2f%s (%.1f s)\n",
          static_cast<int>(round.round), eval->bits_per_byte, eval->loss,
          eval->perplexity,
          eval->exact_match >= 0
              ? absl::StrFormat(", exact match %.1f%%", 100 * eval->exact_match)
                    .c_str()
              : "",
          seconds);
    } else {
      std::printf("round %d: global accuracy %.2f%%, test loss %.4f (%.1f s)\n",
                  static_cast<int>(round.round), 100.0 * eval->accuracy,
                  eval->loss, seconds);
    }
    std::fflush(stdout);
  }
  if (absl::Status s = log_->RecordEvaluation(round, eval, seconds); !s.ok()) {
    LOG(ERROR) << s;
  }
}

absl::Status CoordinatorServer::Wait() {
  while (!stop_ && !engine_->finished()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  evaluator_->Drain();
  if (!stop_)
    std::this_thread::sleep_for(absl::ToChronoMilliseconds(config_.linger));
  {
    absl::MutexLock lock(&failure_mu_);
    if (!failure_.ok()) return failure_;
  }
  return engine_->failure();
}

void CoordinatorServer::Stop() {
  stop_ = true;
  WakeTicker();
}

}  // namespace fedge::coordinator
