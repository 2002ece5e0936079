// --task and --task_set, defined once for every program that runs a task
// (fedge-coordinator, fedge-client, fedge-sim, fedge-vclock, fedge-pretrain,
// fedge-generate and the benchmarks), so that what a federation learns is
// said in one way everywhere: a task file, and named changes to it. The
// data flags each binary once had (--data_dir, --alpha, --partition,
// --public_fraction, --data_seed, --base_dir) are the task's fields now:
// --task_set=simulation.alpha=0.1 is what --alpha=0.1 was.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

#include "task/spec.h"

namespace fedge::task {

// The task the flags name (ResolveTask(--task, --task_set)), with its
// errors.
absl::StatusOr<TaskSpec> TaskFromFlags();

// The same flags as arguments for a child process that must run the same
// task ("--task=...", "--task_set=..."; none that are unset).
std::vector<std::string> TaskFlagArguments();

}  // namespace fedge::task
