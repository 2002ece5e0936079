// The gRPC face of the coordinator: a thin adapter from fedge.v1.Coordinator
// to the Engine. Each handler converts the request, calls the engine with
// the current time, and converts the answer; transfers (Download, Upload,
// UploadStatus) come from transport::TransferService.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/time/time.h"

#include "coordinator/byte_budget.h"
#include "coordinator/engine.h"
#include "coordinator/rate_limiter.h"
#include "coordinator/worker_pool.h"
#include "metrics/registry.h"
#include "task/task_data.h"
#include "transport/transfer_service.h"
#include "transport/update_codec.h"

namespace fedge::coordinator {

struct ServiceOptions {
  std::string base_transfer_id = "base";
  std::string base_digest;        // SHA-256 hex of the base's weights.
  std::string model_config_json;  // The base's config.json.
  // The federation's task; Register refuses a device whose identity
  // differs (FAILED_PRECONDITION naming the fields).
  task::TaskIdentity task;
  int64_t heartbeat_interval_ms = 10000;
  int64_t chunk_bytes = transport::kDefaultChunkBytes;
  int64_t retry_after_ms = 1000;  // When a device has no task now.
  transport::DecodeLimits decode_limits;
  // With mutual TLS: the client certificate's common name must equal the
  // device id of every request, and of the task whose update an upload
  // carries (PERMISSION_DENIED otherwise).
  bool require_peer_identity = false;
  // Register calls beyond this rate (a second, with `registration_burst`
  // saved up) get RESOURCE_EXHAUSTED; clients retry with back-off. 0: no
  // limit.
  double max_registrations_per_s = 0;
  double registration_burst = 1000;
  // Download, Upload and Split streams with no message for this long are
  // cancelled (slow-loris peers); infinite: never.
  absl::Duration stream_idle_timeout = absl::InfiniteDuration();
  // Threads, off gRPC's callback threads, in each of two pools: one runs
  // GetTask (task builds; most calls are quick "retry later" answers), the
  // other SubmitUpdate (decoding, checks, folding, which wait on each
  // other) and split steps, so that polls never queue behind folds (>= 1).
  int workers = 4;
  // Uploaded bytes decoded, checked and folded at once (ByteBudget); a
  // submission beyond it waits, its upload staged. Bounds the memory of
  // dense updates, each a few times its size while in hand; LoRA updates
  // (kilobytes) never wait. <= 0: no bound.
  int64_t decode_budget_bytes = 64 << 20;
  std::function<absl::Time()> clock;  // Default absl::Now().
  // Called after each accepted update, outside the engine's lock: it may
  // have completed its round, which the next Engine::Tick closes (the
  // server wakes its ticker). Empty: nothing.
  std::function<void()> on_update_accepted;
  // Called for each refused SubmitUpdate, with what was refused and why
  // (the server writes refusals.csv and counts them). Empty: only a log
  // line.
  std::function<void(const Refusal&)> on_update_refused;
};

// The update codec every task of the federation names (Task.upload_*);
// SubmitUpdate refuses an update encoded otherwise.
transport::CodecOptions UploadCodec(const EngineOptions& engine);

// The proto form of an engine task (what GetTask sends): the task itself
// and what every task of the federation shares (LoRA and training
// settings, the codec), the base's digest and the transfer chunk size.
v1::Task TaskToProto(const Task& task, const EngineOptions& engine,
                     const std::string& base_digest, int64_t chunk_bytes);

// Thread-safe (the engine and store are). Register, Heartbeat and
// DeclineTask answer on gRPC's callback thread (bookkeeping under the
// engine's lock); GetTask, SubmitUpdate and split steps check the caller's
// identity there and run the rest on one of the service's worker pools,
// which answers. The gRPC server must be shut down before the service is
// destroyed (shutdown waits for the pool's answers).
class CoordinatorService : public transport::TransferService {
 public:
  // `engine`, `store` and `metrics` (optional) must outlive the service.
  CoordinatorService(Engine* engine, transport::TransferStore* store,
                     const EngineOptions& engine_options,
                     ServiceOptions options, metrics::Registry* metrics);

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* context,
                                     const v1::RegisterRequest* request,
                                     v1::RegisterResponse* response) override;
  grpc::ServerUnaryReactor* GetTask(grpc::CallbackServerContext* context,
                                    const v1::GetTaskRequest* request,
                                    v1::GetTaskResponse* response) override;
  grpc::ServerUnaryReactor* SubmitUpdate(
      grpc::CallbackServerContext* context,
      const v1::SubmitUpdateRequest* request,
      v1::SubmitUpdateResponse* response) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context,
                                      const v1::HeartbeatRequest* request,
                                      v1::HeartbeatResponse* response) override;
  grpc::ServerUnaryReactor* DeclineTask(
      grpc::CallbackServerContext* context,
      const v1::DeclineTaskRequest* request,
      v1::DeclineTaskResponse* response) override;
  // Split rounds: each step runs the coordinator's half of the device's
  // model (Engine::SplitStep) on the update pool; steps of one device are
  // sequential on its stream, devices run in parallel.
  grpc::ServerBidiReactor<v1::SplitMessage, v1::SplitMessage>* Split(
      grpc::CallbackServerContext* context) override;

  // Secure aggregation: one step of the device's exchange
  // (Engine::Secure), answered on gRPC's callback thread (the engine's
  // part is bookkeeping; unmasking runs in Tick).
  grpc::ServerUnaryReactor* Secure(grpc::CallbackServerContext* context,
                                   const v1::SecureRequest* request,
                                   v1::SecureResponse* response) override;
  // With require_peer_identity, only the device named by the client
  // certificate may upload its task's update.
  absl::Status AuthorizeUpload(grpc::CallbackServerContext* context,
                               const std::string& owner) const override;

 private:
  friend class SplitReactor;
  absl::Status CheckIdentity(grpc::CallbackServerContext* context,
                             const std::string& device_id) const;
  grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context,
                                   const char* method,
                                   const absl::Status& status);
  // Counts the answer and sends it (from any thread).
  void Answer(grpc::ServerUnaryReactor* reactor, const char* method,
              const absl::Status& status);
  // The work of GetTask and SubmitUpdate, on a worker. `identity`: the
  // result of the identity check the callback thread made.
  absl::Status DoGetTask(const v1::GetTaskRequest& request,
                         v1::GetTaskResponse* response);
  absl::Status DoSubmitUpdate(const v1::SubmitUpdateRequest& request,
                              absl::Status identity,
                              v1::SubmitUpdateResponse* response);
  absl::Status DoSubmit(const v1::UpdateReport& report);
  // Dense mode with compressed downloads: offers `task`'s delta (once per
  // round) and names it in `out`, if the previous version's unpruned
  // payload went to some device from here (its digest is the delta's
  // base). Records `payload_sha256` as this version's.
  absl::Status OfferDelta(const Task& task, const std::string& payload_sha256,
                          v1::Task* out) ABSL_LOCKS_EXCLUDED(delta_mu_);

  Engine* const engine_;                   // Not owned.
  transport::TransferStore* const store_;  // Not owned.
  const EngineOptions engine_options_;
  const ServiceOptions options_;
  metrics::Registry* const metrics_;  // Not owned; may be null.
  RateLimiter registrations_;
  ByteBudget decode_budget_;
  absl::Mutex delta_mu_;
  // Digest of the unpruned dense payload of the last two model versions
  // tasks were answered for.
  std::map<int64_t, std::string> full_digests_ ABSL_GUARDED_BY(delta_mu_);
  // Last: joined first.
  std::unique_ptr<WorkerPool> task_workers_;    // GetTask.
  std::unique_ptr<WorkerPool> update_workers_;  // SubmitUpdate, split steps.
};

}  // namespace fedge::coordinator
