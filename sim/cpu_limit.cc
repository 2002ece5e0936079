#include "sim/cpu_limit.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace fedge::sim {
namespace {

constexpr int64_t kPeriodUs = 100000;

absl::Status WriteValue(const std::string& path, const std::string& value) {
  std::ofstream out(path);
  out << value;
  out.flush();
  if (!out) {
    return absl::UnavailableError(absl::StrCat(
        "cannot write '", value, "' to ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<CpuLimit>> CpuLimit::Create(
    const std::string& name, double cores) {
  if (!(cores > 0) || !std::isfinite(cores)) {
    return absl::InvalidArgumentError("cpu limit: cores must be > 0");
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '_') {
      return absl::InvalidArgumentError(
          absl::StrCat("cpu limit: bad cgroup name \"", name, "\""));
    }
  }
  const int64_t quota =
      std::max<int64_t>(1000, std::llround(cores * kPeriodUs));
  namespace fs = std::filesystem;
  std::error_code error;
  // cgroup v1: the cpu controller's own hierarchy.
  if (fs::exists("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")) {
    const std::string path = "/sys/fs/cgroup/cpu/" + name;
    fs::create_directories(path, error);
    if (error) {
      return absl::UnavailableError(
          absl::StrCat("cannot create ", path, ": ", error.message()));
    }
    std::unique_ptr<CpuLimit> limit(
        new CpuLimit(path, "cgroup v1 cpu.cfs_quota_us"));
    if (absl::Status s =
            WriteValue(path + "/cpu.cfs_period_us", std::to_string(kPeriodUs));
        !s.ok()) {
      return s;
    }
    if (absl::Status s =
            WriteValue(path + "/cpu.cfs_quota_us", std::to_string(quota));
        !s.ok()) {
      return s;
    }
    return limit;
  }
  // cgroup v2: a child of the root with the cpu controller enabled.
  if (fs::exists("/sys/fs/cgroup/cgroup.controllers")) {
    (void)WriteValue("/sys/fs/cgroup/cgroup.subtree_control", "+cpu");
    const std::string path = "/sys/fs/cgroup/" + name;
    fs::create_directories(path, error);
    if (error || !fs::exists(path + "/cpu.max")) {
      return absl::UnavailableError(
          absl::StrCat("cannot create a cgroup v2 with cpu.max at ", path));
    }
    std::unique_ptr<CpuLimit> limit(new CpuLimit(path, "cgroup v2 cpu.max"));
    if (absl::Status s =
            WriteValue(path + "/cpu.max", absl::StrCat(quota, " ", kPeriodUs));
        !s.ok()) {
      return s;
    }
    return limit;
  }
  return absl::UnavailableError("no cgroup CPU controller at /sys/fs/cgroup");
}

void CpuLimit::RemoveStale(const std::string& prefix) {
  namespace fs = std::filesystem;
  for (const char* root : {"/sys/fs/cgroup/cpu", "/sys/fs/cgroup"}) {
    std::error_code error;
    for (const auto& entry : fs::directory_iterator(root, error)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind(prefix, 0) != 0) continue;
      const int pid = std::atoi(name.c_str() + prefix.size());
      if (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH) {
        ::rmdir(entry.path().c_str());
      }
    }
  }
}

CpuLimit::~CpuLimit() {
  // Fails while processes remain (the owner waits for them first).
  ::rmdir(path_.c_str());
}

absl::Status CpuLimit::Add(pid_t pid) {
  return WriteValue(path_ + "/cgroup.procs", std::to_string(pid));
}

}  // namespace fedge::sim
