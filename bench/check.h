// Error handling for benchmark programs: a failed step ends the run with
// its status, prefixed by the program's name. Benchmarks only; fedge's
// libraries return statuses.
#pragma once

#include <errno.h>  // program_invocation_short_name (glibc).

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fedge::bench {

[[noreturn]] inline void Die(const absl::Status& status) {
  std::fprintf(stderr, "%s: %s\n", program_invocation_short_name,
               status.ToString().c_str());
  std::exit(1);
}

template <typename T>
T Check(absl::StatusOr<T> value) {
  if (!value.ok()) Die(value.status());
  return *std::move(value);
}

inline void Check(const absl::Status& status) {
  if (!status.ok()) Die(status);
}

}  // namespace fedge::bench
