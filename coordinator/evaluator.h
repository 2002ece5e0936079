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

#include "coordinator/engine_types.h"
#include "coordinator/global_model.h"
#include "model/dataset.h"
#include "model/trainer.h"
#include "task/spec.h"

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

  // Where a committed round's result is written (empty: not written).
  struct Export {
    // The model (model::SaveCheckpoint: the base with the global change
    // merged, pruned to the round's ratio, config.json stating the
    // per-block widths).
    std::string model_dir;
    // A SentencePiece tokenizer.model copied into model_dir (empty: none).
    std::string tokenizer_path;
    // LoRA mode, unpruned global model only: the global change as a PEFT
    // adapter for the unpruned base (WritePeftAdapter with `peft`). A
    // pruned model has no such adapter: the log says so.
    std::string adapter_dir;
    lora::PeftExportOptions peft;
  };

  // Queues a round; `evaluate` false only records it (no accuracy).
  // `state` is the engine's state after the round (its tensors are never
  // modified in place, so sharing them is safe). A committed round is also
  // written as `out` says; an export error is logged.
  void Submit(RoundRecord round, NamedTensors state, bool evaluate,
              Export out = {});
  // Blocks until every queued job is done.
  void Drain();

 private:
  struct Job {
    RoundRecord round;
    NamedTensors state;
    bool evaluate;
    Export out;
  };
  void Run();
  void WriteAdapter(const Job& job);

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

// What `round` writes into `run_dir`: nothing, unless it is the
// federation's last round and committed; then the merged, pruned model in
// model/ with the task's SentencePiece tokenizer beside it, and in LoRA mode
// adapter/, the PEFT adapter at the largest rank devices train, with the
// engine's LoRA alpha.
Evaluator::Export FinalExport(const RoundRecord& round,
                              const task::TaskSpec& task,
                              const EngineOptions& engine,
                              const std::string& run_dir);

}  // namespace fedge::coordinator
