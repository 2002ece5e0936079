#include "coordinator/rate_limiter.h"

#include <algorithm>

namespace fedge::coordinator {

RateLimiter::RateLimiter(double per_second, double burst)
    : per_second_(per_second), burst_(std::max(burst, 1.0)), tokens_(burst_) {}

bool RateLimiter::Allow(absl::Time now) {
  if (per_second_ <= 0) return true;
  absl::MutexLock lock(&mu_);
  if (last_ != absl::InfinitePast() && now > last_) {
    tokens_ = std::min(
        burst_, tokens_ + per_second_ * absl::ToDoubleSeconds(now - last_));
  }
  last_ = std::max(last_, now);
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

}  // namespace fedge::coordinator
