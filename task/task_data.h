// The registry of task kinds: how each objective turns a TaskSpec into the
// data sets the rest of fedge trains and evaluates on. The coordinator,
// the client daemon, fedge-sim, fedge-vclock, fedge-pretrain and the
// benchmarks get their data only from here; a new kind of task is one class
// in task_data.cc and one line in TaskData::Create.
//
// - image_classification: the coordinator's public split is
//   `public_fraction` of the training images, evaluation uses the test
//   images, devices share the rest of the training images iid or by
//   label-Dirichlet.
// - causal_lm (records packed into windows) and instruction_tuning (one
//   window per JSONL record, the prompt masked): the held-out split is
//   `evaluation.fraction` of the records, the public split
//   `public_fraction` of them (or whole files: public_by file), devices
//   share the rest iid, Dirichlet over source files, by whole file
//   (by_file) or, for JSONL, by whole category (by_category).
//
// In production a device reads its own data (DeviceData); the shards are a
// simulation feature (fedge-sim, fedge-vclock, CI).
//
// Thread-compatible: one caller at a time.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

#include "model/dataset.h"
#include "model/model.h"
#include "model/trainer.h"
#include "task/spec.h"
#include "task/tokenizer.h"

namespace fedge::task {

// What a coordinator and its devices must agree on; sent at registration.
struct TaskIdentity {
  std::string name;
  std::string objective;         // ObjectiveName.
  std::string tokenizer_digest;  // Tokenizer::digest(); "" for images.
  int64_t sequence_length = 0;   // 0 for images.
};
// The identity of `spec` with `tokenizer` (null for image tasks): what
// TaskData::Identity returns, without loading anything.
TaskIdentity IdentityOf(const TaskSpec& spec, const Tokenizer* tokenizer);

// OK if `device` may join a coordinator running `coordinator`;
// FailedPrecondition naming every field that differs otherwise.
absl::Status CheckIdentity(const TaskIdentity& coordinator,
                           const TaskIdentity& device);

class TaskData {
 public:
  // Loads the task's tokenizer (text kinds). NotFound/InvalidArgument from
  // the tokenizer.
  static absl::StatusOr<std::unique_ptr<TaskData>> Create(TaskSpec spec);
  virtual ~TaskData() = default;

  const TaskSpec& spec() const { return spec_; }
  TaskIdentity Identity() const;
  // Null for image tasks.
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }

  // The coordinator's public split: the base's pretraining data, and where
  // pruning costs are measured.
  virtual absl::StatusOr<model::Dataset> Public() = 0;
  // Held-out evaluation data, at most `evaluation.examples` examples.
  virtual absl::StatusOr<model::Dataset> Eval() = 0;
  // Every device's data in a simulated federation of `count` devices.
  // InvalidArgument if count < 1 or the partition cannot serve that many.
  virtual absl::StatusOr<std::vector<model::Dataset>> Shards(int count) = 0;
  // One device's shard of `count`.
  virtual absl::StatusOr<model::Dataset> Shard(int index, int count);
  // A device's own data in the task's format (a file or directory).
  virtual absl::StatusOr<model::Dataset> DeviceData(
      const std::string& path) = 0;

 protected:
  TaskData(TaskSpec spec, std::unique_ptr<Tokenizer> tokenizer)
      : spec_(std::move(spec)), tokenizer_(std::move(tokenizer)) {}

 private:
  const TaskSpec spec_;
  const std::unique_ptr<Tokenizer> tokenizer_;
};

// OK if `model` can learn `data`'s task: the same objective, a vocabulary
// that holds every token id the tokenizer makes, a context at least the
// task's sequence length. InvalidArgument naming the mismatch otherwise.
absl::Status CheckModelFitsTask(const TaskData& data,
                                const model::ModelImpl& model);

// The value of `metric` in an evaluation's result.
double MetricValue(Metric metric, const model::EvalResult& result);

// The text of a text task's public split, records separated by newlines:
// what fedge-pretrain trains the task's tokenizer on before the tokenizer
// exists. InvalidArgument for an image task; the corpus's read errors.
absl::StatusOr<std::string> PublicText(const TaskSpec& spec);

}  // namespace fedge::task
