// A running coordinator: the engine over its base model, the gRPC service,
// the ticker that opens and closes rounds, the evaluator, the checkpoint
// written after every round, the CSV logs and the /metrics endpoint. What
// `fedge-coordinator` runs, and what integration tests start in-process.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

#include "coordinator/engine.h"
#include "coordinator/evaluator.h"
#include "coordinator/records.h"
#include "coordinator/service.h"
#include "metrics/http_server.h"
#include "metrics/registry.h"
#include "task/spec.h"
#include "task/task_data.h"
#include "transport/channel_options.h"
#include "transport/tensor_offers.h"

namespace fedge::coordinator {

struct ServerConfig {
  // What the federation learns: the base (task.base_dir), the held-out data
  // the global model is evaluated on and the public split pruning costs are
  // measured on (task/task_data.h), and the identity devices must match.
  task::TaskSpec task = task::FashionMnistTask();
  bool evaluate = true;       // false: no evaluation data is read.
  int64_t eval_examples = 0;  // 0: the task's evaluation.examples.
  int64_t eval_every = 1;     // Evaluate every N committed rounds (and last).
  // Examples of the task's public split (which no device holds) that
  // measure what pruning costs the global model; 0 or !evaluate: not
  // measured.
  int64_t validation_examples = 256;
  std::string run_dir = "runs/coordinator";  // CSVs and the checkpoint.
  // Where uploads of at least upload_staging_min_bytes wait for their
  // submission (unnamed files; transport::UploadStaging). Empty:
  // run_dir/uploads. Dense mode serves the base from an unnamed file there
  // as well. A negative minimum keeps every upload, and the base, in
  // memory.
  std::string upload_staging_dir;
  int64_t upload_staging_min_bytes = 1 << 20;
  bool resume = false;             // Require a checkpoint and continue it.
  bool resume_if_present = false;  // Continue one if there is, else start.
  std::string listen = "127.0.0.1:7070";  // Port 0 picks a free port.
  transport::TlsFiles tls;                // Empty: insecure (dev mode).
  transport::ChannelOptions channel;
  std::string metrics_listen;  // "host:port"; empty: no /metrics endpoint.
  absl::Duration tick = absl::Milliseconds(100);
  bool quiet = false;  // No progress lines on stdout.
  // After the last round, keep answering this long so polling devices
  // learn that the federation finished (GetTask: OUT_OF_RANGE).
  absl::Duration linger = absl::Seconds(3);
  EngineOptions engine;
  ServiceOptions service;
};

// Thread-safe.
class CoordinatorServer {
 public:
  // Loads the base, restores the checkpoint (--resume) and starts serving.
  // NotFound/InvalidArgument/FailedPrecondition with what is wrong: a
  // missing base, a checkpoint present without --resume (or absent with
  // it), a checkpoint of another base, an address in use.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(
      ServerConfig config);
  ~CoordinatorServer();  // Stop()s.

  int port() const { return port_; }
  int metrics_port() const { return http_ ? http_->port() : 0; }
  Engine& engine() { return *engine_; }
  metrics::Registry& metrics() { return metrics_; }
  const std::string& base_digest() const { return base_digest_; }
  std::shared_ptr<grpc::Channel> InProcessChannel();

  // Blocks until every round is done (or the federation failed, or Stop()
  // was called) and evaluations are written. Returns the engine's failure,
  // or the error that stopped the coordinator (kMaxTickFailures).
  absl::Status Wait();

  // A failed Tick (a commit or a checkpoint write) is counted
  // (fedge_engine_errors_total) and logged; this many with no round closed
  // cleanly between them stop the coordinator (coordinator/tick_failures.h).
  static constexpr int kMaxTickFailures = 3;
  // Stops serving; safe from any thread, idempotent.
  void Stop();

 private:
  CoordinatorServer() = default;
  // Ticks the engine every config_.tick, and at once when woken.
  void TickLoop();
  // Has the ticker tick now (an update may have completed its round).
  void WakeTicker();
  absl::Status OnRoundClosed(const RoundRecord& round,
                             const EngineState& state);
  void OnEvaluated(const RoundRecord& round,
                   const std::optional<model::EvalResult>& eval,
                   double seconds);

  ServerConfig config_;
  metrics::Registry metrics_;
  // Dense mode with upload staging: its structure only once the global
  // model holds its weights (served from a staged file, see Start).
  model::Model base_;
  model::Dataset test_;
  model::Dataset validation_;
  std::string base_digest_;
  task::TaskIdentity identity_;
  std::unique_ptr<transport::TransferStore> store_;
  std::unique_ptr<transport::TensorOffers> offers_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<CoordinatorService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<RoundLog> log_;         // Used by the evaluator thread only.
  std::unique_ptr<RefusalLog> refusals_;  // Thread-safe.
  std::unique_ptr<Evaluator> evaluator_;
  std::unique_ptr<metrics::HttpServer> http_;
  int port_ = 0;
  int64_t committed_ = 0;  // On the ticker thread (the hook).
  absl::Mutex failure_mu_;
  absl::Status failure_ ABSL_GUARDED_BY(failure_mu_);
  std::atomic<bool> stop_{false};
  absl::Mutex wake_mu_;
  bool wake_ ABSL_GUARDED_BY(wake_mu_) = false;
  std::thread ticker_;
};

}  // namespace fedge::coordinator
