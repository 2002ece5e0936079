#include "client/device_probe.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include <torch/types.h>

#include <sys/resource.h>
#include <sys/utsname.h>

namespace fedge::client {
namespace {

int64_t MeminfoBytes(const std::string& key) {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    if (!absl::StartsWith(line, key + ":")) continue;
    std::vector<std::string> parts =
        absl::StrSplit(line, ' ', absl::SkipWhitespace());
    int64_t kib = 0;
    if (parts.size() >= 2 && absl::SimpleAtoi(parts[1], &kib)) {
      return kib * 1024;
    }
  }
  return 0;
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    for (const char* key : {"model name", "Model", "Hardware"}) {
      if (absl::StartsWith(line, key) && line.find(':') != std::string::npos) {
        return std::string(
            absl::StripAsciiWhitespace(line.substr(line.find(':') + 1)));
      }
    }
  }
  return "";
}

double MatmulGflops() {
  torch::NoGradGuard no_grad;
  const int64_t n = 256;
  const at::Tensor a = torch::randn({n, n});
  const at::Tensor b = torch::randn({n, n});
  at::Tensor c = torch::matmul(a, b);  // Warm-up.
  int iterations = 0;
  const auto start = std::chrono::steady_clock::now();
  double seconds = 0;
  while (seconds < 0.2) {
    c = torch::matmul(a, b);
    ++iterations;
    seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
  }
  return 2.0 * n * n * n * iterations / seconds / 1e9;
}

// A "Name:   123 kB" line of /proc/self/status, in bytes; -1 if absent.
int64_t StatusBytes(absl::string_view name) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (!absl::StartsWith(line, name)) continue;
    std::vector<std::string> parts =
        absl::StrSplit(line, ' ', absl::SkipWhitespace());
    int64_t kib = 0;
    if (parts.size() >= 2 && absl::SimpleAtoi(parts[1], &kib)) {
      return kib * 1024;
    }
  }
  return -1;
}

}  // namespace

DeviceProbe ProbeDevice(bool run_benchmark) {
  DeviceProbe probe;
  probe.cores = static_cast<int32_t>(sysconf(_SC_NPROCESSORS_ONLN));
  probe.memory_total_bytes = MeminfoBytes("MemTotal");
  probe.memory_available_bytes = MeminfoBytes("MemAvailable");
  utsname name{};
  if (uname(&name) == 0) probe.arch = name.machine;
  probe.cpu_model = CpuModel();
  if (run_benchmark) probe.benchmark_gflops = MatmulGflops();
  return probe;
}

int64_t RssBytes() { return std::max<int64_t>(0, StatusBytes("VmRSS:")); }

int64_t PeakRssBytes() {
  if (const int64_t peak = StatusBytes("VmHWM:"); peak >= 0) return peak;
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

void ResetPeakRss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
}

int64_t PredictedPeakBytes(int64_t resident, int64_t reusable,
                           int64_t training_bytes) {
  resident = std::max<int64_t>(0, resident);
  reusable = std::clamp<int64_t>(reusable, 0, resident);
  training_bytes = std::max<int64_t>(0, training_bytes);
  return std::max(resident, resident - reusable + training_bytes);
}

}  // namespace fedge::client
