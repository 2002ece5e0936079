#include "coordinator/tick_failures.h"

#include "absl/strings/str_cat.h"

namespace fedge::coordinator {

std::optional<absl::Status> TickFailures::Record(const absl::Status& tick,
                                                 int64_t rounds_closed) {
  if (tick.ok()) {
    if (rounds_closed != closed_) failures_ = 0;  // A clean close.
    closed_ = rounds_closed;
    return std::nullopt;
  }
  closed_ = rounds_closed;
  if (++failures_ < max_) return std::nullopt;
  return absl::Status(tick.code(),
                      absl::StrCat("stopped after ", failures_,
                                   " failed engine ticks with no round closed "
                                   "cleanly between them; the last: ",
                                   tick.message()));
}

}  // namespace fedge::coordinator
