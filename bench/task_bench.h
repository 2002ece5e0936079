// What the benchmarks share about the task they run on (--task, --task_set;
// task/task_flags.h): its model and its metric. Benchmarks only.
#pragma once

#include <cstdio>
#include <filesystem>
#include <string>

#include "bench/check.h"
#include "model/checkpoint.h"
#include "model/dataset.h"
#include "model/model.h"
#include "model/trainer.h"
#include "model/vit.h"
#include "task/spec.h"
#include "task/task_data.h"

namespace fedge::bench {

// The task's base checkpoint. Without one, the image task's benchmarks
// that do not need a trained model (codecs, aggregation) run on a freshly
// initialised default ViT, as they did before tasks, and say so on stderr;
// any other task without its base is an error.
inline model::Model TaskModel(const task::TaskSpec& spec) {
  if (std::filesystem::exists(spec.base_dir + "/config.json") ||
      spec.objective != task::Objective::kImageClassification) {
    return Check(model::LoadCheckpoint(spec.base_dir));
  }
  std::fprintf(stderr,
               "no base at %s: a freshly initialised default ViT stands in\n",
               spec.base_dir.c_str());
  return Check(model::CreateVit(model::VitConfig()));
}

// The task's metric of `model` on `held_out` as the benchmarks print it:
// accuracy in percent, the text metrics (bits per byte, ...) as they are.
inline double TaskMetric(model::ModelImpl& model,
                         const model::Dataset& held_out, task::Metric metric) {
  const double value =
      task::MetricValue(metric, Check(model::Evaluate(model, held_out)));
  return metric == task::Metric::kAccuracy ? 100 * value : value;
}

}  // namespace fedge::bench
