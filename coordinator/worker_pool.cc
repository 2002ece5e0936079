#include "coordinator/worker_pool.h"

#include <utility>

#include "glog/logging.h"

namespace fedge::coordinator {

WorkerPool::WorkerPool(int threads) {
  CHECK_GE(threads, 1) << "a worker pool needs a thread";
  threads_.reserve(threads);
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
}

WorkerPool::~WorkerPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) t.join();
}

void WorkerPool::Schedule(absl::AnyInvocable<void() &&> work) {
  absl::MutexLock lock(&mu_);
  CHECK(!stopping_) << "work scheduled on a worker pool being destroyed";
  queue_.push_back(std::move(work));
}

int64_t WorkerPool::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(queue_.size());
}

void WorkerPool::Loop() {
  while (true) {
    absl::AnyInvocable<void() &&> work;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](WorkerPool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
            return p->stopping_ || !p->queue_.empty();
          },
          this));
      if (queue_.empty()) return;  // Stopping, and nothing left to run.
      work = std::move(queue_.front());
      queue_.pop_front();
    }
    std::move(work)();
  }
}

}  // namespace fedge::coordinator
