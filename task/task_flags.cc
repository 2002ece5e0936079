#include "task/task_flags.h"

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

ABSL_FLAG(std::string, task, "",
          "Task file (docs/tasks.md): the base model, objective, tokenizer, "
          "data, simulation split and evaluation; every process of a "
          "federation runs the same one. Empty: the built-in task, fedge's "
          "ViT on Fashion-MNIST (tasks/fashion-mnist.json).");
ABSL_FLAG(std::vector<std::string>, task_set, {},
          "Comma list of FIELD=VALUE changes to the task, checked as the "
          "file is: e.g. simulation.alpha=0.1,base=runs/base2 "
          "(docs/tasks.md lists the fields; VALUE is JSON, or a string).");

namespace fedge::task {

absl::StatusOr<TaskSpec> TaskFromFlags() {
  return ResolveTask(absl::GetFlag(FLAGS_task), absl::GetFlag(FLAGS_task_set));
}

std::vector<std::string> TaskFlagArguments() {
  std::vector<std::string> args;
  if (!absl::GetFlag(FLAGS_task).empty()) {
    args.push_back(absl::StrCat("--task=", absl::GetFlag(FLAGS_task)));
  }
  if (!absl::GetFlag(FLAGS_task_set).empty()) {
    args.push_back(absl::StrCat(
        "--task_set=", absl::StrJoin(absl::GetFlag(FLAGS_task_set), ",")));
  }
  return args;
}

}  // namespace fedge::task
