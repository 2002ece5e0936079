#include "coordinator/evaluator.h"

#include <chrono>

#include <glog/logging.h>

#include "model/checkpoint.h"

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
                       std::string export_dir) {
  absl::MutexLock lock(&mu_);
  jobs_.push_back(
      {std::move(round), std::move(state), evaluate, std::move(export_dir)});
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
    const bool write = !job.export_dir.empty();
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
        const absl::Status s =
            model.ok() ? model::SaveCheckpoint(**model, job.export_dir)
                       : model.status();
        if (!s.ok()) {
          LOG(ERROR) << "writing the model of round " << job.round.round
                     << " to " << job.export_dir << " failed: " << s;
        }
      }
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    done_(job.round, result, seconds);
    absl::MutexLock lock(&mu_);
    busy_ = false;
  }
}

}  // namespace fedge::coordinator
