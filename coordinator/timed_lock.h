// A scoped exclusive lock that reports how long it held its mutex, so the
// engine's lock hold times can be watched (metrics, bench/coordinator)
// without a profiler.
#pragma once

#include <chrono>
#include <functional>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace fedge::coordinator {

// Told, after the mutex is released, which operation held it (`op`, a
// string literal) and for how long (steady clock). Called on the thread
// that held the lock; must be thread-safe and cheap.
using LockObserver = std::function<void(absl::string_view op, absl::Duration)>;

// Like absl::MutexLock. `observer` (may be null or empty) must outlive the
// lock.
class ABSL_SCOPED_LOCKABLE TimedLock {
 public:
  TimedLock(absl::Mutex* mu, const LockObserver* observer, const char* op)
      ABSL_EXCLUSIVE_LOCK_FUNCTION(mu)
      : mu_(mu),
        observer_(observer != nullptr && *observer ? observer : nullptr),
        op_(op) {
    mu_->Lock();
    if (observer_ != nullptr) start_ = std::chrono::steady_clock::now();
  }
  TimedLock(const TimedLock&) = delete;
  TimedLock& operator=(const TimedLock&) = delete;
  ~TimedLock() ABSL_UNLOCK_FUNCTION() {
    if (held_) Release();
  }

  // Unlocks before the end of the scope.
  void Release() ABSL_UNLOCK_FUNCTION() {
    held_ = false;
    if (observer_ == nullptr) {
      mu_->Unlock();
      return;
    }
    const auto end = std::chrono::steady_clock::now();
    mu_->Unlock();
    (*observer_)(op_, absl::FromChrono(end - start_));
  }

 private:
  absl::Mutex* const mu_;
  const LockObserver* const observer_;
  const char* const op_;
  bool held_ = true;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace fedge::coordinator
