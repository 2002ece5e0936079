// What a client tells the coordinator about its hardware at registration.
#pragma once

#include <cstdint>
#include <string>

namespace fedge::client {

struct DeviceProbe {
  int32_t cores = 0;
  int64_t memory_total_bytes = 0;
  int64_t memory_available_bytes = 0;
  std::string arch;       // uname -m.
  std::string cpu_model;  // /proc/cpuinfo "model name" (or "Model" on ARM).
  double benchmark_gflops = 0;
};

// Reads /proc and uname, and times a short float32 matmul (about 0.2 s) with
// the LibTorch thread count in effect. Fields it cannot read stay zero or
// empty.
DeviceProbe ProbeDevice(bool run_benchmark = true);

// Resident set size of this process now (bytes): VmRSS, 0 if unreadable.
int64_t RssBytes();

// Peak resident set size of this process (bytes) since the start or the
// last ResetPeakRss(): VmHWM from /proc/self/status, else getrusage.
int64_t PeakRssBytes();

// Starts a new peak-RSS window (Linux: writes 5 to /proc/self/clear_refs),
// so a round's peak is its own and not the data loading's.
void ResetPeakRss();

// The peak resident size a round will reach, predicted before it trains:
// `training_bytes` (model::TrainingPeakBytes) on top of what is live now.
// `resident` is the RSS now and `reusable` the part of it that is freed
// memory the process kept (malloc's free heap, resident), which training's
// allocations take before the kernel's. Never below `resident`; negative
// inputs count as 0 and `reusable` at most as `resident`.
int64_t PredictedPeakBytes(int64_t resident, int64_t reusable,
                           int64_t training_bytes);

}  // namespace fedge::client
