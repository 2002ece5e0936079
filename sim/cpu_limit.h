// Caps the CPU time of processes with a cgroup, so a client process runs at
// a slower board's speed for real: cgroup v1's cpu.cfs_quota_us (under
// /sys/fs/cgroup/cpu) or cgroup v2's cpu.max. Needs write access to the
// cgroup tree (root on these machines).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"

#include <sys/types.h>

namespace fedge::sim {

// One cgroup; removed (after its processes are gone) on destruction.
// Thread-compatible.
class CpuLimit {
 public:
  // Creates cgroup `name` (letters, digits, '-', '_') allowing `cores` CPUs
  // of time (e.g. 0.25: a quarter of one core), with a 100 ms period.
  // Unavailable if no writable cgroup CPU controller is found (the caller
  // falls back and says so); InvalidArgument for cores <= 0 or a bad name.
  static absl::StatusOr<std::unique_ptr<CpuLimit>> Create(
      const std::string& name, double cores);
  ~CpuLimit();
  CpuLimit(const CpuLimit&) = delete;
  CpuLimit& operator=(const CpuLimit&) = delete;

  // Moves process `pid` (and its future threads) into the cgroup.
  absl::Status Add(pid_t pid);

  // Removes empty cgroups named "<prefix><pid>-..." whose process `pid` is
  // gone (left by a simulator that was killed). Best effort.
  static void RemoveStale(const std::string& prefix);

  const std::string& path() const { return path_; }
  // "cgroup v1 cpu.cfs_quota_us" or "cgroup v2 cpu.max".
  const std::string& mechanism() const { return mechanism_; }

 private:
  CpuLimit(std::string path, std::string mechanism)
      : path_(std::move(path)), mechanism_(std::move(mechanism)) {}
  const std::string path_;
  const std::string mechanism_;
};

}  // namespace fedge::sim
