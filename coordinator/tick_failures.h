// The coordinator's decision on failed engine ticks (a commit or a
// checkpoint write that failed): retry, then stop. The engine retries a
// failed commit at the next Tick, and the next round's close writes a
// fresh checkpoint; `max` failures with no round closed cleanly between
// them stop the coordinator with the last error, because a coordinator
// that cannot checkpoint would lose its rounds to the next crash.
//
// Not thread-safe (the server's ticker thread owns it).
#pragma once

#include <cstdint>
#include <optional>

#include "absl/status/status.h"

namespace fedge::coordinator {

class TickFailures {
 public:
  // `max` >= 1; `rounds_closed` is the engine's count at the start.
  TickFailures(int max, int64_t rounds_closed)
      : max_(max), closed_(rounds_closed) {}

  // One Tick's outcome, with the engine's rounds_closed() after it. The
  // error to stop with once `max` failures came with no clean close
  // between them (its message says so); nullopt to go on.
  std::optional<absl::Status> Record(const absl::Status& tick,
                                     int64_t rounds_closed);

  int failures() const { return failures_; }

 private:
  const int max_;
  int64_t closed_;
  int failures_ = 0;
};

}  // namespace fedge::coordinator
