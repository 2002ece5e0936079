// A token bucket: how the coordinator bounds the rate of an RPC (e.g.
// registrations) so that a flood cannot crowd out honest devices.
#pragma once

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace fedge::coordinator {

// Thread-safe.
class RateLimiter {
 public:
  // `per_second` tokens a second, at most `burst` (>= 1) saved up; the
  // bucket starts full. per_second <= 0: every call is allowed.
  RateLimiter(double per_second, double burst);

  // Takes a token at `now` if there is one.
  bool Allow(absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const double per_second_;
  const double burst_;
  absl::Mutex mu_;
  double tokens_ ABSL_GUARDED_BY(mu_);
  absl::Time last_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace fedge::coordinator
