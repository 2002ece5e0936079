// Evaluates the global model on the held-out test split on a thread of its
// own, so RPC handlers never wait for it, and writes the federation's
// result (the final global model, merged and pruned) the same way. Jobs run
// in submission order; each reports through a callback on the evaluator's
// thread.
#pragma once

#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

#include "coordinator/engine.h"
#include "coordinator/global_model.h"
#include "model/dataset.h"
#include "model/trainer.h"

namespace fedge::coordinator {

// Thread-safe.
class Evaluator {
 public:
  using Done = std::function<void(const RoundRecord&,
                                  const std::optional<model::EvalResult>&,
                                  double seconds)>;
  // `base` and `test` must outlive the evaluator and never change.
  Evaluator(const model::ModelImpl* base, Mode mode, const model::Dataset* test,
            Done done);
  ~Evaluator();  // Finishes queued jobs, then joins.

  // Queues a round; `evaluate` false only records it (no accuracy).
  // `state` is the engine's state after the round (its tensors are never
  // modified in place, so sharing them is safe). A non-empty `export_dir`
  // also writes that committed round's model there (model::SaveCheckpoint:
  // the base with the global change merged, pruned to the round's ratio,
  // config.json stating the per-block widths); an export error is logged.
  void Submit(RoundRecord round, NamedTensors state, bool evaluate,
              std::string export_dir = "");
  // Blocks until every queued job is done.
  void Drain();

 private:
  struct Job {
    RoundRecord round;
    NamedTensors state;
    bool evaluate;
    std::string export_dir;
  };
  void Run();

  const model::ModelImpl* const base_;
  const Mode mode_;
  const model::Dataset* const test_;
  const Done done_;
  absl::Mutex mu_;
  std::deque<Job> jobs_ ABSL_GUARDED_BY(mu_);
  bool busy_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace fedge::coordinator
