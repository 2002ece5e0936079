// A federated-learning participant: the loop a fedge-client daemon runs on
// an edge board. It registers with the coordinator, keeps the base model in
// a local cache keyed by its digest (downloaded once, checked on every
// start), and each round downloads its task's payload, builds the
// physically pruned sub-model, fine-tunes it on the local data, and uploads
// the encoded update with its timings.
//
// Every RPC has a deadline; transient failures (UNAVAILABLE,
// DEADLINE_EXCEEDED, a broken stream) are retried with capped exponential
// back-off, and a transfer resumes where it broke. A round that cannot be
// finished is abandoned and the loop asks for the next task.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "client/coordinator_link.h"
#include "client/secure_exchange.h"
#include "fedge/v1/coordinator_service.pb.h"
#include "model/dataset.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "task/task_data.h"
#include "transport/update_codec.h"

namespace fedge::client {

struct ParticipantOptions {
  std::string device_id;
  // This device's task, sent at registration: a coordinator running another
  // task (name, objective, tokenizer, sequence length) refuses the device,
  // and the device refuses a coordinator whose identity differs.
  task::TaskIdentity task;
  std::string link;  // "ethernet", "wifi", "lte", "5g-sa" or "".
  std::string cache_dir = "cache";
  // The process may use at most this much memory (bytes; 0: no limit): a
  // task whose estimated peak (RSS before training plus
  // model::EstimateTrainingBytes) exceeds it is declined (DeclineTask) for
  // that round instead of risking the OOM killer.
  int64_t memory_budget_bytes = 0;
  // Memory a round freed stays with the process (malloc's arenas) while
  // rounds follow each other: giving it back and faulting it in again cost
  // a dense round ~20% of its time (docs/architecture.md). It goes back to
  // the system once the device has waited this long for a task, and at
  // once where a task would not fit the budget otherwise. Zero: before
  // every round.
  absl::Duration release_memory_after = absl::Seconds(10);
  absl::Duration rpc_deadline = absl::Seconds(30);
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(30);
  // Give up (return Unavailable) after this long without reaching the
  // coordinator.
  absl::Duration give_up_after = absl::Minutes(30);
  int64_t max_rounds = 0;  // Stop after this many submitted rounds; 0: all.
  bool run_benchmark = true;
  // Emulation only (simulators without cgroups): after each round's local
  // compute (build, train, encode) of t seconds, wait (slowdown - 1) * t,
  // heartbeating, before uploading, as a board this many times slower
  // would; the wait counts as training time in the report. 1: off.
  double compute_slowdown = 1.0;
  // Progress on stdout: none, human-readable lines, or one JSON object
  // per line (structured logs: {"device", "event", "round", ...}).
  enum class Progress { kNone, kText, kJson };
  Progress progress = Progress::kText;
};

// One round as the participant saw it.
struct RoundReport {
  int64_t round = 0;
  double prune_ratio = 0;
  int64_t rank = 0;
  double download_s = 0, build_s = 0, train_s = 0, encode_s = 0, upload_s = 0,
         total_s = 0;
  double dilation_s = 0;  // Of train_s: the compute_slowdown wait.
  int64_t bytes_down = 0, bytes_up = 0, raw_bytes_up = 0;
  // The whole payload's size (bytes_down is less with a compressed change,
  // Task.delta_transfer_id).
  int64_t raw_bytes_down = 0;
  bool delta_download = false;  // The payload was rebuilt from a change.
  // Split rounds: the Split stream's messages (during train_s), and the
  // steps applied on both sides.
  int64_t split_bytes_up = 0, split_bytes_down = 0, split_steps = 0;
  double split_s = 0;            // Of train_s: in the step exchanges.
  int64_t transfer_resumes = 0;  // Streams restarted after a broken link.
  int64_t examples = 0;
  double loss_before = 0, loss_after = 0;
  int64_t peak_rss_bytes = 0;
  // The round's predicted peak RSS (PredictedPeakBytes): what is live
  // before training plus model::EstimateTrainingBytes, the free heap kept
  // from earlier rounds counted as reused.
  int64_t estimated_peak_bytes = 0;
  // Secure aggregation: seconds the round waited after training for the
  // key exchange (which runs beside download and training), the
  // exchange's own waiting for its phases, and its messages both ways
  // (the masked vector is bytes_up).
  double secure_s = 0, secure_phase_wait_s = 0;
  int64_t secure_bytes_up = 0, secure_bytes_down = 0;
  bool declined = false;  // Over the memory budget; nothing trained.
  bool accepted = false;
};

// Not thread-safe except Stop().
class Participant {
 public:
  // `link` (GrpcCoordinatorLink in production) must outlive the
  // participant; `data` is the local shard.
  Participant(ParticipantOptions options, CoordinatorLink* link,
              model::Dataset data);

  // Runs until the federation finishes (OK), max_rounds are done (OK),
  // Stop() is called (Cancelled) or the coordinator stays unreachable past
  // give_up_after (Unavailable). Errors in a round abandon only that round.
  absl::Status Run();

  // Finishes the current phase and returns from Run(). Async-signal-safe.
  void Stop() { stop_ = true; }

  // Called after each round (tests, the simulator).
  std::function<void(const RoundReport&)> on_round;
  // Called with the round number of each task declined for memory.
  std::function<void(int64_t)> on_decline;
  // Called as each phase of a round starts: ("secure"), "download",
  // "build", "train", "encode", "upload", "submit", ("unmask") (fault
  // tests cut links here).
  std::function<void(int64_t round, const char* phase)> on_phase;

 private:
  absl::Status Register();
  absl::Status EnsureBase();
  // A round's work; a report with `declined` set when the task was over
  // the memory budget and the coordinator has been told.
  absl::StatusOr<RoundReport> RunRound(const v1::Task& task);
  absl::Status Decline(const v1::Task& task, int64_t estimated_bytes);
  // Secure aggregation: the trained `update`'s change from `sent`
  // (client::SecureChange in the task's layout), masked, as the upload's
  // bytes; its norm before clipping in `change_norm`.
  absl::StatusOr<std::string> MaskedChange(const v1::Task& task,
                                           SecureExchange& secure,
                                           const model::NamedTensors& update,
                                           const model::NamedTensors& sent,
                                           double* change_norm);
  // The round's starting tensors, with the download's figures in `report`:
  // rebuilt from the task's compressed change when this device holds that
  // change's base (dense mode), else downloaded whole.
  absl::StatusOr<model::NamedTensors> DownloadPayload(const v1::Task& task,
                                                      RoundReport& report);
  // held_ plus the task's change, checked against Task.payload_sha256.
  // FailedPrecondition when they do not fit or hash to something else.
  absl::StatusOr<model::NamedTensors> RebuildFromDelta(const v1::Task& task,
                                                       RoundReport& report);
  // Secure aggregation: the round's key exchange on a thread of its own,
  // beside the download and training (StartKeyExchange), awaited before
  // masking (AwaitKeys). Destroying it abandons the exchange and waits for
  // its thread, at most one RPC deadline.
  struct KeyExchange {
    std::unique_ptr<SecureExchange> exchange;
    std::atomic<bool> abandon{false};
    std::future<absl::Status> done;
    ~KeyExchange();
  };
  absl::StatusOr<std::unique_ptr<KeyExchange>> StartKeyExchange(
      const v1::Task& task);
  // Waits for the exchange (heartbeating), its wait in report.secure_s;
  // the exchange's error if it failed.
  absl::Status AwaitKeys(const v1::Task& task, KeyExchange& keys,
                         RoundReport& report);
  // Runs `rpc` with a fresh deadline (rpc_deadline from now) until it
  // succeeds, fails for good, or the give-up time passes; waits with capped
  // exponential back-off. Stops early (Cancelled) on Stop() or when
  // `abandon` (optional) is set. Thread-safe.
  absl::Status Retry(const char* what,
                     const std::function<absl::Status(absl::Time)>& rpc,
                     const std::atomic<bool>* abandon = nullptr);
  // Main thread only.
  void Heartbeat(int64_t round, const char* phase, double progress);
  // model::ReleaseFreeHeap, noted in heap_released_. Main thread only.
  void ReleaseHeap();
  // Sleeps for `duration`, or less if Stop() is called or `abandon`
  // (optional) is set meanwhile. Thread-safe.
  void Pause(absl::Duration duration,
             const std::atomic<bool>* abandon = nullptr) const;
  // One progress event: `text` for people, `event` with `round` and
  // `fields` as a JSON line for machines.
  void Say(absl::string_view event, int64_t round,
           const std::vector<std::pair<const char*, double>>& fields,
           const std::string& text) const;

  const ParticipantOptions options_;
  CoordinatorLink* const link_;  // Not owned.
  const model::Dataset data_;
  std::atomic<bool> stop_{false};

  v1::RegisterResponse registration_;
  // The cached base model's file, read slice by slice each round.
  std::unique_ptr<model::SafetensorsReader> base_;
  std::string cached_digest_;
  transport::ErrorFeedback feedback_;  // Top-k residual across rounds.
  // Dense mode: the last payload received and its digest
  // (Task.payload_sha256), the base of the next compressed change.
  struct Held {
    std::string sha256;
    model::NamedTensors tensors;
  };
  std::optional<Held> held_;
  absl::Time last_heartbeat_ = absl::InfinitePast();
  // Whether malloc's free heap went back to the kernel since training last
  // ran (or ever): then what it counts is not resident, and a round's
  // predicted peak takes none of it as reusable. Main thread only.
  bool heap_released_ = true;
};

}  // namespace fedge::client
