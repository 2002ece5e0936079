// The virtual clock's compute costs, measured once and then shared: named
// costs in CPU seconds (sim/virtual_clock.cc keeps one, the seconds per
// training FLOP on this machine), read from a file and appended to it, so
// that every run given the same file charges with the same numbers.
//
// Why: CPU time of the same work varies between runs and rounds on a
// shared machine by more than the differences a strategy comparison looks
// for (measured: a Pi 4's dense rank-4 round 13.77 s +- 0.94 s over 10
// rounds; the same sub-model timed as the least of 3 runs still ranged
// 1.66 to 2.27 CPU s across ranks and near-equal shapes). fedge-sim gives
// every strategy of an experiment one file.
//
// File format, one entry per line: KEY <tab> SECONDS.
#pragma once

#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace fedge::sim {

// CPU seconds of the calling thread. The virtual clock charges compute
// from this, not from wall time: on a shared machine the workers wait for
// a core, and wall time would charge that wait to the device (measured:
// the same device and arm took 13 to 27 charged seconds across rounds).
double ThreadCpuSeconds();

// Thread-safe.
class ComputeCostTable {
 public:
  // An in-memory table (nothing read or written) for an empty `path`;
  // otherwise the table in `path`, created if missing, appended to as
  // costs are measured. InvalidArgument naming the file and line for a
  // malformed line (no tab, a key twice, a cost that is not a finite
  // number >= 0); the file error if it cannot be opened.
  static absl::StatusOr<std::unique_ptr<ComputeCostTable>> Open(
      const std::string& path);
  ~ComputeCostTable();

  // The cost on record for `key`, if any.
  std::optional<double> Find(absl::string_view key) const;

  // The cost of `key`: the one on record, or `measured` (recorded, and
  // appended to the file) if there is none: the first to charge a key sets
  // it. `key` must hold no tab or newline. A failed append is reported on
  // stderr once; the cost is kept in memory.
  double Charge(absl::string_view key, double measured);

  size_t size() const;

 private:
  using Costs = std::map<std::string, double, std::less<>>;
  ComputeCostTable(std::string path, std::FILE* file, Costs costs);

  const std::string path_;
  mutable absl::Mutex mu_;
  std::FILE* file_ ABSL_GUARDED_BY(mu_);  // Owned; null: in memory only.
  Costs costs_ ABSL_GUARDED_BY(mu_);
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace fedge::sim
