// Admits work by its size against a budget of bytes, so that the memory of
// work done at once stays bounded whatever the number of callers: the
// coordinator decodes, checks and folds dense updates (each costing a few
// times its size while in hand) one budget at a time, while the uploads
// that wait stay staged on disk.
#pragma once

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace fedge::coordinator {

// Thread-safe.
class ByteBudget {
 public:
  // `bytes` <= 0: no bound (Acquire never waits).
  explicit ByteBudget(int64_t bytes) : budget_(bytes) {}

  // Bytes held until destroyed (movable).
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept { *this = std::move(other); }
    Lease& operator=(Lease&& other) noexcept;
    ~Lease();

   private:
    friend class ByteBudget;
    Lease(ByteBudget* owner, int64_t bytes) : owner_(owner), bytes_(bytes) {}
    ByteBudget* owner_ = nullptr;
    int64_t bytes_ = 0;
  };

  // Waits until `bytes` fit beside the bytes held, or nothing is held (work
  // larger than the whole budget runs alone), and holds them. Negative
  // counts as 0.
  Lease Acquire(int64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);

  int64_t in_use() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Release(int64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);
  const int64_t budget_;
  mutable absl::Mutex mu_;
  int64_t in_use_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fedge::coordinator
