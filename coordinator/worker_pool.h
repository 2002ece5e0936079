// A fixed set of threads that run scheduled work in the order it was
// scheduled: where the coordinator's gRPC handlers put what is heavy
// (building a task's payload, decoding and folding an update, a split
// step), so that gRPC's callback threads only read requests and send
// answers, and a slow task build never holds up a heartbeat or a chunk.
#pragma once

#include <cstdint>
#include <deque>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"

namespace fedge::coordinator {

// Thread-safe. Work runs on one of the pool's threads, never on the caller's.
class WorkerPool {
 public:
  // `threads` >= 1.
  explicit WorkerPool(int threads);
  // Runs everything already scheduled, then joins the threads. Schedule
  // must not be called during or after destruction.
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void Schedule(absl::AnyInvocable<void() &&> work) ABSL_LOCKS_EXCLUDED(mu_);

  // Work scheduled and not yet started.
  int64_t queued() const ABSL_LOCKS_EXCLUDED(mu_);
  int threads() const { return static_cast<int>(threads_.size()); }

 private:
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);

  mutable absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void() &&>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;  // Set in the constructor only.
};

}  // namespace fedge::coordinator
