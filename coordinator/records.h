// What a closed round leaves behind: rows in the run directory's CSVs and
// updates to the Prometheus metrics (documented in docs/metrics.md).
//
//   clients.csv: one row per device and round attempt (timings, bytes, arm,
//                losses, reward terms).
//   rounds.csv:  one row per round attempt (participation, round and
//                aggregation time, global accuracy when evaluated).
//   refusals.csv: one row per refused SubmitUpdate (device, round, status
//                code and message), as they happen.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

#include "coordinator/engine_types.h"
#include "metrics/csv.h"
#include "metrics/registry.h"
#include "model/trainer.h"

namespace fedge::coordinator {

// Declares every coordinator metric in `registry` (once).
void DeclareMetrics(metrics::Registry& registry);

// Not thread-safe; the coordinator calls it from one thread at a time.
class RoundLog {
 public:
  // Opens dir/clients.csv and dir/rounds.csv for appending, first dropping
  // rows of rounds >= `next_round` (a resumed run redoes those rounds).
  // `metrics` may be null.
  static absl::StatusOr<std::unique_ptr<RoundLog>> Open(
      const std::string& dir, int64_t next_round, metrics::Registry* metrics);

  // The clients.csv rows and metrics of a closed round.
  absl::Status RecordRound(const RoundRecord& round);
  // The rounds.csv row, with the evaluation if there was one; its
  // unix_time is `recorded` (a simulator's virtual clock passes its own).
  absl::Status RecordEvaluation(const RoundRecord& round,
                                const std::optional<model::EvalResult>& eval,
                                double eval_seconds,
                                absl::Time recorded = absl::Now());

  static const std::vector<std::string>& ClientColumns();
  static const std::vector<std::string>& RoundColumns();

 private:
  RoundLog(std::unique_ptr<metrics::CsvWriter> clients,
           std::unique_ptr<metrics::CsvWriter> rounds,
           metrics::Registry* metrics)
      : clients_(std::move(clients)),
        rounds_(std::move(rounds)),
        metrics_(metrics) {}

  std::unique_ptr<metrics::CsvWriter> clients_;
  std::unique_ptr<metrics::CsvWriter> rounds_;
  metrics::Registry* const metrics_;
};

// refusals.csv and fedge_updates_refused_total. Thread-safe: refusals
// arrive on gRPC callback threads.
class RefusalLog {
 public:
  // Opens dir/refusals.csv for appending (a resumed run keeps its rows).
  // `metrics` may be null.
  static absl::StatusOr<std::unique_ptr<RefusalLog>> Open(
      const std::string& dir, metrics::Registry* metrics);

  // One row and one count; a failed write is logged, never fatal.
  void Record(const Refusal& refusal) ABSL_LOCKS_EXCLUDED(mu_);

  static const std::vector<std::string>& Columns();

 private:
  RefusalLog(std::unique_ptr<metrics::CsvWriter> csv,
             metrics::Registry* metrics)
      : csv_(std::move(csv)), metrics_(metrics) {}

  absl::Mutex mu_;
  std::unique_ptr<metrics::CsvWriter> csv_ ABSL_GUARDED_BY(mu_);
  metrics::Registry* const metrics_;  // Thread-safe.
};

}  // namespace fedge::coordinator
