// Child processes of the simulator: the coordinator, the clients and the
// pretraining run, each with its output in a log file.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include <sys/types.h>

namespace fedge::sim {

// Not thread-safe. Killed (SIGKILL) and reaped on destruction if still
// running.
class ChildProcess {
 public:
  // Starts argv[0] (a path) with `argv`, stdout and stderr appended to
  // `log_path`, or, if `log_path` is empty, inherited. Unavailable if it
  // cannot be started (the message names the program and the reason).
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(
      const std::vector<std::string>& argv, const std::string& log_path);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }

  // Waits until it exits or `timeout` passes. Returns its exit code (128 +
  // signal if killed by one); DeadlineExceeded on timeout (still running).
  absl::StatusOr<int> Wait(absl::Duration timeout = absl::InfiniteDuration());
  // Exited already? Does not block.
  bool Running();
  // Sends `signal` if it is still running.
  void Signal(int signal);

 private:
  ChildProcess(pid_t pid, std::string name)
      : pid_(pid), name_(std::move(name)) {}
  const pid_t pid_;
  const std::string name_;
  bool reaped_ = false;
  int exit_code_ = 0;
};

}  // namespace fedge::sim
