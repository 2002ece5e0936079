#include "transport/stream_watchdog.h"

#include <algorithm>

#include <glog/logging.h>

namespace fedge::transport {

StreamWatchdog::StreamWatchdog(absl::Duration idle_timeout,
                               absl::Duration period)
    : idle_timeout_(idle_timeout), period_(std::min(period, idle_timeout / 2)) {
  if (idle_timeout_ > absl::ZeroDuration() &&
      idle_timeout_ != absl::InfiniteDuration()) {
    thread_ = std::thread([this] { Loop(); });
  }
}

StreamWatchdog::~StreamWatchdog() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

int64_t StreamWatchdog::Watch(grpc::ServerContextBase* context) {
  absl::MutexLock lock(&mu_);
  const int64_t handle = next_++;
  calls_.emplace(handle, Entry{context, absl::Now()});
  return handle;
}

void StreamWatchdog::Touch(int64_t handle) {
  absl::MutexLock lock(&mu_);
  auto it = calls_.find(handle);
  if (it != calls_.end()) it->second.last = absl::Now();
}

void StreamWatchdog::Forget(int64_t handle) {
  absl::MutexLock lock(&mu_);
  calls_.erase(handle);
}

int64_t StreamWatchdog::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

int64_t StreamWatchdog::watched() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(calls_.size());
}

void StreamWatchdog::Loop() {
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&stop_), period_)) {
    const absl::Time now = absl::Now();
    for (auto& [handle, call] : calls_) {
      if (call.cancelled || now - call.last <= idle_timeout_) continue;
      // Under the lock: Forget (from OnDone, before the context is freed)
      // waits for us, so the context is alive here.
      call.context->TryCancel();
      call.cancelled = true;
      ++cancelled_;
      LOG(WARNING) << "stream " << call.context->peer() << " idle for "
                   << absl::FormatDuration(now - call.last) << "; cancelled";
    }
  }
}

}  // namespace fedge::transport
