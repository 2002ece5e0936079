#include "coordinator/evaluator.h"

#include <chrono>

#include <glog/logging.h>

#include "model/checkpoint.h"
#include "model/file_io.h"

namespace fedge::coordinator {

Evaluator::Evaluator(const model::ModelImpl* base, Mode mode,
                     const model::Dataset* test, Done done)
    : base_(base), mode_(mode), test_(test), done_(std::move(done)) {
  thread_ = std::thread([this] { Run(); });
}

Evaluator::~Evaluator() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void Evaluator::Submit(RoundRecord round, NamedTensors state, bool evaluate,
                       Export out) {
  absl::MutexLock lock(&mu_);
  jobs_.push_back(
      {std::move(round), std::move(state), evaluate, std::move(out)});
}

void Evaluator::Drain() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](Evaluator* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(e->mu_) {
        return e->jobs_.empty() && !e->busy_;
      },
      this));
}

void Evaluator::Run() {
  while (true) {
    Job job;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](Evaluator* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(e->mu_) {
            return !e->jobs_.empty() || e->stop_;
          },
          this));
      if (jobs_.empty()) return;  // Stopping with nothing left.
      job = std::move(jobs_.front());
      jobs_.pop_front();
      busy_ = true;
    }
    std::optional<model::EvalResult> result;
    const auto start = std::chrono::steady_clock::now();
    const bool write = !job.out.model_dir.empty();
    if ((job.evaluate || write) && job.round.committed) {
      absl::StatusOr<model::Model> model =
          MaterializeState(*base_, mode_, job.state, job.round.global_ratio);
      if (job.evaluate) {
        absl::StatusOr<model::EvalResult> eval =
            model.ok() ? model::Evaluate(**model, *test_)
                       : absl::StatusOr<model::EvalResult>(model.status());
        if (eval.ok()) {
          result = *eval;
        } else {
          LOG(ERROR) << "evaluation of round " << job.round.round
                     << " failed: " << eval.status();
        }
      }
      if (write) {
        absl::Status s = model.ok()
                             ? model::SaveCheckpoint(**model, job.out.model_dir)
                             : model.status();
        if (s.ok() && !job.out.tokenizer_path.empty()) {
          absl::StatusOr<std::string> bytes =
              model::ReadFile(job.out.tokenizer_path);
          s = bytes.ok() ? model::WriteFileAtomically(
                               job.out.model_dir + "/tokenizer.model", *bytes)
                         : bytes.status();
        }
        if (!s.ok()) {
          LOG(ERROR) << "writing the model of round " << job.round.round
                     << " to " << job.out.model_dir << " failed: " << s;
        }
      }
    }
    if (job.round.committed && !job.out.adapter_dir.empty() &&
        mode_ == Mode::kLora) {
      WriteAdapter(job);
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    done_(job.round, result, seconds);
    absl::MutexLock lock(&mu_);
    busy_ = false;
  }
}

Evaluator::Export FinalExport(const RoundRecord& round,
                              const task::TaskSpec& task,
                              const EngineOptions& engine,
                              const std::string& run_dir) {
  Evaluator::Export out;
  if (!round.committed || round.round != engine.rounds) return out;
  out.model_dir = run_dir + "/model";
  if (task.tokenizer.type == "sentencepiece") {
    out.tokenizer_path = task.tokenizer.model_path;
  }
  if (engine.mode != Mode::kLora) return out;
  out.adapter_dir = run_dir + "/adapter";
  out.peft.rank = engine.bandit.space.ranks.back();
  out.peft.alpha = engine.lora.alpha;
  out.peft.dropout = engine.lora.dropout;
  if (task::IsText(task.objective)) out.peft.task_type = "CAUSAL_LM";
  out.peft.base_model_name_or_path = task.base_dir;
  return out;
}

void Evaluator::WriteAdapter(const Job& job) {
  const std::string& dir = job.out.adapter_dir;
  if (job.round.global_ratio > 0) {
    LOG(INFO) << "no PEFT adapter in " << dir << ": the global model is "
              << "pruned to " << job.round.global_ratio << ", which an "
              << "adapter for the unpruned base cannot express (the merged, "
              << "pruned model is the result)";
    return;
  }
  absl::StatusOr<double> error = WritePeftAdapter(job.state, job.out.peft, dir);
  if (!error.ok()) {
    LOG(ERROR) << "writing the PEFT adapter of round " << job.round.round
               << " to " << dir << " failed: " << error.status();
    return;
  }
  LOG(INFO) << "PEFT adapter (rank " << job.out.peft.rank << ") written to "
            << dir << "; largest relative truncation error " << *error;
}

}  // namespace fedge::coordinator
