// Per-step wall times of fedge::model::Train, from its progress callback
// (progress_every = 1), skipping the first `warmup` steps. Benchmarks only.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "model/trainer.h"

namespace fedge::bench {

class StepTimer {
 public:
  explicit StepTimer(int64_t warmup) : warmup_(warmup) {}

  // Makes `options` report every step to this timer, which must outlive
  // the training run.
  void Attach(model::TrainOptions& options) {
    options.progress_every = 1;
    last_ = std::chrono::steady_clock::now();
    options.on_progress = [this](const model::TrainProgress& p) {
      const auto now = std::chrono::steady_clock::now();
      if (p.step > warmup_) {
        step_ms.push_back(
            std::chrono::duration<double, std::milli>(now - last_).count());
      }
      last_ = now;
    };
  }

  std::vector<double> step_ms;  // In step order.

 private:
  const int64_t warmup_;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace fedge::bench
